"""Event counters of a crossbar array: every read, conversion, pulse and digital operation that
the cost model later prices (:mod:`neurosal.cost`).

Counts that the data decide (active rows, pulses, spikes) are tensors on the simulation's
device: on the CPU they are added at once; on an accelerator they wait there and are summed
only when a count is read, so that counting never makes the host wait for the GPU.

May import: nothing of neurosal.
"""

from __future__ import annotations

import torch

__all__ = ["Counters", "FIELDS"]

_FIELDS = (
    "forward_reads",      # input vectors read through the array (y = x W)
    "backward_reads",     # error vectors read transposed (x = d W^T)
    "row_activations",    # rows driven with a nonzero input, summed over vectors and tiles
    "cell_reads",         # active rows x columns (device currents summed)
    "dac_conversions",    # input DAC conversions (nonzero analog inputs, per tile)
    "adc_conversions",    # column ADC conversions (per tile column per vector)
    # non-spike reads by kind; how their cost scales with the input bits is the periphery's
    # (bit-serial or multi-bit DAC), so the cost model needs them apart:
    "analog_reads",       # vectors of analog values (activations in rate coding, every error)
    "analog_cell_reads",
    "analog_adc_conversions",
    "code_reads",         # vectors of small non-negative integer codes (spike maps, sums of spikes)
    "code_cycles",        # their bits summed over vectors (a 0/1/2 code is 2 bits)
    "code_cell_reads",
    "code_adc_conversions",
    "code_dac_conversions",
    "pulses",             # programming pulses applied (sum of |n|)
    "pulsed_cells",       # device updates with at least one pulse
    "update_ops",         # pulse-update operations on the array
    "verify_reads",       # device reads made by write-and-verify (two per pair read)
    "verify_cycles",      # row-read slots of those reads: a pair's two devices and all columns of a
                          # row are read at once, rows one at a time per tile, tiles in parallel
    "write_cycles",       # pulse slots of the updates: rows are written one at a time per tile
                          # (all columns of a row at once, tiles in parallel), a row takes as
                          # many slots as its largest pulse count
    "pulse_bits",         # bits of stochastic pulse trains drawn by the row and column periphery
    "digital_macs",       # MACs in the tile's digital unit: weight gradients, off-array errors
    "buffer_accesses",    # reads + writes of the controller's per-cell digital state (hybrid rule)
    "clipped_cells",      # buffered updates dropped because the pair was at the end of its range
)
_INDEX = {name: i for i, name in enumerate(_FIELDS)}


class Counters:
    """Event counts of one crossbar array (cumulative; :meth:`reset` to clear).

    Every field is an integer attribute (``counters.pulses``). Counts are added with
    :meth:`add`, which takes a Python int or a 0-d tensor. A count that the data decide (active
    rows, pulses, spikes) is a tensor on the simulation's device: on the CPU it is added at
    once; on an accelerator it is kept there and summed only when a count is read, so that
    counting never makes the host wait for the GPU (``Counters.defer_cpu = True`` makes the
    CPU do the same, for tests). Reading a field, :meth:`as_dict` and pickling resolve the
    pending counts. Fields cannot be assigned: counts only grow, through :meth:`add`, so that
    a :class:`~neurosal.cost.Ledger` listening to the array sees every event.
    """

    FIELDS = _FIELDS
    defer_cpu = False

    __slots__ = ("_host", "_pending", "_listeners")

    def __init__(self, **values):
        object.__setattr__(self, "_host", [0] * len(_FIELDS))
        object.__setattr__(self, "_pending", {})
        object.__setattr__(self, "_listeners", [])
        for k, v in values.items():
            if k not in _INDEX:
                raise TypeError(f"Counters has no field {k!r}")
            self._host[_INDEX[k]] = int(v)

    # -- adding ---------------------------------------------------------------------------
    def add(self, name: str, value, coef: int = 1) -> None:
        """Add ``coef * value`` to field ``name`` (``value``: int or 0-d tensor). Under
        ``torch.compile`` it runs eagerly, outside the compiled graph (bookkeeping in Python
        objects); in eager mode it costs no more than the bookkeeping itself."""
        if torch.compiler.is_compiling():
            return self._add_eagerly(name, value, coef)
        self._add(name, value, coef)

    def _add(self, name: str, value, coef: int = 1) -> None:
        i = _INDEX[name]
        if isinstance(value, torch.Tensor):
            if value.device.type == "cpu" and not Counters.defer_cpu:
                value = int(value) * coef
            else:
                value = value.to(torch.int64) * coef if coef != 1 else value.to(torch.int64)
                self._defer(i, value)
                for lst in self._listeners:
                    lst._defer(i, value)
                return
        else:
            value = value * coef
        self._host[i] += value
        for lst in self._listeners:
            lst._host[i] += value

    _add_eagerly = torch.compiler.disable(_add)

    def add_all(self, values: dict) -> None:
        """Add a dict of counts (e.g. a saved :meth:`as_dict`)."""
        for k, v in values.items():
            if k not in _INDEX:
                raise ValueError(f"unknown counter {k!r}")
            self.add(k, int(v))

    def _defer(self, i: int, value: torch.Tensor) -> None:
        q = self._pending.setdefault(i, [])
        q.append(value)
        if len(q) >= 256:                      # bound the list: sum on the device (no host sync)
            self._pending[i] = [torch.stack(q).sum()]

    def _resolve(self) -> None:
        for i, q in self._pending.items():
            self._host[i] += _sum_int(q)
        self._pending.clear()

    # -- reading --------------------------------------------------------------------------
    def __getattr__(self, name: str):
        i = _INDEX.get(name)
        if i is None:
            raise AttributeError(f"Counters has no field {name!r}")
        q = self._pending.pop(i, None)
        if q is not None:
            self._host[i] += _sum_int(q)
        return self._host[i]

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"Counters.{name} cannot be assigned: counts grow through Counters.add(name, value)")

    def as_dict(self) -> dict:
        self._resolve()
        return dict(zip(_FIELDS, self._host))

    def reset(self) -> None:
        self._host[:] = [0] * len(_FIELDS)
        self._pending.clear()

    def __iadd__(self, other: "Counters") -> "Counters":
        for i, v in enumerate(other._host):
            self._host[i] += v
        for i, q in other._pending.items():
            for t in q:
                self._defer(i, t)
        return self

    def __eq__(self, other) -> bool:
        return isinstance(other, Counters) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "Counters(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v) + ")"

    def __getstate__(self):
        return self.as_dict()

    def __setstate__(self, state) -> None:
        self.__init__(**state)

    def __deepcopy__(self, memo):
        return Counters(**self.as_dict())


def _sum_int(q: list) -> int:
    return int(torch.stack([t.to(q[0].device) for t in q]).sum())


FIELDS = _FIELDS
