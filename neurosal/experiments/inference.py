"""``neurosal simulate``: run a network on dataset samples through the engine and record it.

Encoders by coding: ``rate`` -> direct analog input (T = 1), ``spike`` -> Bernoulli spikes,
``latency`` -> time to first spike. The run's full configuration, the network recipe,
the device card, the seed and the package versions go into the recording, so the file
alone says how to reproduce it.

May import: :mod:`neurosal.engine`, :mod:`neurosal.networks`, :mod:`neurosal.recording`,
:mod:`neurosal.datasets`, :mod:`neurosal.devices`, infrastructure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..datasets import load
from ..devices import load_device
from ..engine import VARIABLES, Probe, Simulator, encoder_for
from ..files import Owner, check_output
from ..networks import CODINGS, build, load_checkpoint, recipe_for
from ..progress import bar as progress_bar
from ..recording import Recorder

__all__ = ["simulate", "ENCODER_OF"]

ENCODER_OF = {"rate": "direct", "spike": "rate", "latency": "latency"}


def simulate(network: str, device: str, *, coding: str = "spike", steps: Optional[int] = None, samples: int = 100,
             dataset: str = "digits", data_dir: Optional[str | Path] = None, record: Sequence[str] = ("spikes",), out: Optional[str | Path] = None,
             record_samples: int = 16, checkpoint: Optional[str | Path] = None, overwrite: bool = False,
             seed: int = 0, batch: int = 256, chunk: int = 64, path: str = "auto", progress: bool = True,
             accelerator=None) -> dict:
    """Simulate ``samples`` test samples of ``dataset``; record the first ``record_samples``.

    Returns a summary dict (accuracy, spikes and events per sample per layer, timing).
    """
    if coding not in CODINGS:
        raise ValueError(f"unknown coding {coding!r}; allowed: {', '.join(CODINGS)}")
    bad = [v for v in record if v not in VARIABLES]
    if bad:
        raise ValueError(f"--record: unknown variable(s) {', '.join(bad)}; allowed: {', '.join(VARIABLES)}")
    for name, v in (("samples", samples), ("batch", batch), ("record_samples", record_samples), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} {v!r}: not allowed; allowed: an integer >= 1")
    owner = None
    if out is not None:                    # checked and owned before any work
        out = check_output(out, overwrite=overwrite)
        owner = Owner(out).acquire()
    try:
        return _simulate(network, device, coding=coding, steps=steps, samples=samples, dataset=dataset,
                         data_dir=data_dir, record=record, out=out, record_samples=record_samples,
                         checkpoint=checkpoint, overwrite=overwrite, seed=seed, batch=batch, chunk=chunk, path=path,
                         progress=progress, accelerator=accelerator, owner=owner)
    finally:
        if owner is not None:
            owner.release()


def _simulate(network, device, *, coding, steps, samples, dataset, data_dir, record, out, record_samples,
              checkpoint, overwrite, seed, batch, chunk, path, progress, accelerator, owner) -> dict:
    card = recipe_for(network, checkpoint)
    dev_card = load_device(device)
    data = load(dataset, data_dir=data_dir, seed=seed)
    n_in = data.features
    samples = min(samples, len(data.y_test))
    net = build(card, device=dev_card, coding=coding, seed=seed, steps=steps, input_shape=data.shape,
                classes=data.classes, accelerator=accelerator)
    where = next(net.parameters()).device
    if net.structure != "chain":
        raise ValueError(f"{card.name} is a {card.kind} network: the timestep simulator runs layer chains "
                         "(mlp recipes) in this version; train and evaluate it with `neurosal train`")
    if checkpoint is not None:
        load_checkpoint(net, checkpoint)
    T = net.meta["steps"]
    sim = Simulator(net, dt=card.dt, chunk=chunk, path=path)
    rec_n = min(record_samples, samples, batch)
    probes = []
    if record:
        spikes_vars = tuple(v for v in record if v == "spikes")
        if spikes_vars and coding != "rate":
            probes.append(Probe("input", ("spikes",), samples=range(rec_n)))
        for name in net.layer_names():
            probes.append(Probe(name, tuple(record), samples=range(rec_n)))
    recorder = None
    if out is not None:
        pops = {"input": n_in, **{layer.name: layer.n_out for layer in net.layers}}
        config = dict(network=network, device=device, coding=coding, steps=T, samples=samples, dataset=dataset,
                      data_dir=str(data_dir) if data_dir else None, record=list(record), record_samples=rec_n, checkpoint=str(checkpoint) if checkpoint else None,
                      seed=seed, batch=batch, chunk=chunk, path=path, encoder=ENCODER_OF[coding])
        recorder = Recorder(out, dt=card.dt, steps=T, populations=pops, samples=range(rec_n),
                            labels=data.y_test[:rec_n].tolist(), overwrite=overwrite, owner=owner,
                            metadata=dict(config=config, network=card.to_dict(), devices={"crossbar": dev_card.to_dict()},
                                          seed=seed, coding=coding, dataset=dataset,
                                          encoder=ENCODER_OF[coding]))
        if "spikes" in record and coding != "rate":
            recorder.declare_spikes(["input"] + net.layer_names())
    correct = 0
    totals: dict = {}
    t_start = time.perf_counter()
    try:
        with torch.no_grad(), progress_bar(samples, unit="sample", desc="simulate", disable=not progress) as bar:
            for b0 in range(0, samples, batch):
                b1 = min(samples, b0 + batch)
                x, y = data.x_test[b0:b1].to(where), data.y_test[b0:b1].to(where)
                enc = encoder_for(ENCODER_OF[coding], x, T, seed=seed + b0, p_max=card.p_max)
                res = sim.run(enc, steps=T, probes=probes if b0 == 0 else (),
                              recorder=recorder if b0 == 0 else None, progress=progress and T > 1)
                correct = correct + (res.scores.argmax(1) == y).sum()       # read once, at the end
                for name, ev in res.events.items():
                    tot = totals.setdefault(name, {})
                    for k, v in ev.items():
                        tot[k] = None if v is None else tot.get(k, 0) + v
                bar.update(b1 - b0)
        elapsed = time.perf_counter() - t_start
        summary = dict(network=card.name, device=dev_card.name, coding=coding, steps=T, samples=samples,
                       dataset=dataset, accuracy=int(correct) / samples, seconds=elapsed, checkpoint=checkpoint is not None,
                       layers={name: {k: (None if v is None else v / samples) for k, v in ev.items()}
                               for name, ev in totals.items()},
                       out=str(out) if out is not None else None)
        if recorder is not None:
            recorder.close(ok=True, summary=summary)
    except BaseException:
        if recorder is not None:
            recorder.close(ok=False)
        raise
    return summary
