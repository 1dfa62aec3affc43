r"""The response-family protocol of analog synapse devices, and the registry of families.

A *response family* is what a device card's ``model`` names: how much a programming pulse
moves the conductance from where it is. Every family is written on the normalized conductance
:math:`u = (G - G_\min)/(G_\max - G_\min) \in [0, 1]`, as the distance *travelled from the
bound a pulse moves away from*: :math:`v = u` for potentiation (from :math:`G_\min`),
:math:`v = 1 - u` for depression (from :math:`G_\max`). A family is a curve :math:`v = F(q)`
after :math:`q` pulses from that bound, and its inverse, the position :math:`q = F^{-1}(v)`;
:math:`n` pulses from :math:`v` reach :math:`F(F^{-1}(v) + n)`. ``shape`` is the family's
curve parameter of one direction (``a`` of the exponential, ``gamma`` of the power law), a
number or a per-cell tensor (device-to-device variation); ``pmax`` the pulses per full swing
(a number or per cell).

A family is one class in its own module of :mod:`neurosal.devices.families`, registered by
name with :func:`register`: it declares the card fields it takes (``params``, validated like
every card field), checks a card of its kind (:meth:`ResponseFamily.validate`), and does the
math. The device model (:class:`~neurosal.devices.model.Device`) asks the family; nothing
outside the family's module knows its name. Adding a family is adding one module there.

May import: :mod:`neurosal.cards` (errors, field specs). Nothing else of neurosal.
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch

__all__ = ["ResponseFamily", "register", "family_class", "family_names", "family_params", "interp"]

_REGISTRY: dict[str, type["ResponseFamily"]] = {}


def register(cls: type["ResponseFamily"]) -> type["ResponseFamily"]:
    """Class decorator: make a family available to device cards under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__}: a response family needs a name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"response family {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _ordered() -> list[type["ResponseFamily"]]:
    return sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name))


def family_names() -> tuple[str, ...]:
    """Names of the registered families (the ideal reference first)."""
    return tuple(c.name for c in _ordered())


def family_params() -> list[tuple[str, object, object]]:
    """``(field, type, dataclass field)`` of every family's card parameters, families in order."""
    return [(k, tp, f) for c in _ordered() for k, (tp, f) in c.params.items()]


def family_class(name: str) -> type["ResponseFamily"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown response family {name!r}; allowed: {', '.join(family_names())}") from None


def interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) for increasing ``xp``; clamps at the ends."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[i - 1], xp[i]
    f0, f1 = fp[i - 1], fp[i]
    t = (x - x0) / (x1 - x0)
    return f0 + t * (f1 - f0)


