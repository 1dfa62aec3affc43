r"""``exponential`` (DNN+NeuroSim form). On the pulse axis :math:`x = p/P_\max \in [0, 1]`, with
:math:`a = A/P_\max`, potentiation :math:`u(x) = b_\uparrow(1 - e^{-x/a_\uparrow})`,
:math:`b = 1/(1 - e^{-1/a})`, and depression :math:`u(x) = 1 - b_\downarrow(1 - e^{(x-1)/a_\downarrow})`.
``n`` pulses move :math:`x` by :math:`\pm n/P_\max` (exact inversion; no per-pulse loop): one
pulse moves a fixed fraction :math:`1 - r`, :math:`r = e^{-1/(a P_\max)}`, of the distance to
the asymptote :math:`b`. Cards give ``a_up``/``a_down`` directly or the NeuroSim nonlinearity
labels ``nl_up``/``nl_down``, converted by :func:`nl_to_a` (``nl = 0``: that direction is linear).

**NL <-> A.** DNN+NeuroSim labels a device's nonlinearity with a number NL (0.01 ... 9) and
tabulates the normalized A of the exponential model for each label (MLP_NeuroSim V3.0,
documents/Nonlinearity-NormA.htm). The table is reproduced to < 1 % by
:math:`NL = K \max_x [u(x) - x]`, :math:`u(x) = (1 - e^{-x/a})/(1 - e^{-1/a})`: NL is
proportional to the largest deviation of the normalized curve from a straight line, with
:math:`K = 10.10` (fit over the table). tests/test_devices.py pins the published points
(0.01 -> 126.269, 1.51 -> 0.8195, 2.4 -> 0.499, 4.88 -> 0.200, ...).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch
from scipy.optimize import brentq

from ...cards import CardError, spec
from ..family import GeometricFamily, register

__all__ = ["Exponential", "nl_to_a", "a_to_nl"]

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
    nl = abs(float(nl))
    if nl == 0:
        return math.inf
    if nl > 9.0:
        raise ValueError(f"nonlinearity label {nl} outside NeuroSim's table range 0..9")
    # a_to_nl is monotone decreasing in a; bracket it.
    return float(brentq(lambda a: a_to_nl(a) - nl, 1e-3, 1e4, xtol=1e-10, rtol=1e-10))


def exp_consts(shape, like: Optional[torch.Tensor]):
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


def _linear_shape(shape) -> bool:
    """A direction given as ``inf`` (a number, not a per-cell tensor) is a straight line."""
    return isinstance(shape, float) and math.isinf(shape)


@register
class Exponential(GeometricFamily):
    name = "exponential"
    order = 2
    params = {
        "a_up": (Optional[float], spec(None, lo=1e-3, hi=1e6, doc="exponential: A/Pmax, potentiation "
                                       "(NeuroSim's NL 9 is 0.04)")),
        "a_down": (Optional[float], spec(None, lo=1e-3, hi=1e6, doc="exponential: A/Pmax, depression")),
        "nl_up": (Optional[float], spec(None, lo=-9.0, hi=9.0, doc="exponential: NeuroSim NL label, potentiation")),
        "nl_down": (Optional[float], spec(None, lo=-9.0, hi=9.0, doc="exponential: NeuroSim NL label, depression")),
    }

    def __init__(self, card):
        super().__init__(card)
        #: (a_up, a_down) normalized to Pmax (``inf`` = linear)
        self.a = (card.a_up if card.a_up is not None else nl_to_a(card.nl_up or 0.0),
                  card.a_down if card.a_down is not None else nl_to_a(card.nl_down or 0.0))

    @classmethod
    def validate(cls, card, source) -> None:
        for d in ("up", "down"):
            if getattr(card, f"a_{d}") is not None and getattr(card, f"nl_{d}") is not None:
                raise CardError(source, f"nl_{d}", f"give either a_{d} or nl_{d}, not both")

    def nominal_shape(self) -> tuple:
        return self.a

    def draw_shapes(self, draw, sigma: float) -> tuple:
        au, ad = self.a
        p_up = draw(sigma, au, 1e-3) if math.isfinite(au) else math.inf
        p_dn = draw(sigma, ad, 1e-3) if math.isfinite(ad) else math.inf
        return p_up, p_dn

    def describe(self, d: dict) -> None:
        au, ad = self.a
        d["a_up_effective"] = au if math.isfinite(au) else None
        d["a_down_effective"] = ad if math.isfinite(ad) else None

    def is_linear(self, shape) -> bool:
        return math.isinf(shape)

    def geometric(self, shape, pmax: float):
        if not math.isfinite(shape):
            return None
        a, c, _ = exp_consts(shape, None)
        return 1.0 + c, -1.0 / (a * pmax)

    def travel(self, q, pmax, shape, up: bool):
        if _linear_shape(shape):
            return (q / pmax).clamp(0, 1)
        a, c, _ = exp_consts(shape, q)
        x = (q / pmax).clamp(0.0, 1.0)
        return (-(1 + c) * torch.expm1(-x / a)).clamp(0, 1)

    def _position(self, v, pmax, shape, up: bool):
        if _linear_shape(shape):
            return v * pmax
        # c = b - 1 = 1/expm1(1/a) keeps the inversion exact at the flat end of the curve
        a, c, l1c = exp_consts(shape, v)
        return (-a * (torch.log(c + (1 - v)) - l1c)).clamp(0.0, 1.0) * pmax

    def geometric_move(self, v, n, up, pmax, a_up, a_down):
        r""":math:`v_n = \min(b - (b - v) r^n, 1)` with each cell's own ``a`` and ``pmax``."""
        if all(not isinstance(a, torch.Tensor) and math.isinf(a) for a in (a_up, a_down)):
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
