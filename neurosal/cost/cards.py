r"""Cost cards: energy, latency and area of the crossbar periphery (:class:`PeripheryCost`,
``neurosal/cards/devices/periphery/*.toml``) and of the digital co-processor (:class:`CoprocessorCost`,
``neurosal/cards/devices/coprocessor/*.toml``), each section with its source; and the per-device read and
write energies of a device card (:func:`device_energies`): given in the card's ``[energy]``
table, or derived from its ``[pulse]`` conditions, :math:`E_{write} = V^2\,\bar G\,t_{pulse}`
per pulse and :math:`E_{read} = 2\,V_{read}^2\,\bar G\,t_{read}` per differential cell, with
:math:`\bar G = (G_{min} + G_{max})/2`.

May import: :mod:`neurosal.cards`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..cards import from_dict, list_cards, load_toml, resolve_card, spec, to_dict

__all__ = ["PeripheryCost", "CoprocessorCost", "ArrayCost", "ADCCost", "DACCost", "NeuronCost", "DigitalCost",
           "load_periphery", "load_coprocessor", "list_periphery", "list_coprocessors", "device_energies"]

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
    stochastic_bit_pj: float = spec(0.066, lo=0, unit="pJ", doc="one slot of a stochastic pulse train at a row or "
                                    "column (a random draw compared with the input's probability)")
    buffer_bit_area_mm2: float = spec(1.64e-7, lo=0, unit="mm2")
    area_mm2: float = spec(0.004, lo=0, unit="mm2", doc="digital unit per layer")
    source: str = spec("")


@dataclass(frozen=True)
class PeripheryCost:
    """Cost card of the array periphery (``neurosal/cards/devices/periphery/*.toml``)."""

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
    """Cost card of the digital co-processor (``neurosal/cards/devices/coprocessor/*.toml``)."""

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
    """A periphery cost card by name (``neurosal/cards/devices/periphery/``) or path."""
    return name_or_path if isinstance(name_or_path, PeripheryCost) else _load(PeripheryCost, name_or_path, "periphery")


def load_coprocessor(name_or_path="puma-vfu-32nm") -> CoprocessorCost:
    """A co-processor cost card by name (``neurosal/cards/devices/coprocessor/``) or path."""
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
