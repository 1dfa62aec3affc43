r"""The cost ledger: the events a run really made, per costed unit and phase.

:class:`Ledger` collects, per unit (an analog layer or an attention block: the network's
:meth:`~neurosal.engine.ChipNetwork.cost_units`) and per phase (``forward``, ``backward``,
``update``), the counts the simulator keeps as it runs: crossbar reads (active rows x
columns, :class:`~neurosal.crossbar.Counters`), DAC and ADC conversions, neuron updates and
spikes, write pulses and their pulse slots, verify reads, MACs of the tiles' digital units
(weight gradients, off-array errors, DFA's feedback), digital buffer traffic (hybrid rule),
and the co-processor's MACs, operations, memory accesses and the values that cross between
analog and digital (:class:`~neurosal.coprocessor.CoCounters`, per attention block). A phase
is a block of code (``with ledger.phase("forward"): ...``); the learning rules mark their
phases with :func:`phase`, which does nothing unless a ledger is active
(``with ledger.active(): ...``).

May import: :mod:`neurosal.crossbar` (counters).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from typing import Optional

import torch

from ..crossbar import Counters

__all__ = ["PHASES", "Ledger", "phase", "off_chip"]

PHASES = ("forward", "backward", "update")

_current: contextvars.ContextVar[Optional["Ledger"]] = contextvars.ContextVar("neurosal_ledger", default=None)


@contextlib.contextmanager
def phase(name: str):
    """Mark a phase of a training or inference step for the active ledger (no-op without one)."""
    led = _current.get()
    if led is None:
        yield
        return
    with led.phase(name):
        yield


@contextlib.contextmanager
def off_chip():
    """Work a host computer does outside the chip (e.g. training a model of it off-chip): no
    ledger is active inside, so none of it is charged to the chip."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


_XB_FIELDS = Counters.FIELDS                                            # every crossbar counter
_CP_FIELDS = ("transfers_in", "transfers_out", "macs", "ops", "mem_reads", "mem_writes")


class _Frozen(dict):
    """Counts fixed once (a per-sample copy): never recomputed from the listeners."""


class Ledger:
    """Event counts per unit (layer or attention block) and phase.

    ``with ledger.active():`` makes it the ledger the learning rules report to;
    ``with ledger.phase(name):`` attributes everything counted inside to ``name``.
    ``samples`` is what per-sample figures divide by (set it to the batch size).
    """

    def __init__(self, net, *, samples: int = 1, units: Optional[list] = None):
        self.net = net
        self.units = net.cost_units() if units is None else list(units)
        # crossbar events: a Counters per phase and unit that listens to the array while the
        # phase runs (counts that live on an accelerator stay there until read); neuron and
        # co-processor counts: differences of snapshots
        self._xb = {ph: {u.name: Counters() for u in self.units if u.crossbar is not None} for ph in PHASES}
        self._other: dict[str, dict[str, dict]] = {ph: {u.name: {} for u in self.units} for ph in PHASES}
        self._resolved = None
        self.samples = int(samples)
        self._depth = 0

    @property
    def counts(self) -> dict:
        """``counts[phase][unit][event]``: every event count, as numbers (reading them waits for
        an accelerator's pending counts)."""
        if self._resolved is None:
            out = {}
            for ph in PHASES:
                out[ph] = {}
                for u in self.units:
                    d = {}
                    xb = self._xb[ph].get(u.name)
                    if xb is not None:
                        d.update(xb.as_dict())
                    for k, v in self._other[ph][u.name].items():
                        d[k] = int(v) if isinstance(v, torch.Tensor) else v
                    out[ph][u.name] = d
            self._resolved = out
        return self._resolved

    @counts.setter
    def counts(self, value: dict) -> None:
        self._resolved = value

    def _snapshot(self) -> dict:
        snap = {}
        for u in self.units:
            d = {}
            if u.neurons is not None:
                d["neuron_updates"], d["spikes"] = u.neurons()
            if u.block is not None:
                b = u.block()
                d.update({f"cp_{k}": (getattr(b, k) if b is not None else 0) for k in _CP_FIELDS})
            snap[u.name] = d
        return snap

    @contextlib.contextmanager
    def phase(self, name: str):
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; allowed: {', '.join(PHASES)}")
        if self._depth:                       # nested: the outer phase already counts it
            yield
            return
        if self._resolved is not None and not isinstance(self._resolved, _Frozen):
            self._resolved = None
        self._depth += 1
        taps = [(u.crossbar.counters, self._xb[name][u.name]) for u in self.units if u.crossbar is not None]
        for c, acc in taps:
            c._listeners.append(acc)
        before = self._snapshot()
        try:
            yield
        finally:
            self._depth -= 1
            for c, acc in taps:
                c._listeners[:] = [x for x in c._listeners if x is not acc]
            after = self._snapshot()
            for unit, d in after.items():
                acc = self._other[name][unit]
                for k, v in d.items():
                    acc[k] = acc.get(k, 0) + v - before[unit].get(k, 0)
            self._resolved = None

    def state_dict(self) -> dict:
        """Every count so far, as plain numbers (a resumed run continues the same ledger)."""
        return {"samples": self.samples,
                "crossbar": {ph: {u: c.as_dict() for u, c in d.items()} for ph, d in self._xb.items()},
                "other": {ph: {u: {k: (int(v) if isinstance(v, torch.Tensor) else v) for k, v in d.items()}
                               for u, d in units.items()} for ph, units in self._other.items()}}

    def load_state_dict(self, sd: dict) -> None:
        for ph, d in sd["crossbar"].items():
            for u, counts in d.items():
                self._xb[ph][u] = Counters(**counts)
        for ph, units in sd["other"].items():
            for u, d in units.items():
                self._other[ph][u] = dict(d)
        self._resolved = None

    @contextlib.contextmanager
    def active(self):
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def per_sample(self) -> "Ledger":
        """A copy whose counts are divided by ``samples``: one average sample (its latency is
        that of one sample through the pipeline, not of the batch)."""
        other = copy.copy(self)
        n = max(1, self.samples)
        other._resolved = _Frozen({ph: {u: {k: v / n for k, v in d.items()} for u, d in units.items()}
                                   for ph, units in self.counts.items()})
        other.samples = 1
        return other

    def total(self, key: str, phase_name: Optional[str] = None) -> int:
        phases = PHASES if phase_name is None else (phase_name,)
        return sum(d.get(key, 0) for ph in phases for d in self.counts[ph].values())
