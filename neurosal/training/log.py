"""Training logs: one row per epoch as it ends (CSV or JSON lines, flushed and fsync'd so that a
log read during a run is whole), optionally mirrored as TensorBoard scalars.

May import: :mod:`neurosal.cost`, :mod:`neurosal.crossbar`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Optional

from ..cost import cost_report
from ..crossbar import analog_layers

__all__ = ["LOG_FIELDS", "log_epoch"]

LOG_FIELDS = ("epoch", "loss", "test_accuracy", "pulses", "energy_j", "seconds")


def log_epoch(path: Optional[Path], row: dict, net, ledger, seconds: float, writer=None, **cost) -> None:
    """Append one epoch's metrics to a CSV or JSONL log (cumulative pulses, training energy and
    seconds; ``cost``: the arguments of :func:`~neurosal.cost.cost_report`)."""
    pulses = sum(layer.crossbar.counters.pulses for layer in analog_layers(net))
    rec = dict(epoch=row["epoch"], loss=row["loss"], test_accuracy=row["test_accuracy"], pulses=int(pulses),
               energy_j=cost_report(ledger, **cost).energy_j, seconds=seconds)
    if writer is not None:
        for k in LOG_FIELDS[1:]:
            writer.add_scalar(f"train/{k}", rec[k], rec["epoch"])
        writer.flush()
    if path is None:
        return
    new = not path.exists() or path.stat().st_size == 0
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        if new:
            w.writerow(LOG_FIELDS)
        w.writerow([rec[k] for k in LOG_FIELDS])
        text = buf.getvalue()
    else:
        text = json.dumps(rec) + "\n"
    with open(path, "a", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
