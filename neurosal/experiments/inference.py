"""``neurosal simulate``: run a network on dataset samples through the engine and record it.

Encoders by coding: ``rate`` -> direct analog input (T = 1), ``spike`` -> Bernoulli spikes,
``latency`` -> time to first spike. The run's full configuration, the network recipe,
the device card, the seed and the package versions go into the recording, so the file
alone says how to reproduce it.

May import: :mod:`neurosal.engine`, :mod:`neurosal.networks`, :mod:`neurosal.recording`,
:mod:`neurosal.datasets`, :mod:`neurosal.devices`, infrastructure.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..datasets import load
from ..devices import load_device
from ..engine import (ENCODER_OF, VARIABLES, Probe, Simulator, activity_warnings, encoder_for, firing_rates,
                      initialize_gains, population_counts)
from ..files import OutputError, Owner, check_output
from ..networks import CODINGS, build, load_checkpoint, recipe_for
from ..progress import bar as progress_bar
from ..recording import Recorder

__all__ = ["simulate", "ENCODER_OF", "recording_estimate"]


def simulate(network: str, device: str, *, coding: str = "spike", steps: Optional[int] = None, samples: int = 100,
             dataset: str = "digits", data_dir: Optional[str | Path] = None, record: Sequence[str] = ("spikes",), out: Optional[str | Path] = None,
             record_samples: int = 16, checkpoint: Optional[str | Path] = None, overwrite: bool = False,
             seed: int = 0, batch: int = 256, chunk: int = 64, path: str = "auto", progress: bool = True,
             accelerator=None, probe: Optional[Sequence[str]] = None, solver: Optional[str] = None,
             size_check: bool = True) -> dict:
    """Simulate ``samples`` test samples of ``dataset``; record the first ``record_samples``.

    Returns a summary dict (accuracy, spikes and events per sample per layer, timing).
    Before any work, a recording that could outgrow the free space of ``out``'s disk is refused
    (:func:`recording_estimate`; spikes are counted worst case) unless ``size_check`` is False.
    """
    if coding not in CODINGS:
        raise ValueError(f"unknown coding {coding!r}; allowed: {', '.join(CODINGS)}")
    bad = [v for v in record if v not in VARIABLES]
    if bad:
        raise ValueError(f"--record: unknown variable(s) {', '.join(bad)}; allowed: {', '.join(VARIABLES)}")
    record = tuple(record)
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
                         progress=progress, accelerator=accelerator, owner=owner, probe=probe, solver=solver,
                         size_check=size_check)
    finally:
        if owner is not None:
            owner.release()


#: bytes per recorded value: a spike is a timestamp (f8) and a node id (u8); a trace value is f4
SPIKE_BYTES, TRACE_BYTES = 16, 4


def recording_estimate(net, probes, *, steps: int, samples: int, inputs: int) -> dict:
    """The largest a recording of ``probes`` can grow over ``steps`` engine steps of ``samples``
    recorded samples of ``inputs`` input features: traces exactly, spikes as if every neuron
    fired every step (a charge-domain neuron fires at most once per phase).
    Returns ``{"bytes": .., "neurons": ..}``."""
    comps = net.components()
    total, neurons = 0, 0
    once = net.records_input          # charge-domain: one spike per neuron and phase at most
    for p in probes:
        n = int(inputs) if p.layer == "input" else comps[p.layer].neurons
        neurons += n
        for var in p.variables:
            per = SPIKE_BYTES if var == "spikes" else TRACE_BYTES
            total += per * n * samples * (1 if once and var == "spikes" else steps)
    return {"bytes": int(total), "neurons": int(neurons)}


def _room_for(out: Path, est: dict, steps: int, samples: int) -> None:
    """Refuse, before any work, a recording that cannot fit on the disk of ``out``."""
    try:
        st = os.statvfs(out.parent)
    except OSError:  # pragma: no cover - a file system without statvfs
        return
    free = st.f_bavail * st.f_frsize
    if est["bytes"] > free:
        raise OutputError(errno.ENOSPC,
                          f"the recording {out} could grow to {est['bytes'] / 1e9:,.3g} GB ({steps:,d} steps x "
                          f"{samples} recorded samples x {est['neurons']:,d} recorded neurons; spikes counted as if "
                          f"every neuron fired every step) and {free / 1e9:,.3g} GB are free there: record fewer steps, "
                          "samples (--record-samples), variables (--record) or components (--probe), "
                          "or pass --skip-size-check to try anyway")


def _simulate(network, device, *, coding, steps, samples, dataset, data_dir, record, out, record_samples,
              checkpoint, overwrite, seed, batch, chunk, path, progress, accelerator, owner, probe, solver,
              size_check) -> dict:
    card = recipe_for(network, checkpoint)
    dev_card = load_device(device)
    data = load(dataset, data_dir=data_dir, seed=seed)
    n_in = data.features
    samples = min(samples, len(data.y_test))
    net = build(card, device=dev_card, coding=coding, seed=seed, steps=steps, input_shape=data.shape,
                classes=data.classes, accelerator=accelerator)
    where = next(net.parameters()).device
    if checkpoint is not None:
        load_checkpoint(net, checkpoint)
    if solver is not None:
        if not hasattr(net, "set_solver"):
            raise ValueError(f"--solver applies to charge-domain networks; {card.name} is a {card.kind} network")
        net.set_solver(solver)
    net.eval()
    T = net.meta["steps"]
    encoder, T_run = net.engine_input(coding, T)
    comps = net.components()
    names = list(comps) if not probe else list(probe)
    unknown = [n for n in names if n != "input" and n not in comps]
    if unknown:
        raise ValueError(f"--probe: {', '.join(unknown)} names no component of {card.name}; components: "
                         f"input, {', '.join(comps)}")
    supported = sorted({v for c in comps.values() for v in c.variables} | {"spikes"})
    bad = [v for v in record if v not in supported]
    if bad:
        raise ValueError(f"--record: {', '.join(bad)} is not recorded in {card.name} ({coding} coding); "
                         f"it records {', '.join(supported)}: " +
                         "; ".join(f"{n} {','.join(c.variables)}" for n, c in list(comps.items())[:6]) +
                         (" ..." if len(comps) > 6 else ""))
    if probe and record:
        idle = [n for n in names if n != "input" and not any(v in comps[n].variables for v in record)]
        if idle:
            raise ValueError("--probe: " + "; ".join(f"{n} records {','.join(comps[n].variables)}" for n in idle) +
                             f", none of --record {','.join(record)}: add the variable to --record "
                             f"(e.g. --record {','.join(dict.fromkeys(record + comps[idle[0]].variables))})")
    chain = net.structure == "chain"
    sim = Simulator(net, dt=card.dt, chunk=chunk, path=path)
    rec_n = min(record_samples, samples, batch)
    probes = []
    if record:
        if "spikes" in record and coding != "rate" and ("input" in names or not probe):
            probes.append(Probe("input", ("spikes",), samples=range(rec_n)))
        for name in names:
            if name == "input":
                continue
            vars_ = tuple(v for v in record if v in comps[name].variables)
            if vars_:
                probes.append(Probe(name, vars_, samples=range(rec_n)))
    recorder = None
    if out is not None:
        est = recording_estimate(net, probes, steps=T_run, samples=rec_n, inputs=n_in)
        if size_check:
            _room_for(out, est, T_run, rec_n)
        pops = {"input": n_in, **{n: c.neurons for n, c in comps.items()}} if chain else {}
        config = dict(network=network, device=device, coding=coding, steps=T, samples=samples, dataset=dataset,
                      data_dir=str(data_dir) if data_dir else None, record=list(record), record_samples=rec_n, checkpoint=str(checkpoint) if checkpoint else None,
                      seed=seed, batch=batch, chunk=chunk, path=path, encoder=ENCODER_OF[coding])
        if probe:
            config["probe"] = list(probe)
        if solver is not None:
            config["solver"] = solver
        meta = dict(config=config, network=card.to_dict(), devices={"crossbar": dev_card.to_dict()},
                    seed=seed, coding=coding, dataset=dataset, encoder=ENCODER_OF[coding])
        if not chain:
            meta["engine"] = {"steps": T_run, "dt_ms": card.dt * 1e3,
                              "components": {n: {"variables": list(c.variables), "shape": list(c.shape)}
                                             for n, c in comps.items()}}
            if net.records_input:
                meta["engine"]["windows"] = len(comps) + 1
                meta["engine"]["time"] = ("charge-domain phases: window 0 holds the input spikes, window i + 1 "
                                          "the spikes of layer i; a timestamp is (window + t) * dt_ms")
        recorder = Recorder(out, dt=card.dt, steps=T_run, populations=pops, samples=range(rec_n),
                            labels=data.y_test[:rec_n].tolist(), overwrite=overwrite, owner=owner, metadata=meta)
        if "spikes" in record and coding != "rate":
            if chain:
                recorder.declare_spikes(["input"] + net.layer_names())
    correct = 0
    totals: dict = {}
    gains = None
    try:
        if checkpoint is None:              # a fresh network: the recipe's initialization, as train makes it
            gains = initialize_gains(net, card, data.x_train, coding=coding, steps=T, seed=seed)
        cp_before = _coprocessor_work(net)
        counts0 = population_counts(net)
        t_start = time.perf_counter()
        with torch.no_grad(), progress_bar(samples, unit="sample", desc="simulate", disable=not progress) as bar:
            for b0 in range(0, samples, batch):
                b1 = min(samples, b0 + batch)
                x, y = data.x_test[b0:b1].to(where), data.y_test[b0:b1].to(where)
                enc = encoder_for(encoder, x, T_run, seed=seed + b0, p_max=card.p_max)
                res = sim.run(enc, steps=T_run, probes=probes if b0 == 0 else (),
                              recorder=recorder if b0 == 0 else None, progress=progress and T_run > 1,
                              spikes_in=None if net.structure == "chain" else encoder != "direct")
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
        rates = firing_rates(counts0, population_counts(net)) if coding != "rate" else {}
        for name, r in rates.items():
            if name in summary["layers"]:
                summary["layers"][name]["rate"] = r
        if coding == "spike":
            summary["warnings"] = activity_warnings(rates)
        if gains:
            summary["gains"] = gains
        cp = _coprocessor_work(net, cp_before)
        if cp:
            summary["coprocessor"] = cp
        if recorder is not None:
            recorder.close(ok=True, summary=summary)
    except BaseException:
        if recorder is not None:
            recorder.close(ok=False)
        raise
    return summary


def _coprocessor_work(net, before: Optional[dict] = None) -> dict:
    """The co-processor's work per attention block (since ``before``, when given)."""
    out = {}
    for u in net.cost_units():
        if u.block is None:
            continue
        b = u.block()
        d = {} if b is None else {k: int(v) for k, v in dataclasses.asdict(b).items()}
        if before is not None:
            d = {k: v - before.get(u.name, {}).get(k, 0) for k, v in d.items()}
        out[u.name] = d
    return out
