r"""Hardware cost model: energy, latency and area from the events a run really made.

**Ledger.** :class:`Ledger` collects, per layer and per phase (``forward``, ``backward``,
``update``), the counts the simulator keeps as it runs: crossbar reads (active rows x
columns, :class:`~neurosal.crossbar.Counters`), DAC and ADC conversions, neuron updates and
spikes, write pulses and their pulse slots, verify reads, MACs of the tiles' digital units
(weight gradients, off-array errors, DFA's feedback), digital buffer traffic (hybrid rule),
and the co-processor's MACs, operations, memory accesses and the values that cross between
analog and digital (:class:`~neurosal.coprocessor.CoCounters`, per attention block). A phase
is a block of code (``with ledger.phase("forward"): ...``); the learning rules mark their
phases with :func:`phase`, which does nothing unless a ledger is active
(``with ledger.active(): ...``).

**Cost cards.** :class:`PeripheryCost` (``devices/periphery/*.toml``) and
:class:`CoprocessorCost` (``devices/coprocessor/*.toml``) hold energy per event, latency per
event or array operation, area per component and the technology node, each section with its
source. Read and write energies of the memory devices come from the device cards
(:meth:`device_energies`): given in the card's ``[energy]`` table, or derived from its
``[pulse]`` conditions, :math:`E_{write} = V^2\,\bar G\,t_{pulse}` per pulse and
:math:`E_{read} = 2\,V_{read}^2\,\bar G\,t_{read}` per differential cell, with
:math:`\bar G = (G_{min} + G_{max})/2`.

**Energy** of a layer and phase is :math:`\sum_k n_k e_k` over its event counts. Components:
``array`` (cell reads), ``dac``, ``adc``, ``neuron`` (updates and spikes), ``write``
(pulses), ``verify`` (a device read and a conversion each) — the *analog* share; ``digital``
(the tiles' digital units and update buffers) and ``coprocessor`` — the *digital* share. An
ADC of ``b`` bits costs :math:`e_{ADC}\,2^{b - b_0}` (constant Walden figure of merit). The
periphery card says how analog inputs are applied: ``bit-serial`` (ISAAC's 1-bit DACs) streams
a ``b``-bit input one bit per array cycle, so each analog vector (activations in rate coding,
every backpropagated error) costs ``b`` array cycles, ``b`` conversions per column and ``b``
1-bit DAC conversions per input, and its rows draw current in the cycles where their bit is 1
(``bit_density`` of them, an assumption); spikes are one bit and one cycle, and inputs that
are small non-negative integers (sums of spikes: 0, 1, 2) as many cycles as their largest
value has bits, each nonzero one driving its row in one of them. ``multi-bit``: one read and
one conversion per vector.

**Latency** follows the structure of the hardware. A layer's tiles work in parallel, so one
input vector takes :math:`t_{vec} = \max(t_{read},\ \lceil c/n_{ADC}\rceil\,t_{conv})`
(array read and the column conversions of one tile, pipelined) per array cycle; a layer's
phase time is its vectors times their cycles times :math:`t_{vec}`, plus its digital work at
the card's throughput, its write slots times the pulse width, and its verify cycles (a
pair's two devices and a row's columns read at once, rows one at a time per tile, tiles in
parallel) times :math:`t_{vec}`. In the forward pass the layers form a pipeline: the slowest
layer's time plus one vector of every other layer (the fill); an attention block waits for
its whole feature map (a global pooling), so it adds its full time. Backward and update:
backprop, hybrid and write-and-verify pass the error layer after layer and write one layer
after another (the sum over layers; a layer's weight gradient needs its whole batch of
errors); DFA gives every layer its error :math:`e B_l` at once and updates every layer at
once (the maximum).

**Area:** per layer, tiles x (two device arrays, the ADCs, a DAC per row, the neuron
unit), plus the hybrid controller's state (buffer, two estimates, two thresholds per cell); one co-processor when the network
has attention blocks.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .cards import CardError, from_dict, list_cards, load_toml, resolve_card, spec, to_dict
from .crossbar import Counters
from .files import savefig

__all__ = ["PHASES", "COMPONENTS", "ANALOG", "DIGITAL", "Ledger", "phase", "PeripheryCost", "CoprocessorCost",
           "load_periphery", "load_coprocessor", "device_energies", "CostReport", "cost_report",
           "list_periphery", "list_coprocessors"]

PHASES = ("forward", "backward", "update")
COMPONENTS = ("array", "dac", "adc", "neuron", "write", "verify", "digital", "coprocessor")
ANALOG = ("array", "dac", "adc", "neuron", "write", "verify")
DIGITAL = ("digital", "coprocessor")

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


# ============================================================================ cost cards
@dataclass(frozen=True)
class ArrayCost:
    read_ns: float = spec(100.0, lo=0, lo_open=True, unit="ns", doc="one array read (all rows driven, S/H)")
    read_pulse_ns: float = spec(10.0, lo=0, lo_open=True, unit="ns",
                                doc="read pulse width (device read energy when the device card has none)")
    area_mm2: float = spec(2.5e-5, lo=0, unit="mm2", doc="one device array of the tile size")
    source: str = spec("")


@dataclass(frozen=True)
class ADCCost:
    bits: int = spec(8, lo=1, hi=24, doc="resolution the energy below is given for")
    energy_pj: float = spec(1.5625, lo=0, unit="pJ", doc="per conversion at `bits`")
    conversion_ns: float = spec(0.78125, lo=0, lo_open=True, unit="ns", doc="per conversion")
    area_mm2: float = spec(0.0012, lo=0, unit="mm2", doc="per ADC")
    per_tile: int = spec(1, lo=1, hi=4096, doc="ADCs per tile, shared by its columns")
    default_bits: int = spec(8, lo=1, hi=24, doc="bits assumed where the simulation's converter is ideal")
    source: str = spec("")


@dataclass(frozen=True)
class DACCost:
    """Input drivers. ``bit-serial`` (ISAAC): a ``b``-bit input streams through a 1-bit DAC
    one bit per array cycle, so an analog vector costs ``b`` array reads, ``b`` conversions
    per column and ``b`` read cycles (partial sums shifted and added digitally); a row is
    driven in the cycles where its bit is 1 (``bit_density`` of them). ``multi-bit``: one
    conversion per input and one array read per vector."""

    scheme: str = spec("bit-serial", choices=("bit-serial", "multi-bit"), doc="how analog inputs are applied")
    energy_pj: float = spec(0.0039, lo=0, hi=1e6, unit="pJ",
                            doc="per conversion: one bit (bit-serial) or one input (multi-bit)")
    area_mm2: float = spec(1.67e-7, lo=0, hi=1e3, unit="mm2", doc="per DAC (one per tile row)")
    default_bits: int = spec(8, lo=1, hi=24, doc="bits assumed for analog inputs where the DAC is ideal")
    bit_density: float = spec(0.5, lo=0, lo_open=True, hi=1.0,
                              doc="bit-serial: mean fraction of the bit cycles in which a nonzero input's row "
                                  "is driven (0.5: uniform codes; an assumption)")
    source: str = spec("")


@dataclass(frozen=True)
class NeuronCost:
    update_pj: float = spec(1.1, lo=0, unit="pJ", doc="one neuron state update")
    spike_pj: float = spec(0.16, lo=0, unit="pJ", doc="one output spike (register write)")
    area_mm2: float = spec(0.004, lo=0, unit="mm2", doc="neuron unit per tile column group")
    source: str = spec("")


@dataclass(frozen=True)
class DigitalCost:
    mac_pj: float = spec(0.83, lo=0, unit="pJ", doc="one MAC of the tile's digital unit")
    macs_per_ns: float = spec(4.0, lo=0, lo_open=True, doc="MAC throughput of one layer's digital unit")
    buffer_pj: float = spec(1.075, lo=0, unit="pJ", doc="one buffer word access")
    buffer_words_per_ns: float = spec(8.0, lo=0, lo_open=True)
    buffer_bits: int = spec(16, lo=1, hi=64, doc="bits per buffered cell (hybrid)")
    buffer_bit_area_mm2: float = spec(1.64e-7, lo=0, unit="mm2")
    area_mm2: float = spec(0.004, lo=0, unit="mm2", doc="digital unit per layer")
    source: str = spec("")


@dataclass(frozen=True)
class PeripheryCost:
    """Cost card of the array periphery (``devices/periphery/*.toml``)."""

    name: str = spec(doc="card name")
    description: str = spec("")
    technology_nm: float = spec(32.0, lo=1, hi=1000, unit="nm")
    source: str = spec("", doc="where the figures come from")
    array: ArrayCost = dataclasses.field(default_factory=ArrayCost)
    adc: ADCCost = dataclasses.field(default_factory=ADCCost)
    dac: DACCost = dataclasses.field(default_factory=DACCost)
    neuron: NeuronCost = dataclasses.field(default_factory=NeuronCost)
    digital: DigitalCost = dataclasses.field(default_factory=DigitalCost)

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass(frozen=True, kw_only=True)
class CoprocessorCost:
    """Cost card of the digital co-processor (``devices/coprocessor/*.toml``)."""

    name: str = spec(doc="card name")
    description: str = spec("")
    technology_nm: float = spec(32.0, lo=1, hi=1000, unit="nm")
    number_format: str = spec("", doc="the format the figures are for")
    source: str = spec("", doc="where the figures come from")
    mac_pj: float = spec(lo=0, unit="pJ", doc="one multiply-accumulate")
    op_pj: float = spec(lo=0, unit="pJ", doc="one other operation (add, compare, nonlinearity)")
    mem_pj: float = spec(lo=0, unit="pJ", doc="one local memory word access")
    transfer_in_pj: float = spec(lo=0, unit="pJ", doc="one value arriving from the analog array")
    transfer_out_pj: float = spec(lo=0, unit="pJ", doc="one value sent back to the analog side")
    macs_per_ns: float = spec(lo=0, lo_open=True, doc="MAC throughput")
    ops_per_ns: float = spec(lo=0, lo_open=True, doc="other-operation throughput")
    area_mm2: float = spec(lo=0, unit="mm2", doc="the whole co-processor")

    def to_dict(self) -> dict:
        return to_dict(self)


def _load(cls, name_or_path, subdir: str):
    path = resolve_card(name_or_path, "devices", subdir)
    data = load_toml(path)
    return from_dict(cls, data, path)


def load_periphery(name_or_path="isaac-32nm") -> PeripheryCost:
    """A periphery cost card by name (``devices/periphery/``) or path."""
    return name_or_path if isinstance(name_or_path, PeripheryCost) else _load(PeripheryCost, name_or_path, "periphery")


def load_coprocessor(name_or_path="puma-vfu-32nm") -> CoprocessorCost:
    """A co-processor cost card by name (``devices/coprocessor/``) or path."""
    return name_or_path if isinstance(name_or_path, CoprocessorCost) else \
        _load(CoprocessorCost, name_or_path, "coprocessor")


def list_periphery() -> list[str]:
    return list_cards("devices", "periphery")


def list_coprocessors() -> list[str]:
    return list_cards("devices", "coprocessor")


def device_energies(card, periphery: PeripheryCost) -> dict:
    """Per-device energies of a device card: ``write_j`` per pulse and ``read_j`` per cell
    read (a differential pair), from its ``[energy]`` table or derived from its pulse
    conditions (see the module docstring); ``derived`` says which."""
    g_mid = 0.5 * (card.g_min + card.g_max)
    p = card.pulse
    e = card.energy
    write = e.write_pj * 1e-12 if e.write_pj is not None else \
        0.5 * (p.v_up ** 2 * p.width_up + p.v_down ** 2 * p.width_down) * g_mid
    read = e.read_fj * 1e-15 if e.read_fj is not None else \
        2.0 * p.v_read ** 2 * g_mid * periphery.array.read_pulse_ns * 1e-9
    return {"write_j": write, "read_j": read, "derived": {"write": e.write_pj is None, "read": e.read_fj is None},
            "pulse_s": max(p.width_up, p.width_down)}


# ============================================================================ ledger
_XB_FIELDS = Counters.FIELDS                                            # every crossbar counter
_CP_FIELDS = ("transfers_in", "transfers_out", "macs", "ops", "mem_reads", "mem_writes")


@dataclass
class Unit:
    """One costed unit of a network: an analog layer (``crossbar``) or an attention block."""

    name: str
    kind: str                       # 'layer' | 'attention'
    crossbar: object = None         # Crossbar of an analog layer
    neurons: object = None          # callable -> (updates, spikes)
    block: object = None            # callable -> CoCounters of an attention block


def _units(net) -> list[Unit]:
    from .crossbar import analog_layers
    from .simulator import Network
    units = []
    if isinstance(net, Network):
        for layer in net.layers:
            units.append(Unit(layer.name, "layer", layer.crossbar,
                              neurons=lambda layer=layer: (layer.neuron_updates, layer.spike_count)))
        return units
    analog = {id(m) for m in analog_layers(net)}
    counts = getattr(net, "neuron_counts", None)
    for name, mod in net.named_modules():
        if id(mod) in analog:
            units.append(Unit(name, "layer", mod.crossbar,
                              neurons=(lambda name=name: tuple(counts.get(name, (0, 0)))) if counts is not None
                              else None))
    cp = getattr(net, "coprocessor", None)
    attn = getattr(net, "attn", None)
    if cp is not None and attn is not None:
        for key, blk in attn.items():
            units.append(Unit(f"attn.{key}", "attention", block=lambda tag=blk.tag, cp=cp: cp.blocks.get(tag)))
    return units


class _Frozen(dict):
    """Counts fixed once (a per-sample copy): never recomputed from the listeners."""


class Ledger:
    """Event counts per unit (layer or attention block) and phase.

    ``with ledger.active():`` makes it the ledger the learning rules report to;
    ``with ledger.phase(name):`` attributes everything counted inside to ``name``.
    ``samples`` is what per-sample figures divide by (set it to the batch size).
    """

    def __init__(self, net, *, samples: int = 1):
        self.net = net
        self.units = _units(net)
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
        import copy
        other = copy.copy(self)
        n = max(1, self.samples)
        other._resolved = _Frozen({ph: {u: {k: v / n for k, v in d.items()} for u, d in units.items()}
                                   for ph, units in self.counts.items()})
        other.samples = 1
        return other

    def total(self, key: str, phase_name: Optional[str] = None) -> int:
        phases = PHASES if phase_name is None else (phase_name,)
        return sum(d.get(key, 0) for ph in phases for d in self.counts[ph].values())


# ============================================================================ report
@dataclass
class CostReport:
    """Energy (J), latency (s) and area (mm^2) per unit and phase, with totals."""

    rows: list            # one dict per (unit, phase) with energy by component and latency
    area: dict            # unit -> mm^2
    latency: dict         # phase -> s
    samples: int
    rule: str
    meta: dict

    def energy(self, phase_name: Optional[str] = None, component: Optional[str] = None,
               unit: Optional[str] = None) -> float:
        tot = 0.0
        for r in self.rows:
            if (phase_name is None or r["phase"] == phase_name) and (unit is None or r["unit"] == unit):
                tot += r["energy_j"] if component is None else r["components"][component]
        return tot

    def adc_conversions(self, phase_name: Optional[str] = None) -> float:
        """ADC conversions as the periphery makes them (a bit-serial analog vector converts every
        column once per bit cycle), summed over units."""
        return sum(r["adc_conversions"] for r in self.rows if phase_name is None or r["phase"] == phase_name)

    @property
    def energy_j(self) -> float:
        return self.energy()

    @property
    def analog_energy_j(self) -> float:
        return sum(self.energy(component=c) for c in ANALOG)

    @property
    def digital_energy_j(self) -> float:
        return sum(self.energy(component=c) for c in DIGITAL)

    @property
    def latency_s(self) -> float:
        return sum(self.latency.values())

    @property
    def area_mm2(self) -> float:
        return sum(self.area.values())

    def per_layer(self) -> list[dict]:
        out = []
        for name in dict.fromkeys(r["unit"] for r in self.rows):
            rs = [r for r in self.rows if r["unit"] == name]
            out.append({"name": name, "kind": rs[0]["kind"],
                        "energy_j": sum(r["energy_j"] for r in rs),
                        "phases": {r["phase"]: {"energy_j": r["energy_j"], "latency_s": r["latency_s"],
                                                "components": r["components"]} for r in rs},
                        "area_mm2": self.area.get(name, 0.0)})
        return out

    def as_dict(self) -> dict:
        return {"energy_j": self.energy_j, "latency_s": self.latency_s, "area_mm2": self.area_mm2,
                "analog_energy_j": self.analog_energy_j, "digital_energy_j": self.digital_energy_j,
                "samples": self.samples, "energy_per_sample_j": self.energy_j / max(1, self.samples),
                "rule": self.rule, "phases": {ph: {"energy_j": self.energy(ph), "latency_s": self.latency[ph]}
                                              for ph in PHASES},
                "components": {c: self.energy(component=c) for c in COMPONENTS},
                "layers": self.per_layer(), **self.meta}


def _adc_energy(per: PeripheryCost, bits: Optional[int]) -> float:
    b = per.adc.default_bits if bits is None else bits
    return per.adc.energy_pj * 1e-12 * 2.0 ** (b - per.adc.bits)


def cost_report(ledger: Ledger, *, periphery="isaac-32nm", coprocessor="puma-vfu-32nm",
                rule: str = "bp") -> CostReport:
    """Turn a :class:`Ledger` into energy, latency and area (see the module docstring).
    ``rule`` sets the update schedule: 'dfa' updates (and receives errors in) all layers at
    once, the others layer by layer."""
    per = load_periphery(periphery)
    cp = load_coprocessor(coprocessor)
    rows, area = [], {}
    times: dict[str, list] = {ph: [] for ph in PHASES}    # (unit kind, total s, one-vector s)
    dev_cache: dict = {}
    for u in ledger.units:
        xb = u.crossbar
        if xb is not None:
            card = xb.device.card
            key = id(card)
            if key not in dev_cache:
                dev_cache[key] = device_energies(card, per)
            de = dev_cache[key]
            tr, tc = xb.tile
            n_tiles = xb.n_row_tiles * xb.n_col_tiles
            a = n_tiles * (2 * per.array.area_mm2 * (tr * tc) / (128 * 128) + per.adc.per_tile * per.adc.area_mm2
                           + tr * per.dac.area_mm2 + per.neuron.area_mm2) + per.digital.area_mm2
            if rule == "hybrid":              # buffer, two device estimates, two write thresholds
                a += 5 * xb.rows * xb.cols * per.digital.buffer_bits * per.digital.buffer_bit_area_mm2
            area[u.name] = a
            e_adc = _adc_energy(per, xb.adc_bits)
            dac_bits = xb.dac_bits or per.dac.default_bits
            serial = per.dac.scheme == "bit-serial"
            cycles = dac_bits if serial else 1          # array cycles of one analog vector
            t_fwd = max(per.array.read_ns, math.ceil(tc / per.adc.per_tile) * per.adc.conversion_ns) * 1e-9
            t_bwd = max(per.array.read_ns, math.ceil(tr / per.adc.per_tile) * per.adc.conversion_ns) * 1e-9
        elif u.kind == "attention":
            area[u.name] = 0.0
        for ph in PHASES:
            c = ledger.counts[ph][u.name]
            comp = dict.fromkeys(COMPONENTS, 0.0)
            lat = vec = conversions = 0.0
            if xb is not None:
                # bit-serial: an analog value takes `dac_bits` array cycles (its rows driven in
                # `bit_density` of them), a k-bit code k cycles (a 0/1/2 code drives its row in one),
                # a spike one; every cycle reads the array and converts every column
                g = c.get
                n_dac, a_cells, a_adc = g("dac_conversions", 0), g("analog_cell_reads", 0), \
                    g("analog_adc_conversions", 0)
                k_code = g("code_cycles", 0) / max(1, g("code_reads", 0)) if serial else 1.0   # mean code bits
                a_fwd = max(0, g("analog_reads", 0) - g("backward_reads", 0))         # errors are analog
                cell_reads = g("cell_reads", 0) + a_cells * ((cycles * per.dac.bit_density) - 1 if serial else 0)
                comp["array"] = cell_reads * de["read_j"]
                dac_1 = (n_dac - g("code_dac_conversions", 0)) * cycles + g("code_dac_conversions", 0) * k_code
                comp["dac"] = dac_1 * per.dac.energy_pj * 1e-12
                conversions = (g("adc_conversions", 0) + (cycles - 1) * a_adc
                               + (k_code - 1) * g("code_adc_conversions", 0))
                comp["adc"] = conversions * e_adc
                comp["write"] = c.get("pulses", 0) * de["write_j"]
                comp["verify"] = c.get("verify_reads", 0) * (de["read_j"] / 2 + e_adc)
                comp["digital"] = (c.get("digital_macs", 0) * per.digital.mac_pj
                                   + c.get("buffer_accesses", 0) * per.digital.buffer_pj) * 1e-12
                reads_t = ((g("forward_reads", 0) + (cycles - 1) * a_fwd + (k_code - 1) * g("code_reads", 0)) * t_fwd
                           + g("backward_reads", 0) * cycles * t_bwd)
                lat = (reads_t + c.get("digital_macs", 0) / per.digital.macs_per_ns * 1e-9
                       + c.get("buffer_accesses", 0) / per.digital.buffer_words_per_ns * 1e-9
                       + c.get("write_cycles", 0) * de["pulse_s"]
                       + c.get("verify_cycles", 0) * t_fwd)
                vec = (t_fwd if ph == "forward" else t_bwd) * (cycles if (ph != "forward" or a_fwd) else
                                                               k_code if g("code_reads", 0) else 1)
            if u.neurons is not None:
                comp["neuron"] = (c.get("neuron_updates", 0) * per.neuron.update_pj
                                  + c.get("spikes", 0) * per.neuron.spike_pj) * 1e-12
            if u.block is not None:
                comp["coprocessor"] = (c.get("cp_macs", 0) * cp.mac_pj + c.get("cp_ops", 0) * cp.op_pj
                                       + (c.get("cp_mem_reads", 0) + c.get("cp_mem_writes", 0)) * cp.mem_pj
                                       + c.get("cp_transfers_in", 0) * cp.transfer_in_pj
                                       + c.get("cp_transfers_out", 0) * cp.transfer_out_pj) * 1e-12
                lat = (c.get("cp_macs", 0) / cp.macs_per_ns + c.get("cp_ops", 0) / cp.ops_per_ns) * 1e-9
                vec = lat                                  # a pipeline barrier: waits for the whole map
            e = sum(comp.values())
            rows.append({"unit": u.name, "kind": u.kind, "phase": ph, "energy_j": e, "latency_s": lat,
                         "components": comp, "adc_conversions": conversions})
            if lat > 0:
                times[ph].append((lat, vec))
    latency = {}
    for ph in PHASES:
        ts = times[ph]
        if not ts:
            latency[ph] = 0.0
        elif ph in ("update", "backward"):
            # DFA: every layer gets its error (e B_l) and its update at once; the others pass the
            # error layer after layer and write one layer after another
            latency[ph] = max(t for t, _ in ts) if rule == "dfa" else sum(t for t, _ in ts)
        else:                                              # forward: pipelined layers
            i = max(range(len(ts)), key=lambda k: ts[k][0])
            latency[ph] = ts[i][0] + sum(min(v, t) for k, (t, v) in enumerate(ts) if k != i)
    if any(u.kind == "attention" for u in ledger.units):
        area["coprocessor"] = cp.area_mm2
    meta = {"periphery": per.name, "coprocessor": cp.name, "technology_nm": per.technology_nm}
    return CostReport(rows=rows, area=area, latency=latency, samples=ledger.samples, rule=rule, meta=meta)


# ============================================================================ measuring
def measure(network, device, *, coding: str = "rate", rule: Optional[str] = "bp", steps: Optional[int] = None,
            dataset: str = "digits", data_dir=None, batch: int = 16, seed: int = 0, lr: float = 0.1,
            periphery="isaac-32nm", coprocessor="puma-vfu-32nm", checkpoint=None, net=None, data=None,
            accelerator=None) -> dict:
    """Run ``batch`` test samples (inference) and, with ``rule``, one training step on
    ``batch`` training samples, on the simulated chip; return both cost reports.

    The counts are the events of these runs. A fresh network (no ``checkpoint`` or ``net``)
    normalizes with batch statistics, so its activity is that of a fresh chip; a given
    ``net`` or checkpoint is taken as trained (inference mode).
    """
    import torch

    from .datasets import load
    from .learning import forward, make_rule
    from .networks import build, load_checkpoint, recipe_for

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch {batch!r}: not allowed; allowed: an integer >= 1 (samples measured)")
    if data is None:
        data = load(dataset, data_dir=data_dir, seed=seed, limit_test=batch, limit_train=batch)
    trained = net is not None
    if net is None:
        net = build(recipe_for(network, checkpoint), device=device, coding=coding, seed=seed, steps=steps,
                    input_shape=data.shape, classes=data.classes, accelerator=accelerator)
        if checkpoint is not None:          # the trained chip, into the network of its recipe
            load_checkpoint(net, checkpoint)
            trained = True
    elif accelerator is not None:
        from .accel import resolve
        net = net.to(resolve(accelerator))
    where = next(net.parameters()).device
    T = net.meta["steps"]
    coding = net.meta.get("coding", coding)
    x, y = data.x_test[:batch].to(where), data.y_test[:batch].to(where)
    led = Ledger(net, samples=len(y))
    was = net.training
    net.train(not trained)
    with torch.no_grad(), led.phase("forward"):
        forward(net, x, coding=coding, steps=T, seed=seed)
    net.train(was)
    out = {"network": net.meta.get("recipe", {}).get("name"), "coding": coding, "steps": T, "batch": len(y),
           "inference": cost_report(led, periphery=periphery, coprocessor=coprocessor, rule=rule or "bp"),
           "inference_per_sample": cost_report(led.per_sample(), periphery=periphery, coprocessor=coprocessor,
                                               rule=rule or "bp")}
    if rule is not None:
        r = make_rule(rule, net, lr=lr, seed=seed)
        tled = Ledger(net, samples=len(y))
        with tled.active():
            r.step(data.x_train[:batch].to(where), data.y_train[:batch].to(where), coding=coding, steps=T, seed=seed)
            if rule == "verify":                     # the step trained in software; program the result
                with phase("update"):
                    r.finish()
        out["training"] = cost_report(tled, periphery=periphery, coprocessor=coprocessor, rule=rule)
    out["rule"] = rule
    return out


def plot_breakdown(result: dict, path, title: Optional[str] = None) -> Path:
    """Stacked bars by component: energy per inference per layer, and one training step's
    energy per layer and phase. Writes a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(COMPONENTS, ("#4c72b0", "#8172b2", "#c44e52", "#55a868", "#dd8452", "#937860",
                                   "#da8bc3", "#ccb974")))
    rep_i = result["inference"]
    rep_t = result.get("training")
    ncols = 2 if rep_t is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 4.8), squeeze=False)
    ax = axes[0][0]
    names = [layer["name"] for layer in rep_i.per_layer()]
    n = max(1, rep_i.samples)
    bottom = [0.0] * len(names)
    for comp in COMPONENTS:
        vals = [rep_i.energy("forward", comp, u) / n * 1e12 for u in names]
        if any(vals):
            ax.bar(range(len(names)), vals, bottom=bottom, color=colors[comp], label=comp)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("energy per inference (pJ)")
    ax.set_title(f"inference: {rep_i.energy_j / n * 1e9:.3g} nJ/sample, "
                 f"digital {100 * rep_i.digital_energy_j / max(rep_i.energy_j, 1e-300):.1f} %", fontsize=9)
    ax.legend(fontsize=7)
    if rep_t is not None:
        ax = axes[0][1]
        width = 0.27
        top = 0.0
        for k, ph in enumerate(PHASES):
            bottom = [0.0] * len(names)
            for comp in COMPONENTS:
                vals = [rep_t.energy(ph, comp, u) * 1e9 for u in names]
                if any(vals):
                    ax.bar([i + (k - 1) * width for i in range(len(names))], vals, width, bottom=bottom,
                           color=colors[comp], edgecolor="black" if ph == "update" else "none", linewidth=0.4,
                           hatch=("", "//", "..")[k], label=comp if k == 0 else None)
                    bottom = [b + v for b, v in zip(bottom, vals)]
            top = max([top] + bottom)
        ax.set_ylim(0, 1.05 * top if top > 0 else 1)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("energy of one training step (nJ)")
        ax.set_title(f"training step ({rep_t.rule}, batch {rep_t.samples}): bars forward | backward (//) | "
                     f"update (..)\n{rep_t.energy_j * 1e6:.3g} uJ, {rep_t.latency_s * 1e3:.3g} ms", fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in COMPONENTS if rep_t.energy(component=c) > 0]
        ax.legend(handles, [c for c in COMPONENTS if rep_t.energy(component=c) > 0], fontsize=7)
    fig.suptitle(title or f"{result.get('network')} ({result.get('coding')}, T = {result.get('steps')})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig(fig, path, dpi=120)
    plt.close(fig)
    return path
