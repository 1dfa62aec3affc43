r"""Device model cards (``neurosal/cards/devices/*.toml``): what a device is, as data. SI units: siemens, volts,
seconds.

A card names its response family (``model``, one of the registered families of
:mod:`neurosal.devices.families`) and gives the family's curve parameters (each family declares
its own fields), the bounds and number of levels, and the nonidealities of any device: noise
(cycle-to-cycle, read), device-to-device variation, stuck-at faults, drift, and the pulse and
read conditions the cost model prices. :func:`load_device` reads a shipped card by name or a
card file by path and validates every field (a :class:`~neurosal.cards.CardError` names the
file, the field and what is allowed).

May import: :mod:`neurosal.cards`, :mod:`neurosal.devices.family` (and its families).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..cards import CardError, from_dict, list_cards, load_toml, resolve_card, spec, to_dict
from . import families as _families  # noqa: F401  (registers every family)
from .family import family_class, family_names, family_params

__all__ = ["DeviceCard", "Noise", "Variation", "Faults", "Drift", "Pulse", "Energy", "MODELS", "load_device",
           "list_devices"]

#: the registered response families, the ideal reference first
MODELS = family_names()


@dataclass(frozen=True)
class Noise:
    """Stochastic nonidealities, as fractions of the conductance range ``Gmax - Gmin``."""

    c2c: float = spec(0.0, lo=0.0, hi=1.0, doc="cycle-to-cycle sigma per pulse (scales with sqrt|n|)")
    read: float = spec(0.0, lo=0.0, hi=1.0, doc="read-noise sigma per device per read")


@dataclass(frozen=True)
class Variation:
    """Device-to-device variation, relative sigmas drawn once per cell."""

    bounds: float = spec(0.0, lo=0.0, hi=0.5, doc="relative sigma of Gmin and Gmax")
    step: float = spec(0.0, lo=0.0, hi=0.5, doc="relative sigma of the pulses per full swing")
    nonlinearity: float = spec(0.0, lo=0.0, hi=0.5, doc="relative sigma of a (exponential) / gamma (power)")


@dataclass(frozen=True)
class Faults:
    """Stuck-at faults: fractions of cells stuck at Gmin and at Gmax."""

    stuck_min: float = spec(0.0, lo=0.0, hi=1.0)
    stuck_max: float = spec(0.0, lo=0.0, hi=1.0)


@dataclass(frozen=True)
class Drift:
    r"""Power-law conductance drift :math:`G(t) = G_{prog}((t - t_{prog})/t_0)^{-\nu}`."""

    nu: float = spec(0.0, lo=0.0, hi=1.0, doc="mean drift exponent")
    nu_std: float = spec(0.0, lo=0.0, hi=1.0, doc="device-to-device sigma of nu")
    t0: float = spec(1.0, lo=1e-12, hi=1e10, unit="s", doc="reference time after programming")


@dataclass(frozen=True)
class Pulse:
    """Programming and read conditions (for the cost model), as reported for the device."""

    v_up: float = spec(2.0, lo=-20.0, hi=20.0, unit="V")
    v_down: float = spec(-2.0, lo=-20.0, hi=20.0, unit="V")
    width_up: float = spec(1e-7, lo=0.0, lo_open=True, hi=1.0, unit="s")
    width_down: float = spec(1e-7, lo=0.0, lo_open=True, hi=1.0, unit="s")
    v_read: float = spec(0.2, lo=0.0, lo_open=True, hi=5.0, unit="V")


@dataclass(frozen=True)
class Energy:
    """Measured per-device energies (for the cost model); left out, they are derived from
    ``[pulse]``: V^2 x mean G x width per pulse, 2 V_read^2 x mean G x t_read per cell read."""

    write_pj: Optional[float] = spec(None, lo=0.0, hi=1e9, unit="pJ", doc="energy of one programming pulse")
    read_fj: Optional[float] = spec(None, lo=0.0, hi=1e9, unit="fJ", doc="energy of one cell (pair) read")
    source: str = spec("", doc="where the energies come from")


class _Card:
    """The derived figures and checks of a :class:`DeviceCard` (its fields are built below)."""

    @property
    def pmax(self) -> int:
        """Pulses for a full swing Gmin -> Gmax."""
        return self.levels - 1

    @property
    def g_range(self) -> float:
        return self.g_max - self.g_min

    @property
    def on_off(self) -> float:
        return self.g_max / self.g_min if self.g_min > 0 else math.inf

    def family(self):
        """The card's response family (a fresh instance; :class:`~neurosal.devices.Device` keeps one)."""
        return family_class(self.model)(self)

    def _validate(self, source) -> None:
        if not self.g_max > self.g_min:
            raise CardError(source, "g_max", f"Gmin >= Gmax ({self.g_min:g} >= {self.g_max:g} S); "
                            "g_max must be greater than g_min")
        if self.g_max - self.g_min < 1e-3 * self.g_max:
            raise CardError(source, "g_max", f"the range Gmax - Gmin = {self.g_max - self.g_min:g} S is below 1e-3 "
                            "of Gmax: on/off must be at least 1.001 for float32 conductances to resolve the range")
        if self.faults.stuck_min + self.faults.stuck_max > 1.0:
            raise CardError(source, "faults", "stuck_min + stuck_max must not exceed 1")
        m = self.model
        cls = family_class(m)
        own = tuple(cls.params)
        for f, _tp, _spec in family_params():
            if f not in own and getattr(self, f) is not None:
                raise CardError(source, f, f"not a parameter of model '{m}'; "
                                f"model '{m}' takes: {', '.join(own) if own else 'no curve parameters'}")
        cls.validate(self, source)
        self._check_curve(source)

    def _check_curve(self, source) -> None:
        """Backstop: the nominal curve, evaluated in float32 (what training uses), must be finite
        and monotone from Gmin to Gmax, or the card would turn into NaN during a run."""
        fam = self.family()
        n = fam.check_grid()
        kw = dict(g_min=self.g_min, g_max=self.g_max, pmax=self.pmax)
        kw.update(zip(("p_up", "p_down"), fam.nominal_shape()))
        up = fam.respond(torch.full_like(n, self.g_min), n, **kw)
        dn = fam.respond(torch.full_like(n, self.g_max), -n, **kw)
        mid = torch.linspace(self.g_min, self.g_max, 17, dtype=torch.float32, device="cpu")  # positions from any state
        one = torch.ones_like(mid)
        steps = torch.cat([fam.respond(mid, one, **kw), fam.respond(mid, -one, **kw)])
        ok = bool(torch.isfinite(up).all() and torch.isfinite(dn).all() and torch.isfinite(steps).all()
                  and (up.diff() >= 0).all() and (dn.diff() <= 0).all() and up[-1] > up[0] and dn[-1] < dn[0])
        if not ok:
            fields = "/".join(type(fam).params) or "levels"
            raise CardError(source, "model", f"the nominal '{self.model}' curve is not finite and monotone in "
                            f"float32 with these values (g_min, g_max, levels, {fields}); check them")

    def to_dict(self) -> dict:
        return to_dict(self)


