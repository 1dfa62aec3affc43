r"""Analog synapse devices: pulse response families and nonidealities.

A device holds a conductance :math:`G \in [G_\min, G_\max]` (siemens) per cell. It
changes only through programming pulses; how much one pulse changes it depends on the
present conductance and on the response family named by the card's ``model``. All
families are written on the normalized conductance :math:`u = (G - G_\min)/(G_\max -
G_\min) \in [0, 1]` and a pulse axis of :math:`P_\max = \text{levels} - 1` pulses for a
full swing.

Families (``n`` pulses, :math:`n \ge 0`; "up" = potentiation, "down" = depression):

``linear``
    :math:`u' = \mathrm{clip}(u \pm n/P_\max, 0, 1)`: the ideal reference.

``soft-bounds``
    Step shrinks linearly toward the bound it moves to,
    :math:`\Delta u_\uparrow = \delta(1-u)`, :math:`\Delta u_\downarrow = -\delta u` with
    :math:`\delta = 2/P_\max` (the step at mid-range is :math:`1/P_\max`). ``n`` pulses in
    closed form: :math:`u' = 1 - (1-u)(1-\delta)^n` and :math:`u' = u(1-\delta)^n`.

``exponential`` (DNN+NeuroSim form)
    On the pulse axis :math:`x = p/P_\max \in [0, 1]`, with :math:`a = A/P_\max`,
    potentiation :math:`u(x) = b_\uparrow(1 - e^{-x/a_\uparrow})`,
    :math:`b = 1/(1 - e^{-1/a})`, and depression
    :math:`u(x) = 1 - b_\downarrow(1 - e^{(x-1)/a_\downarrow})`. ``n`` pulses move
    :math:`x` by :math:`\pm n/P_\max` (exact inversion; no per-pulse loop). Cards give
    ``a_up``/``a_down`` directly or the NeuroSim nonlinearity labels ``nl_up``/``nl_down``,
    converted by :func:`nl_to_a`.

``power`` (Fusi–Abbott)
    :math:`\Delta u_\uparrow = \alpha_\uparrow(1-u)^{\gamma_\uparrow}`,
    :math:`\Delta u_\downarrow = -\alpha_\downarrow u^{\gamma_\downarrow}`,
    :math:`\alpha = 2^\gamma/P_\max` (step :math:`1/P_\max` at mid-range); iterated pulse
    by pulse, vectorized over cells.

``table``
    A measured curve: the conductance after each pulse, from :math:`G_\min` up
    (``potentiation``) and from :math:`G_\max` down (``depression``); the pulse axis is
    interpolated linearly, so non-integer positions (after noise) are handled.

Nonidealities (any family), all drawn from one seeded generator, vectorized over the
whole array:

* device-to-device variation (drawn once per cell): bounds
  :math:`G_{\min,\max}(1 + \sigma_b\xi)`, pulses per swing :math:`P_\max(1+\sigma_s\xi)`,
  nonlinearity :math:`a(1+\sigma_a\xi)`, :math:`\xi \sim N(0,1)`;
* cycle-to-cycle noise: after :math:`n` pulses
  :math:`G \mathrel{+}= \sigma_{c2c}(G_\max-G_\min)\sqrt{|n|}\,\xi`, drawn only for the
  cells that were pulsed;
* read noise: every read sees :math:`G + \sigma_{read}(G_\max-G_\min)\xi`;
* finite levels: ``levels`` pulse states per swing (the pulse axis is discrete);
* drift/retention: :math:`G(t) = G_{prog}\,((t-t_{prog})/t_0)^{-\nu}` for
  :math:`t - t_{prog} > t_0`, :math:`\nu \sim N(\nu_0, \sigma_\nu)` per cell;
* stuck-at faults: a fraction of cells stuck at :math:`G_\min`, another at
  :math:`G_\max`; pulses do nothing to them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .accel import randn
from .cards import CardError, from_dict, load_toml, list_cards, resolve_card, spec, to_dict

__all__ = [
    "PulseError", "check_pulses", "MODELS", "DeviceCard", "Noise", "Variation", "Faults", "Drift", "Pulse", "Device",
    "DeviceState",
    "load_device", "list_devices", "nl_to_a", "a_to_nl",
]

MODELS = ("linear", "soft-bounds", "exponential", "power", "table")


class PulseError(ValueError):
    """Pulse counts that no chip can apply (NaN or infinite): nothing was written."""


def check_pulses(n: torch.Tensor, what: str) -> None:
    """Raise :class:`PulseError` naming ``what`` unless every pulse count in ``n`` is finite.
    Called before any state changes, so that a bad step leaves the chip exactly as it was."""
    bad = ~torch.isfinite(n)
    if bool(bad.any()):
        k = int(bad.sum())
        raise PulseError(f"{what}: {k} of {n.numel()} pulse counts are not finite (NaN or inf; a NaN or infinite "
                         "gradient, learning rate or card value upstream); nothing was written")


# --------------------------------------------------------------------------- NL <-> A
# DNN+NeuroSim labels a device's nonlinearity with a number NL (0.01 ... 9) and tabulates
# the normalized A of the exponential model for each label (MLP_NeuroSim V3.0,
# documents/Nonlinearity-NormA.htm). The table is reproduced to < 1 % by
#     NL = K * max_x [u(x) - x],   u(x) = (1 - exp(-x/a)) / (1 - exp(-1/a)),
# i.e. NL is proportional to the largest deviation of the normalized curve from a
# straight line, with K = 10.10 (fit over the table). tests/test_devices.py pins the
# published points (0.01 -> 126.269, 1.51 -> 0.8195, 2.4 -> 0.499, 4.88 -> 0.200, ...).
_NL_K = 10.10
_X = np.linspace(0.0, 1.0, 20001)


def _max_dev(a: float) -> float:
    u = np.expm1(-_X / a) / np.expm1(-1.0 / a)
    return float(np.max(u - _X))


def a_to_nl(a: float) -> float:
    """NeuroSim nonlinearity label of the exponential model with normalized ``a = A/Pmax``."""
    if not a > 0:
        raise ValueError(f"a must be > 0, got {a}")
    if math.isinf(a):
        return 0.0
    return _NL_K * _max_dev(a)


@functools.lru_cache(maxsize=256)
def nl_to_a(nl: float) -> float:
    """Normalized ``A/Pmax`` of the exponential model for a NeuroSim nonlinearity label.

    ``|nl|`` is used (NeuroSim writes depression labels negative). ``nl = 0`` gives
    ``inf`` (linear). Valid labels: ``0 <= |nl| <= 9`` as in NeuroSim's table.
    """
    from scipy.optimize import brentq

    nl = abs(float(nl))
    if nl == 0:
        return math.inf
    if nl > 9.0:
        raise ValueError(f"nonlinearity label {nl} outside NeuroSim's table range 0..9")
    # a_to_nl is monotone decreasing in a; bracket it.
    return float(brentq(lambda a: a_to_nl(a) - nl, 1e-3, 1e4, xtol=1e-10, rtol=1e-10))


# --------------------------------------------------------------------------- cards
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


@dataclass(frozen=True)
class DeviceCard:
    """A device model card (``devices/*.toml``). SI units: siemens, volts, seconds."""

    name: str = spec(doc="card name")
    model: str = spec(choices=MODELS, doc="pulse response family")
    g_min: float = spec(lo=0.0, hi=1.0, unit="S", doc="minimum conductance")
    g_max: float = spec(lo=1e-15, hi=1.0, unit="S", doc="maximum conductance (1 fS .. 1 S)")
    levels: int = spec(lo=2, hi=1_000_000, doc="conductance states per full swing (Pmax = levels - 1 pulses)")
    description: str = spec("")
    source: str = spec("", doc="publication the values come from")
    a_up: Optional[float] = spec(None, lo=1e-3, hi=1e6, doc="exponential: A/Pmax, potentiation "
                                 "(NeuroSim's NL 9 is 0.04)")
    a_down: Optional[float] = spec(None, lo=1e-3, hi=1e6, doc="exponential: A/Pmax, depression")
    nl_up: Optional[float] = spec(None, lo=-9.0, hi=9.0, doc="exponential: NeuroSim NL label, potentiation")
    nl_down: Optional[float] = spec(None, lo=-9.0, hi=9.0, doc="exponential: NeuroSim NL label, depression")
    gamma_up: Optional[float] = spec(None, lo=0.0, hi=10.0, doc="power: exponent, potentiation")
    gamma_down: Optional[float] = spec(None, lo=0.0, hi=10.0, doc="power: exponent, depression")
    potentiation: Optional[tuple[float, ...]] = spec(None, lo=0.0, hi=1.0, unit="S",
                                                     doc="table: G after each pulse from Gmin")
    depression: Optional[tuple[float, ...]] = spec(None, lo=0.0, hi=1.0, unit="S",
                                                   doc="table: G after each pulse from Gmax")
    noise: Noise = dataclasses.field(default_factory=Noise)
    variation: Variation = dataclasses.field(default_factory=Variation)
    faults: Faults = dataclasses.field(default_factory=Faults)
    drift: Drift = dataclasses.field(default_factory=Drift)
    pulse: Pulse = dataclasses.field(default_factory=Pulse)
    energy: Energy = dataclasses.field(default_factory=Energy)

    # -- derived -----------------------------------------------------------------
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

    def exp_a(self) -> tuple[float, float]:
        """(a_up, a_down) of the exponential model, normalized to Pmax (``inf`` = linear)."""
        up = self.a_up if self.a_up is not None else nl_to_a(self.nl_up or 0.0)
        down = self.a_down if self.a_down is not None else nl_to_a(self.nl_down or 0.0)
        return up, down

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
        exp_fields = ("a_up", "a_down", "nl_up", "nl_down")
        pow_fields = ("gamma_up", "gamma_down")
        tab_fields = ("potentiation", "depression")
        own = {"exponential": exp_fields, "power": pow_fields, "table": tab_fields}.get(m, ())
        for f in exp_fields + pow_fields + tab_fields:
            if f not in own and getattr(self, f) is not None:
                raise CardError(source, f, f"not a parameter of model '{m}'; "
                                f"model '{m}' takes: {', '.join(own) if own else 'no curve parameters'}")
        if m == "exponential":
            for d in ("up", "down"):
                if getattr(self, f"a_{d}") is not None and getattr(self, f"nl_{d}") is not None:
                    raise CardError(source, f"nl_{d}", f"give either a_{d} or nl_{d}, not both")
        if m == "soft-bounds" and self.levels < 4:
            raise CardError(source, "levels", "soft-bounds needs levels >= 4 (step 2/Pmax must be < 1)")
        if m == "table":
            for f, inc in (("potentiation", True), ("depression", False)):
                t = getattr(self, f)
                if t is None or len(t) < 2:
                    raise CardError(source, f, "model 'table' needs a list of at least 2 conductances")
                arr = np.asarray(t)
                d = np.diff(arr)
                if (inc and not np.all(d > 0)) or (not inc and not np.all(d < 0)):
                    raise CardError(source, f, f"must be strictly {'increasing' if inc else 'decreasing'} "
                                    "(conductance after each pulse)")
            p, dpr = self.potentiation, self.depression
            if not (math.isclose(p[0], self.g_min, rel_tol=1e-6) and math.isclose(p[-1], self.g_max, rel_tol=1e-6)
                    and math.isclose(dpr[0], self.g_max, rel_tol=1e-6)
                    and math.isclose(dpr[-1], self.g_min, rel_tol=1e-6)):
                raise CardError(source, "potentiation", "table curves must run from g_min to g_max "
                                "(potentiation) and from g_max to g_min (depression)")

        self._check_curve(source)

    def _check_curve(self, source) -> None:
        """Backstop: the nominal curve, evaluated in float32 (what training uses), must be finite
        and monotone from Gmin to Gmax, or the card would turn into NaN during a run."""
        dev = Device(self)
        n = torch.linspace(0, self.pmax, min(self.pmax, 256) + 1, dtype=torch.float32, device="cpu") \
            if self.model != "power" \
            else torch.arange(min(self.pmax, 64) + 1, dtype=torch.float32, device="cpu")
        kw = dict(g_min=self.g_min, g_max=self.g_max, pmax=self.pmax)
        kw.update(zip(("p_up", "p_down"), dev._nominal_shape()))
        up = dev.respond(torch.full_like(n, self.g_min), n, **kw)
        dn = dev.respond(torch.full_like(n, self.g_max), -n, **kw)
        mid = torch.linspace(self.g_min, self.g_max, 17, dtype=torch.float32, device="cpu")  # positions from any state
        one = torch.ones_like(mid)
        steps = torch.cat([dev.respond(mid, one, **kw), dev.respond(mid, -one, **kw)])
        ok = bool(torch.isfinite(up).all() and torch.isfinite(dn).all() and torch.isfinite(steps).all()
                  and (up.diff() >= 0).all() and (dn.diff() <= 0).all() and up[-1] > up[0] and dn[-1] < dn[0])
        if not ok:
            fields = {"exponential": "a_up/a_down/nl_up/nl_down", "power": "gamma_up/gamma_down",
                      "table": "potentiation/depression"}.get(self.model, "levels")
            raise CardError(source, "model", f"the nominal '{self.model}' curve is not finite and monotone in "
                            f"float32 with these values (g_min, g_max, levels, {fields}); check them")

    def to_dict(self) -> dict:
        return to_dict(self)


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


# --------------------------------------------------------------------------- state
@dataclass
class DeviceState:
    """Per-cell state of an array of devices (all tensors share ``g.shape``).

    Parameters that do not vary from cell to cell are stored as Python floats, so that
    an array without device-to-device variation costs no memory for them.
    """

    g: torch.Tensor                  # conductance (S)
    g_min: torch.Tensor | float      # per-cell bounds (S)
    g_max: torch.Tensor | float
    pmax: torch.Tensor | float       # pulses per full swing
    p_up: torch.Tensor | float       # shape parameter up (a for exponential, gamma for power)
    p_down: torch.Tensor | float
    stuck: Optional[torch.Tensor]    # bool mask, or None
    nu: torch.Tensor | float         # drift exponent
    t_prog: Optional[torch.Tensor]   # time of last programming (s), only when drift is on

    def to(self, device) -> "DeviceState":
        conv = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        return DeviceState(**{k: conv(getattr(self, k)) for k in self.__dataclass_fields__})

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _take(p, idx):
    return p.reshape(-1)[idx] if isinstance(p, torch.Tensor) else p


def _exp_consts(shape, like: torch.Tensor):
    """(a, c, log1p(c)) of the exponential curve with normalized ``a`` (a number, a tensor, or
    the tuple itself), ``c = 1/expm1(1/a) = b - 1``; numbers stay numbers."""
    if isinstance(shape, tuple):
        return shape
    if isinstance(shape, torch.Tensor):
        a = shape.to(like.dtype) if like is not None else shape
        c = 1.0 / torch.expm1(1.0 / a)
        return a, c, torch.log1p(c)
    a = float(shape)
    c = 1.0 / math.expm1(1.0 / a) if 1.0 / a < 700 else 0.0
    return a, c, math.log1p(c)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) for increasing ``xp``; clamps at the ends."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[i - 1], xp[i]
    f0, f1 = fp[i - 1], fp[i]
    t = (x - x0) / (x1 - x0)
    return f0 + t * (f1 - f0)


MAX_CURVE_PULSES = 100_000


class Device:
    """A device model: the card plus vectorized pulse response, reads and nonidealities.

    Stateless apart from the card: the per-cell state lives in a :class:`DeviceState`
    that :meth:`init_state` creates; :meth:`pulse` updates it in place.
    """

    def __init__(self, card: DeviceCard | str | Path):
        self.card = load_device(card)
        c = self.card
        if c.model == "exponential":
            self._a = c.exp_a()
        if c.model == "table":
            p = np.asarray(c.potentiation, dtype=np.float64)
            d = np.asarray(c.depression, dtype=np.float64)
            self._tab_up = torch.tensor((p - c.g_min) / c.g_range, device="cpu")      # travel up from Gmin
            self._tab_dn_v = torch.tensor((c.g_max - d) / c.g_range, device="cpu")    # travel down from Gmax
            self._n_up, self._n_dn = len(p) - 1, len(d) - 1

    def __repr__(self) -> str:
        return f"Device({self.card.name!r}, model={self.card.model!r}, levels={self.card.levels})"

    # -- state -------------------------------------------------------------------
    def init_state(self, shape, *, generator: torch.Generator | None = None, u0: float | torch.Tensor = 0.0,
                   dtype=torch.float32, device=None) -> DeviceState:
        """A fresh array of cells at normalized conductance ``u0`` with its D2D draws.

        Draw order is fixed (bounds, step, nonlinearity, drift, faults), so the same
        generator seed gives the same chip.
        """
        c = self.card
        shape = tuple(shape)
        gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
        v = c.variation

        def draw(sigma, base, lo):
            if sigma == 0:
                return float(base)
            z = torch.randn(shape, generator=gen, dtype=torch.float64, device=gen.device)
            return (base * (1 + sigma * z)).clamp_min(lo).to(dtype)

        g_min = draw(v.bounds, c.g_min, 0.0)
        g_max = draw(v.bounds, c.g_max, 0.0)
        if isinstance(g_max, torch.Tensor):  # keep every cell a valid device
            g_max = torch.maximum(g_max, (g_min if isinstance(g_min, torch.Tensor) else torch.full_like(g_max, g_min))
                                  * 1.001 + 1e-15)
        pmax = draw(v.step, c.pmax, 1.0)
        if c.model == "exponential":
            au, ad = self._a
            p_up = draw(v.nonlinearity, au, 1e-3) if math.isfinite(au) else math.inf
            p_dn = draw(v.nonlinearity, ad, 1e-3) if math.isfinite(ad) else math.inf
        elif c.model == "power":
            p_up = draw(v.nonlinearity, c.gamma_up if c.gamma_up is not None else 1.0, 0.0)
            p_dn = draw(v.nonlinearity, c.gamma_down if c.gamma_down is not None else 1.0, 0.0)
        else:
            p_up = p_dn = 0.0
        nu = draw(c.drift.nu_std, c.drift.nu, 0.0) if c.drift.nu > 0 else 0.0
        stuck = None
        if c.faults.stuck_min > 0 or c.faults.stuck_max > 0:
            r = torch.rand(shape, generator=gen, dtype=torch.float64, device=gen.device)
            lo_mask = r < c.faults.stuck_min
            hi_mask = (r >= c.faults.stuck_min) & (r < c.faults.stuck_min + c.faults.stuck_max)
            stuck = lo_mask | hi_mask
        u0t = torch.as_tensor(u0, dtype=dtype, device=gen.device).expand(shape) if not isinstance(u0, torch.Tensor) \
            else u0.to(gen.device, dtype)
        gmin_t = torch.as_tensor(g_min, dtype=dtype, device=gen.device)
        gmax_t = torch.as_tensor(g_max, dtype=dtype, device=gen.device)
        g = (gmin_t + u0t.clamp(0, 1) * (gmax_t - gmin_t)).expand(shape).clone()
        if stuck is not None:
            g = torch.where(lo_mask, gmin_t.expand(shape), g)
            g = torch.where(hi_mask, gmax_t.expand(shape), g)
        t_prog = torch.zeros(shape, dtype=torch.float64, device=gen.device) if c.drift.nu > 0 else None
        st = DeviceState(g=g.contiguous(), g_min=g_min, g_max=g_max, pmax=pmax, p_up=p_up, p_down=p_dn,
                         stuck=stuck, nu=nu, t_prog=t_prog)
        return st.to(device) if device is not None else st

    # -- the curves ------------------------------------------------------------------
    # Every family is written on the distance travelled from the bound a pulse moves away
    # from: v = u for potentiation (from Gmin), v = 1 - u for depression (from Gmax). A
    # curve is the travel v = F(q) after q pulses from that bound and its inverse, the
    # position q = F^-1(v); n pulses from u are F(F^-1(v) + n). "shape" is a (exponential) or
    # gamma (power) of the direction; pmax the pulses per full swing (per cell or nominal).
    def _travel(self, q, pmax, shape, up: bool):
        """Travel v in [0, 1] after ``q`` pulses from the start of the up/down curve."""
        m = self.card.model
        if m == "linear" or (m == "exponential" and isinstance(shape, float) and math.isinf(shape)):
            return (q / pmax).clamp(0, 1)
        if m == "soft-bounds":
            # (1 - delta)^q with delta = 2/Pmax_nominal; a cell's own Pmax stretches its pulse axis
            return -torch.expm1(q.clamp_min(0) * (math.log1p(-2.0 / self.card.pmax) * (self.card.pmax / pmax)))
        if m == "exponential":
            a, c, _ = _exp_consts(shape, q)
            x = (q / pmax).clamp(0.0, 1.0)
            return (-(1 + c) * torch.expm1(-x / a)).clamp(0, 1)
        if m == "table":
            tab, axis, n_tab = self._table(up, q)
            pos = (q * (n_tab / pmax)).clamp(0, n_tab)
            return _interp(pos, axis, tab)
        raise AssertionError(f"no closed-form curve for model {m!r}")

    def _table(self, up: bool, like: torch.Tensor):
        """A table card's curve (travel, pulse axis, intervals) on ``like``'s device and dtype:
        the card keeps its CPU copy, each device gets its own once (no copy per pulse)."""
        key = (up, like.device, like.dtype)
        cache = self.__dict__.setdefault("_tables", {})
        hit = cache.get(key)
        if hit is None:
            tab, n_tab = (self._tab_up, self._n_up) if up else (self._tab_dn_v, self._n_dn)
            hit = cache[key] = (tab.to(like.device, like.dtype),
                                torch.arange(n_tab + 1, dtype=like.dtype, device=like.device), n_tab)
        return hit

    def _position(self, v, pmax, shape, up: bool):
        """Pulses from the start of the up/down curve to travel ``v`` (inverse of :meth:`_travel`)."""
        m = self.card.model
        v = v.clamp(0, 1)
        if m == "linear" or (m == "exponential" and isinstance(shape, float) and math.isinf(shape)):
            return v * pmax
        if m == "soft-bounds":
            return torch.log1p(-v) / (math.log1p(-2.0 / self.card.pmax) * (self.card.pmax / pmax))
        if m == "exponential":
            # c = b - 1 = 1/expm1(1/a) keeps the inversion exact at the flat end of the curve
            a, c, l1c = _exp_consts(shape, v)
            return (-a * (torch.log(c + (1 - v)) - l1c)).clamp(0.0, 1.0) * pmax
        if m == "table":
            tab, axis, n_tab = self._table(up, v)
            pos = _interp(v, tab, axis)
            return pos * (pmax / n_tab)
        raise AssertionError(f"no closed-form curve for model {m!r}")

    def _move(self, u, n, pmax, shape, up: bool, k_max: Optional[int] = None):
        """Normalized conductance after ``n >= 0`` pulses up (``up``) or down from ``u``
        (``k_max``: a bound on ``n`` known without reading it, for the power law's loop)."""
        v = u if up else 1 - u
        if self.card.model == "power":
            v = self._power(v, n, pmax, shape, k_max)
        else:
            v = self._travel(self._position(v, pmax, shape, up) + n, pmax, shape, up)
        return v if up else 1 - v

    def _power(self, v, n, pmax, gamma, k_max: Optional[int] = None):
        """Fusi-Abbott steps on the travel: v += alpha (1 - v)^gamma per pulse. The pulses act one
        after another (no closed form); the loop runs to the largest count, read back on a CPU
        (free there) or given as ``k_max`` (no read-back on an accelerator)."""
        gamma_t = torch.as_tensor(gamma, dtype=v.dtype, device=v.device)
        alpha = torch.pow(torch.tensor(2.0, dtype=v.dtype, device=v.device), gamma_t) / pmax
        if k_max is None:
            k_max = int(torch.ceil(n.max())) if n.numel() else 0
        for k in range(k_max):
            frac = (n - k).clamp(0, 1)  # a fractional last pulse (scaled pulse axis) counts partly
            v = (v + frac * alpha * (1 - v).clamp_min(0) ** gamma_t).clamp(0, 1)
        return v

    def _geometric_move(self, v, n, up, pmax, a_up, a_down):
        r"""Travel after ``n`` pulses from travel ``v``, direction ``up`` per element, for the
        families where a pulse moves a fixed fraction of the distance to an asymptote :math:`b`:
        :math:`v_n = \min(b - (b - v) r^n, 1)` (exponential: :math:`b = 1/(1 - e^{-1/a})`,
        :math:`r = e^{-1/(a P_{max})}`, the same curve as :meth:`_travel`; soft-bounds:
        :math:`b = 1`, :math:`r = 1 - 2/P_{max}`), and :math:`\min(v + n/P_{max}, 1)` (linear).
        ``pmax``, ``a_up``, ``a_down``: numbers or per-element tensors."""
        m = self.card.model
        if m == "soft-bounds":
            return 1 - (1 - v) * torch.exp(n * (math.log1p(-2.0 / self.card.pmax) * (self.card.pmax / pmax)))
        if m == "linear" or all(not isinstance(a, torch.Tensor) and math.isinf(a) for a in (a_up, a_down)):
            return (v + n / pmax).clamp(max=1.0)
        if not isinstance(a_up, torch.Tensor) and not isinstance(a_down, torch.Tensor) \
                and not (math.isinf(a_up) or math.isinf(a_down)):
            # the card's values (no variation of the shape): constants, no per-cell tensors
            b_up, b_dn = 1 + 1 / math.expm1(1 / a_up), 1 + 1 / math.expm1(1 / a_down)
            if a_up == a_down:
                return (b_up - (b_up - v) * torch.exp(n * (-1.0 / a_up) / pmax)).clamp(max=1.0)
            upf = up.to(v.dtype)
            b = b_dn + (b_up - b_dn) * upf
            inv_a = 1.0 / a_down + (1.0 / a_up - 1.0 / a_down) * upf
            return (b - (b - v) * torch.exp(-n * inv_a / pmax)).clamp(max=1.0)
        t = lambda z: z if isinstance(z, torch.Tensor) else torch.tensor(float(z), dtype=v.dtype,  # noqa: E731
                                                                           device=v.device)
        a = torch.where(up, t(a_up), t(a_down))
        lin = torch.isinf(a)
        a = torch.where(lin, torch.ones_like(a), a)
        b = 1 + 1 / torch.expm1(1 / a)
        geo = (b - (b - v) * torch.exp(-n / (a * pmax))).clamp(max=1.0)
        return torch.where(lin, (v + n / pmax).clamp(max=1.0), geo)

    def _nominal_shape(self) -> tuple:
        """(up, down) curve shapes of the card's nominal device: a (exponential), gamma (power)."""
        c = self.card
        if c.model == "exponential":
            return self._a
        if c.model == "power":
            return (c.gamma_up if c.gamma_up is not None else 1.0, c.gamma_down if c.gamma_down is not None else 1.0)
        return (0.0, 0.0)

    def _geometric(self, shape, pmax: float):
        """(b, log r) when one pulse moves a fixed fraction of the distance to an asymptote,
        ``v' = b - (b - v) r`` (exponential: ``b = 1/(1 - e^{-1/a})``, ``r = e^{-1/(a Pmax)}``;
        soft-bounds: ``b = 1``, ``r = 1 - 2/Pmax``); ``None`` for the other families."""
        m = self.card.model
        if m == "soft-bounds":
            return 1.0, math.log1p(-2.0 / self.card.pmax) * (self.card.pmax / pmax)
        if m == "exponential" and math.isfinite(shape):
            a, c, _ = _exp_consts(shape, None)
            return 1.0 + c, -1.0 / (a * pmax)
        return None

    def nominal_step(self, v: torch.Tensor, up: bool) -> torch.Tensor:
        """Nominal travel of one pulse from travel ``v`` (0 at the bound), potentiating if ``up``."""
        c = self.card
        shape = self._nominal_shape()[0 if up else 1]
        geo = self._geometric(shape, c.pmax)
        if geo is not None:                       # b - (b - v) r - v = (b - v)(1 - r)
            b, log_r = geo
            dist = b - v
            # as nominal_pulses: no pulse when less than one is left before the bound
            to_end = torch.log1p(-(1 - v) / dist) / log_r
            step = (dist * -math.expm1(log_r)).minimum(1 - v)
            return torch.where(to_end + 1e-4 >= 1, step, torch.zeros_like(step))
        t = torch.full_like(v, up, dtype=torch.bool)
        return self.nominal_pulses(v, torch.ones_like(v), t, 1)[1] - v

    def nominal_pulses(self, v: torch.Tensor, dv: torch.Tensor, up: torch.Tensor, max_pulses: int):
        r"""What an open-loop controller plans from the card's *nominal* curve (no variation,
        no noise). ``v`` is a device's travel from the bound it moves away from (``u`` to
        potentiate, ``1 - u`` to depress; ``up``: bool tensor, the direction per element).
        Returns ``(n, v_new)``: the largest pulse count :math:`n \le` ``max_pulses`` whose
        nominal travel does not exceed ``dv >= 0`` (nor the bound), and the travel it then
        expects. Elementwise and in closed form: for the exponential and soft-bounds curves one
        pulse moves a fixed fraction :math:`1 - r` of the distance to the asymptote :math:`b`, so
        :math:`n = \lfloor \ln(1 - \Delta/(b - v)) / \ln r \rfloor` and
        :math:`v_n = b - (b - v) r^n`; linear: :math:`n = \lfloor \Delta P_{max} \rfloor`; table:
        through the positions on the curve; power: stepped pulse by pulse.
        """
        c = self.card
        su, sd = self._nominal_shape()
        target = (v + dv).clamp(max=1.0)
        gu, gd = self._geometric(su, c.pmax), self._geometric(sd, c.pmax)
        lin_u = c.model == "linear" or (c.model == "exponential" and math.isinf(su))
        lin_d = c.model == "linear" or (c.model == "exponential" and math.isinf(sd))
        if lin_u and lin_d:
            n = torch.floor((target - v) * c.pmax + 1e-4).clamp_(0, max_pulses)
            return n, (v + n / c.pmax).clamp(max=1.0)
        if gu is not None and gd is not None:
            t = lambda z: torch.tensor(z, dtype=v.dtype, device=v.device)  # noqa: E731
            b, log_r = (gu[0], gu[1]) if gu == gd else (torch.where(up, t(gu[0]), t(gd[0])),
                                                        torch.where(up, t(gu[1]), t(gd[1])))
            dist = b - v
            # a hair of tolerance: a request of exactly k steps is k pulses despite rounding
            n = torch.floor(torch.log1p(-(target - v) / dist) / log_r + 1e-4).clamp_(0, max_pulses)
            n = torch.where(torch.isfinite(n), n, torch.zeros_like(n))
            return n, (b - dist * torch.exp(n * log_r)).clamp(max=1.0)
        if c.model == "power":
            shape = torch.where(up, torch.as_tensor(su, dtype=v.dtype, device=v.device),
                                torch.as_tensor(sd, dtype=v.dtype, device=v.device))
            alpha = torch.pow(torch.tensor(2.0, dtype=v.dtype), shape) / c.pmax
            n = torch.zeros_like(v)
            vv = v.clone()
            tol = 1e-6 * alpha
            for _ in range(int(max_pulses)):
                nxt = (vv + alpha * (1 - vv).clamp_min(0) ** shape).clamp(0, 1)
                ok = (nxt <= target + tol) & (nxt > vv)
                vv = torch.where(ok, nxt, vv)
                n = n + ok.to(v.dtype)
            return n, vv

        def both(fn, x):          # table, or an exponential with one linear direction
            return torch.where(up, fn(x, c.pmax, su, True), fn(x, c.pmax, sd, False))
        q = both(self._position, v)
        n = torch.floor(both(self._position, target) - q + 1e-4).clamp_(0, max_pulses)
        n = torch.where(torch.isfinite(n), n, torch.zeros_like(n))
        return n, both(self._travel, q + n)

    # -- public API ----------------------------------------------------------------
    def respond(self, g, n, *, g_min, g_max, pmax, p_up, p_down):
        """Nominal response (no noise): conductance after ``n`` signed pulses, elementwise."""
        gmin = torch.as_tensor(g_min, dtype=g.dtype, device=g.device)
        rng = torch.as_tensor(g_max, dtype=g.dtype, device=g.device) - gmin
        u = ((g - gmin) / rng).clamp(0, 1)
        n = torch.as_tensor(n, dtype=g.dtype, device=g.device)
        pos = n > 0
        u_up = self._move(u, n.clamp_min(0), pmax, p_up, True)
        u_dn = self._move(u, (-n).clamp_min(0), pmax, p_down, False)
        u_new = torch.where(pos, u_up, torch.where(n < 0, u_dn, u))
        return gmin + u_new * rng

    def pulse(self, st: DeviceState, n: torch.Tensor, *, generator: torch.Generator | None = None,
              time: float | None = None, return_cells: bool = False):
        """Apply signed pulse counts ``n`` (same shape as the array) in place.

        Positive counts potentiate, negative depress. Only the pulsed cells are touched
        (the work and the noise draws scale with the number of pulsed cells). Stuck cells
        ignore their pulses. Returns the number of pulses applied (and, with
        ``return_cells``, the number of cells pulsed).
        """
        n = torch.as_tensor(n, device=st.g.device)
        if n.shape != st.g.shape:
            raise ValueError(f"pulse counts have shape {tuple(n.shape)}, the array is {tuple(st.g.shape)}")
        flat_n = n.reshape(-1)
        idx = (flat_n != 0).nonzero().squeeze(1)
        return self.pulse_at(st, idx, flat_n[idx], generator=generator, time=time, return_cells=return_cells)

    def pulse_at(self, st: DeviceState, idx: torch.Tensor, n: torch.Tensor, *,
                 generator: torch.Generator | None = None, time: float | None = None, return_cells: bool = False,
                 what: str = "device array", check: bool = True, max_count: Optional[int] = None):
        """Apply signed pulse counts ``n`` to the cells at flat indices ``idx`` (into ``st.g``,
        ascending), in place: the sparse form of :meth:`pulse`, with the same result and noise
        stream. Counts must be finite: :class:`PulseError` (naming ``what``) before anything
        changes (``check=False``: the caller has checked). Returns the pulses applied (and, with
        ``return_cells``, the cells pulsed) as 0-d int64 tensors on the array's device. Nothing
        here waits for an accelerator, except the power law's pulse-by-pulse loop when
        ``max_count`` (a bound on ``|n|``) is not given: it then reads the largest count back."""
        if idx.shape != n.shape or idx.dim() != 1:
            raise ValueError("pulse_at: idx and n must be 1-D tensors of equal length")
        nn = n.to(st.g.dtype)
        if check:
            check_pulses(nn, what)
        if idx.numel() == 0:
            z = torch.zeros((), dtype=torch.int64, device=st.g.device)
            return (z, z) if return_cells else z
        # stuck cells and zero counts take no pulse: their count becomes 0 and their state is kept
        keep = nn != 0
        if st.stuck is not None:
            keep &= ~st.stuck.reshape(-1)[idx]
        nn = torch.where(keep, nn, torch.zeros_like(nn))
        g_flat = st.g.view(-1)
        up = nn > 0
        cnt = nn.abs()
        gmin = _take(st.g_min, idx)
        gmin = gmin.to(nn.dtype) if isinstance(gmin, torch.Tensor) else gmin
        gmax = _take(st.g_max, idx)
        rng = (gmax.to(nn.dtype) if isinstance(gmax, torch.Tensor) else gmax) - gmin
        u = ((g_flat[idx] - gmin) / rng).clamp_(0, 1)
        pmax = _take(st.pmax, idx)
        if self.card.model in ("linear", "soft-bounds", "exponential"):
            # both directions in one pass: one pulse moves a fixed fraction of the distance to
            # the asymptote (linear: a fixed step), with each cell's own parameters
            v = torch.where(up, u, 1 - u)
            v_new = self._geometric_move(v, cnt, up, pmax, _take(st.p_up, idx), _take(st.p_down, idx))
            u_new = torch.where(up, v_new, 1 - v_new)
        else:
            # both branches elementwise; each cell keeps the one of its direction
            k = None if max_count is None or n.device.type == "cpu" else int(max_count)
            u_up = self._move(u, torch.where(up, cnt, torch.zeros_like(cnt)), pmax, _take(st.p_up, idx), True,
                              k_max=k)
            u_dn = self._move(u, torch.where(up, torch.zeros_like(cnt), cnt), pmax, _take(st.p_down, idx), False,
                              k_max=k)
            u_new = torch.where(up, u_up, u_dn)
        self._set_cells(st, idx, u_new, cnt, gmin, rng, generator, time, keep)
        total = cnt.sum().round().to(torch.int64)
        return (total, keep.sum()) if return_cells else total

    def _set_cells(self, st: DeviceState, idx, u_new, cnt, gmin, rng, generator, time, keep=None) -> None:
        """Write the cells ``idx``: the nominal response ``u_new`` of ``cnt >= 0`` pulses plus
        cycle-to-cycle noise (sigma sqrt(cnt), drawn for these cells), stamped with ``time``;
        cells where ``keep`` is False (no pulse, or stuck) keep their state."""
        c2c = self.card.noise.c2c
        if c2c > 0:
            z = randn((idx.numel(),), generator=generator, dtype=u_new.dtype, device=u_new.device)
            u_new = (u_new + c2c * cnt.sqrt() * z).clamp_(0, 1)
        g_new = gmin + u_new * rng
        g_flat = st.g.view(-1)
        if keep is not None:
            g_new = torch.where(keep, g_new, g_flat[idx])
        g_flat[idx] = g_new
        if st.t_prog is not None and time is not None:
            t = st.t_prog.view(-1)
            t[idx] = torch.where(keep, torch.full_like(g_new, time).to(t.dtype), t[idx]) if keep is not None else time

    def read(self, st: DeviceState, *, generator: torch.Generator | None = None, time: float | None = None,
             noise: bool = True) -> torch.Tensor:
        """Conductances as read now: drift applied at ``time`` and read noise (if ``noise``)."""
        g = self.drifted(st, time) if time is not None else st.g
        sr = self.card.noise.read
        if noise and sr > 0:
            z = randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
            g = g + sr * (torch.as_tensor(st.g_max, device=g.device) - torch.as_tensor(st.g_min, device=g.device)) * z
        return g

    def drifted(self, st: DeviceState, time: float) -> torch.Tensor:
        r"""Drifted conductance :math:`G((t - t_{prog})/t_0)^{-\nu}` (for elapsed time > t0)."""
        if st.t_prog is None or self.card.drift.nu == 0:
            return st.g
        elapsed = (time - st.t_prog).clamp_min(self.card.drift.t0)
        factor = (elapsed / self.card.drift.t0).pow(-torch.as_tensor(st.nu, dtype=torch.float64, device=elapsed.device))
        g = st.g * factor.to(st.g.dtype)
        if st.stuck is not None:
            g = torch.where(st.stuck, st.g, g)
        return g

    def step_size(self, g, sign: int, *, g_min=None, g_max=None, pmax=None, p_up=None, p_down=None):
        """Nominal conductance change of one pulse at conductance ``g`` (S; signed)."""
        return self.nominal_change(g, torch.full_like(g, float(sign)), g_min=g_min, g_max=g_max, pmax=pmax,
                                   p_up=p_up, p_down=p_down)

    def nominal_change(self, g, n, *, g_min=None, g_max=None, pmax=None, p_up=None, p_down=None):
        """Nominal conductance change (S) of ``n`` signed pulses from conductance ``g``, read off
        the card's nominal curve (no noise, no device-to-device knowledge), elementwise."""
        c = self.card
        su, sd = self._nominal_shape()
        kw = dict(g_min=c.g_min if g_min is None else g_min, g_max=c.g_max if g_max is None else g_max,
                  pmax=c.pmax if pmax is None else pmax, p_up=su if p_up is None else p_up,
                  p_down=sd if p_down is None else p_down)
        return self.respond(g, n, **kw) - g

    def curve(self, pulses: int | None = None, *, dtype=torch.float64) -> tuple[np.ndarray, np.ndarray]:
        """Nominal device (no noise, no variation): potentiation from Gmin by ``pulses``
        pulses, then depression by ``pulses`` pulses. Returns two arrays of ``pulses + 1``
        conductances (S), starting values included."""
        c = self.card
        n = c.pmax if pulses is None else int(pulses)
        if not 1 <= n <= MAX_CURVE_PULSES:
            raise ValueError(f"pulses {n}: not allowed; allowed: 1 to {MAX_CURVE_PULSES:,d} (one pulse at a time "
                             "through the device model)")
        nominal = dataclasses.replace(c, noise=Noise(), variation=Variation(), faults=Faults(), drift=Drift())
        dev = Device(nominal)
        st = dev.init_state((1,), u0=0.0, dtype=dtype)
        up = [st.g.clone()]
        for _ in range(n):
            dev.pulse(st, torch.ones(1, device=st.g.device))
            up.append(st.g.clone())
        down = [st.g.clone()]
        for _ in range(n):
            dev.pulse(st, -torch.ones(1, device=st.g.device))
            down.append(st.g.clone())
        return torch.cat(up).numpy(), torch.cat(down).numpy()

    def describe(self) -> dict:
        """A JSON-ready summary of the card with derived figures."""
        c = self.card
        d = c.to_dict()
        d["pmax"] = c.pmax
        d["on_off"] = c.on_off
        if c.model == "exponential":
            au, ad = self._a
            d["a_up_effective"] = au if math.isfinite(au) else None
            d["a_down_effective"] = ad if math.isfinite(ad) else None
        return d