class ResponseFamily:
    """One pulse-response family: the curve, its inverse, and what an open-loop controller can
    plan from the card's *nominal* curve. Subclasses override what their curve needs; the
    defaults are the generic forms through :meth:`travel` and :meth:`position`."""

    #: the card's ``model`` value
    name: ClassVar[str] = ""
    #: listing order (the ideal reference first)
    order: ClassVar[int] = 100
    #: the card fields this family takes: ``{field: (type, cards.spec(...))}``
    params: ClassVar[dict] = {}

    def __init__(self, card):
        self.card = card

    # -- the card ---------------------------------------------------------------------
    @classmethod
    def validate(cls, card, source) -> None:
        """Family-specific checks of a card (raise :class:`~neurosal.cards.CardError`)."""

    def nominal_shape(self) -> tuple:
        """(up, down) curve parameters of the card's nominal device."""
        return (0.0, 0.0)

    def draw_shapes(self, draw, sigma: float) -> tuple:
        """(up, down) curve parameters per cell, drawn with ``draw(sigma, base, lo)`` (the
        device-to-device variation of the nonlinearity), in that order."""
        return 0.0, 0.0

    def check_grid(self) -> torch.Tensor:
        """Pulse counts at which a card's nominal curve is checked (finite, monotone, float32)."""
        c = self.card
        return torch.linspace(0, c.pmax, min(c.pmax, 256) + 1, dtype=torch.float32, device="cpu")

    def describe(self, d: dict) -> None:
        """Add derived figures to a card's JSON summary."""

    # -- the curve ----------------------------------------------------------------------
    def is_linear(self, shape) -> bool:
        """Whether the direction with curve parameter ``shape`` is a straight line."""
        return False

    def geometric(self, shape, pmax: float):
        """``(b, log r)`` when one pulse moves a fixed fraction ``1 - r`` of the distance to an
        asymptote ``b`` (``v' = b - (b - v) r``), else ``None``."""
        return None

    def travel(self, q, pmax, shape, up: bool):
        """Travel ``v`` in [0, 1] after ``q`` pulses from the start of the up/down curve."""
        raise AssertionError(f"no closed-form curve for model {self.name!r}")

    def position(self, v, pmax, shape, up: bool):
        """Pulses from the start of the up/down curve to travel ``v`` (inverse of :meth:`travel`)."""
        return self._position(v.clamp(0, 1), pmax, shape, up)

    def _position(self, v, pmax, shape, up: bool):
        raise AssertionError(f"no closed-form curve for model {self.name!r}")

    def move(self, u, n, pmax, shape, up: bool, k_max: Optional[int] = None):
        """Normalized conductance after ``n >= 0`` pulses up (``up``) or down from ``u``
        (``k_max``: a bound on ``n`` known without reading it, for stepwise families)."""
        v = u if up else 1 - u
        v = self.travel(self.position(v, pmax, shape, up) + n, pmax, shape, up)
        return v if up else 1 - v

    def move_cells(self, u, cnt, up, pmax, p_up, p_down, k_max: Optional[int] = None):
        """``cnt >= 0`` pulses per cell, the direction per cell (``up``: bool tensor), each cell
        with its own parameters: both branches elementwise, each cell keeps the one of its
        direction."""
        zero = torch.zeros_like(cnt)
        u_up = self.move(u, torch.where(up, cnt, zero), pmax, p_up, True, k_max=k_max)
        u_dn = self.move(u, torch.where(up, zero, cnt), pmax, p_down, False, k_max=k_max)
        return torch.where(up, u_up, u_dn)

    def respond(self, g, n, *, g_min, g_max, pmax, p_up, p_down):
        """Nominal response (no noise): conductance after ``n`` signed pulses, elementwise."""
        gmin = torch.as_tensor(g_min, dtype=g.dtype, device=g.device)
        rng = torch.as_tensor(g_max, dtype=g.dtype, device=g.device) - gmin
        u = ((g - gmin) / rng).clamp(0, 1)
        n = torch.as_tensor(n, dtype=g.dtype, device=g.device)
        pos = n > 0
        u_up = self.move(u, n.clamp_min(0), pmax, p_up, True)
        u_dn = self.move(u, (-n).clamp_min(0), pmax, p_down, False)
        u_new = torch.where(pos, u_up, torch.where(n < 0, u_dn, u))
        return gmin + u_new * rng

    # -- what an open-loop controller plans -----------------------------------------------
    def nominal_step(self, v: torch.Tensor, up: bool) -> torch.Tensor:
        """Nominal travel of one pulse from travel ``v`` (0 at the bound), potentiating if ``up``."""
        c = self.card
        shape = self.nominal_shape()[0 if up else 1]
        geo = self.geometric(shape, c.pmax)
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
        r"""The largest pulse count :math:`n \le` ``max_pulses`` whose nominal travel from ``v``
        does not exceed ``dv >= 0`` (nor the bound), and the travel it then expects (see
        :meth:`neurosal.devices.Device.nominal_pulses`)."""
        c = self.card
        su, sd = self.nominal_shape()
        target = (v + dv).clamp(max=1.0)
        gu, gd = self.geometric(su, c.pmax), self.geometric(sd, c.pmax)
        if self.is_linear(su) and self.is_linear(sd):
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

        def both(fn, x):          # through the positions on the curve, each direction its own
            return torch.where(up, fn(x, c.pmax, su, True), fn(x, c.pmax, sd, False))
        q = both(self.position, v)
        n = torch.floor(both(self.position, target) - q + 1e-4).clamp_(0, max_pulses)
        n = torch.where(torch.isfinite(n), n, torch.zeros_like(n))
        return n, both(self.travel, q + n)


class GeometricFamily(ResponseFamily):
    """Families where one pulse moves a fixed fraction of the distance to an asymptote (or a
    fixed step): any number of pulses, both directions, each cell's own parameters, in one
    elementwise pass (:meth:`geometric_move`)."""

    def geometric_move(self, v, n, up, pmax, a_up, a_down):
        """Travel after ``n`` pulses from travel ``v``, the direction per element."""
        raise NotImplementedError

    def move_cells(self, u, cnt, up, pmax, p_up, p_down, k_max: Optional[int] = None):
        v = torch.where(up, u, 1 - u)
        v_new = self.geometric_move(v, cnt, up, pmax, p_up, p_down)
        return torch.where(up, v_new, 1 - v_new)