_FIELDS = [
    ("name", str, spec(doc="card name")),
    ("model", str, spec(choices=MODELS, doc="pulse response family")),
    ("g_min", float, spec(lo=0.0, hi=1.0, unit="S", doc="minimum conductance")),
    ("g_max", float, spec(lo=1e-15, hi=1.0, unit="S", doc="maximum conductance (1 fS .. 1 S)")),
    ("levels", int, spec(lo=2, hi=1_000_000, doc="conductance states per full swing (Pmax = levels - 1 pulses)")),
    ("description", str, spec("")),
    ("source", str, spec("", doc="publication the values come from")),
    *family_params(),                                   # each family's curve parameters
    ("noise", Noise, dataclasses.field(default_factory=Noise)),
    ("variation", Variation, dataclasses.field(default_factory=Variation)),
    ("faults", Faults, dataclasses.field(default_factory=Faults)),
    ("drift", Drift, dataclasses.field(default_factory=Drift)),
    ("pulse", Pulse, dataclasses.field(default_factory=Pulse)),
    ("energy", Energy, dataclasses.field(default_factory=Energy)),
]

DeviceCard = dataclasses.make_dataclass(
    "DeviceCard", _FIELDS, bases=(_Card,), frozen=True,
    namespace={"__module__": __name__, "__doc__": """A device model card (``neurosal/cards/devices/*.toml``). SI units: siemens, volts, seconds.

    Fields: ``name``, ``model`` (the response family), ``g_min``, ``g_max``, ``levels``,
    ``description``, ``source``; the curve parameters the families declare (a field belongs to
    one family and is refused on a card of another); and the tables ``noise``, ``variation``,
    ``faults``, ``drift``, ``pulse``, ``energy``."""})


def load_device(name_or_path: str | Path | DeviceCard) -> DeviceCard:
    """Load a device card by shipped name (``'ag-a-si'``) or path to a TOML file."""
    if isinstance(name_or_path, DeviceCard):
        return name_or_path
    path = resolve_card(name_or_path, "devices")
    data = load_toml(path)
    try:
        return from_dict(DeviceCard, data, source=path)
    except CardError:
        raise
    except ValueError as exc:  # NL label out of table range etc.
        raise CardError(path, None, str(exc)) from None


def list_devices() -> list[str]:
    """Names of the device cards shipped with neurosal."""
    return list_cards("devices")
