r"""Accuracy over time after programming: the chip read at later times, as its conductances drift.

Every device follows its card's drift model, :math:`G(t) = G_{prog}\,((t - t_{prog})/t_0)^{-\nu}`
(:class:`~neurosal.devices.Drift`; :math:`\nu` per device when the card draws it). At each time
``t`` after programming (the chip's clock at the end of training plus ``t``) the test set is
read ``repeats`` times, each with its own read-noise draws: accuracy mean and standard
deviation.

**Global drift compensation** (``compensation='global'``, as aihwkit's
``GlobalDriftCompensation``): each analog layer reads a fixed calibration input (all ones)
right after programming and again at time ``t``; the ratio of the summed absolute outputs,
:math:`\alpha = \sum|y_0| / \sum|y_t|`, becomes a digital gain on that layer's outputs (one
number per layer, in the periphery). A drift that scales every conductance of a layer alike
is undone exactly (with no ADC in between); a spread of :math:`\nu` is not. The calibration
reads are chip reads.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.plots`, :mod:`neurosal.files`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from ..crossbar import analog_layers
from ..engine import evaluate
from ..files import savefig
from ..plots import _plt

__all__ = ["accuracy_over_time", "plot_drift", "COMPENSATIONS"]

COMPENSATIONS = ("none", "global")


def _calibration_read(layer) -> float:
    xb = layer.crossbar
    x = torch.ones(1, xb.rows, dtype=xb.dtype, device=xb.torch_device)
    with torch.no_grad():
        return float(xb.forward(x).abs().sum())


def accuracy_over_time(net, x: torch.Tensor, y: torch.Tensor, *, times: Sequence[float], repeats: int = 1,
                       compensation: str = "none", coding: str = "rate", steps: int = 1, seed: int = 0) -> dict:
    """Test accuracy at each of ``times`` (s after programming), mean and SD over ``repeats``
    read-noise draws, with or without global drift compensation. The chip's clock and gains
    are put back afterwards."""
    if compensation not in COMPENSATIONS:
        raise ValueError(f"compensation {compensation!r}: not allowed; allowed: {', '.join(COMPENSATIONS)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats {repeats!r}: not allowed; allowed: an integer >= 1")
    times = [float(t) for t in times]
    if not times or any(not (math.isfinite(t) and t >= 0) for t in times):
        raise ValueError(f"times {times}: not allowed; allowed: finite numbers of seconds >= 0")
    layers = analog_layers(net)
    start = [layer.crossbar.time for layer in layers]
    scales = [layer.weight_scale for layer in layers]
    ref = [_calibration_read(layer) for layer in layers] if compensation == "global" else None
    rows = []
    try:
        for t in times:
            for layer, t0 in zip(layers, start):
                layer.crossbar.time = t0 + t
            alphas = None
            if ref is not None:
                alphas = []
                for layer, s, r0 in zip(layers, scales, ref):
                    now = _calibration_read(layer)
                    a = r0 / now if now > 0 else 1.0
                    layer.weight_scale = s * a
                    alphas.append(a)
            accs = torch.tensor([evaluate(net, x, y, coding=coding, steps=steps, seed=seed + k)
                                 for k in range(repeats)], dtype=torch.float64)
            rows.append({"time_s": t, "accuracy": float(accs.mean()),
                         "sd": float(accs.std(unbiased=True)) if repeats > 1 else 0.0, "repeats": repeats,
                         "alphas": alphas})
            for layer, s in zip(layers, scales):
                layer.weight_scale = s
    finally:
        for layer, t0, s in zip(layers, start, scales):
            layer.crossbar.time = t0
            layer.weight_scale = s
    return {"compensation": compensation, "rows": rows}


def plot_drift(results: Sequence[dict], path, *, title: str = "") -> Path:
    """Accuracy against time after programming (log time axis), one line per result."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r, color in zip(results, ("tab:red", "tab:blue", "tab:green")):
        t = [max(row["time_s"], 1e-1) for row in r["rows"]]
        ax.errorbar(t, [row["accuracy"] for row in r["rows"]], yerr=[row["sd"] for row in r["rows"]], capsize=3,
                    marker="o", color=color, label=f"compensation: {r['compensation']}")
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel("test accuracy (mean ± SD over read-noise draws)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = savefig(fig, path, dpi=120)
    plt.close(fig)
    return out
