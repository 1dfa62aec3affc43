r"""Pricing: a ledger's events turned into energy, latency and area with the cost cards.

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

A learning rule says how its backward and update phases use the hardware through its
:class:`Schedule` (``parallel``: DFA-like, every layer at once; ``cell_state_words``: the
digital state per cell its controller keeps, priced as area).

May import: :mod:`neurosal.cost.cards`, :mod:`neurosal.cost.ledger`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .cards import PeripheryCost, device_energies, load_coprocessor, load_periphery
from .ledger import PHASES

__all__ = ["COMPONENTS", "ANALOG", "DIGITAL", "Schedule", "CostReport", "cost_report"]

COMPONENTS = ("array", "dac", "adc", "neuron", "write", "verify", "digital", "coprocessor")
ANALOG = ("array", "dac", "adc", "neuron", "write", "verify")
DIGITAL = ("digital", "coprocessor")


@dataclass(frozen=True)
class Schedule:
    """What pricing needs to know of a learning rule (its ``schedule`` attribute)."""

    name: str = "bp"
    parallel: bool = False        # every layer receives its error and is written at once (DFA)
    cell_state_words: int = 0     # digital words per cell its write controller keeps (hybrid: 5)


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


def cost_report(ledger, *, periphery="isaac-32nm", coprocessor="puma-vfu-32nm",
                rule: Optional[Schedule] = None) -> CostReport:
    """Turn a :class:`~neurosal.cost.ledger.Ledger` into energy, latency and area (see the
    module docstring). ``rule``: the learning rule's :class:`Schedule` (a rule's ``schedule``):
    whether it updates (and gives errors to) every layer at once, and the digital state it
    keeps per cell; ``None``: an inference-only report, priced as layer-by-layer backprop."""
    rule = Schedule() if rule is None else rule
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
            if rule.cell_state_words:         # e.g. hybrid: buffer, two device estimates, two write thresholds
                a += rule.cell_state_words * xb.rows * xb.cols * per.digital.buffer_bits * \
                    per.digital.buffer_bit_area_mm2
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
                                   + c.get("buffer_accesses", 0) * per.digital.buffer_pj
                                   + c.get("pulse_bits", 0) * per.digital.stochastic_bit_pj) * 1e-12
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
            latency[ph] = max(t for t, _ in ts) if rule.parallel else sum(t for t, _ in ts)
        else:                                              # forward: pipelined layers
            i = max(range(len(ts)), key=lambda k: ts[k][0])
            latency[ph] = ts[i][0] + sum(min(v, t) for k, (t, v) in enumerate(ts) if k != i)
    if any(u.kind == "attention" for u in ledger.units):
        area["coprocessor"] = cp.area_mm2
    meta = {"periphery": per.name, "coprocessor": cp.name, "technology_nm": per.technology_nm}
    return CostReport(rows=rows, area=area, latency=latency, samples=ledger.samples, rule=rule.name, meta=meta)
