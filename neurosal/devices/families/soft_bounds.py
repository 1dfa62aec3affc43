r"""``soft-bounds``: the step shrinks linearly toward the bound it moves to,
:math:`\Delta u_\uparrow = \delta_\uparrow(1-u)`, :math:`\Delta u_\downarrow = -\delta_\downarrow u`, with
:math:`\delta_{\uparrow,\downarrow} = (2/P_\max)(1 \pm \alpha)` (the step at mid-range is
:math:`1/P_\max` when ``up_down`` :math:`\alpha = 0`). ``n`` pulses in closed form:
:math:`u' = 1 - (1-u)(1-\delta_\uparrow)^n` and :math:`u' = u(1-\delta_\downarrow)^n`. A cell's own
:math:`P_\max` (device-to-device variation) stretches its pulse axis.

``up_down`` is the up/down asymmetry of aihwkit's ``SoftBoundsDevice`` (``dw_min_up =
dw_min (1 + up_down)``). An up and a down step are equal where
:math:`\delta_\uparrow(1-u) = \delta_\downarrow u`: the device's *symmetry point*
:math:`u^* = \delta_\uparrow / (\delta_\uparrow + \delta_\downarrow) = (1 + \alpha)/2`, where
random up/down pulses leave it (Gokmen & Haensch, Front. Neurosci. 14, 103 (2020))."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ...cards import CardError, spec
from ..family import GeometricFamily, register


@register
class SoftBounds(GeometricFamily):
    name = "soft-bounds"
    order = 1
    params = {
        "up_down": (Optional[float], spec(None, lo=-0.95, hi=0.95, doc="soft-bounds: up/down asymmetry alpha, "
                                          "steps (2/Pmax)(1 +- alpha) (default 0: symmetric)")),
    }

    @classmethod
    def validate(cls, card, source) -> None:
        if card.levels < 4:
            raise CardError(source, "levels", "soft-bounds needs levels >= 4 (step 2/Pmax must be < 1)")
        ud = card.up_down or 0.0
        if 2.0 / card.pmax * (1 + abs(ud)) >= 1:
            raise CardError(source, "up_down", f"the larger step (2/Pmax)(1 + |up_down|) = "
                            f"{2.0 / card.pmax * (1 + abs(ud)):.3g} must be < 1: raise levels or lower |up_down|")

    def nominal_shape(self) -> tuple:
        """(up, down) step factors ``1 +- up_down``."""
        ud = self.card.up_down or 0.0
        return (1.0 + ud, 1.0 - ud)

    def draw_shapes(self, draw, sigma: float) -> tuple:
        """Each direction's step factor drawn per cell with the relative sigma of
        ``variation.nonlinearity``: the up and down steps of a device vary independently, so each
        device has its own symmetry point (the offsets Tiki-Taka's reference must cancel)."""
        su, sd = self.nominal_shape()
        top = 0.99 * self.card.pmax / 2              # keeps each cell's step (2/Pmax) x factor < 1
        fu, fd = draw(sigma, su, 1e-3), draw(sigma, sd, 1e-3)
        return tuple(f.clamp_max(top) if isinstance(f, torch.Tensor) else f for f in (fu, fd))

    def _log_r(self, pmax, shape=1.0):
        """ln(1 - delta) per pulse of a cell with ``pmax`` pulses per swing (delta = (2/Pmax) x
        ``shape`` nominal)."""
        if isinstance(shape, torch.Tensor):
            return torch.log1p(-2.0 / self.card.pmax * shape) * (self.card.pmax / pmax)
        return math.log1p(-2.0 / self.card.pmax * shape) * (self.card.pmax / pmax)

    def geometric(self, shape, pmax: float):
        return 1.0, self._log_r(pmax, float(shape))

    def travel(self, q, pmax, shape, up: bool):
        # (1 - delta)^q with delta = (2/Pmax_nominal)(1 +- up_down); a cell's own Pmax stretches its pulse axis
        return -torch.expm1(q.clamp_min(0) * self._log_r(pmax, shape))

    def _position(self, v, pmax, shape, up: bool):
        return torch.log1p(-v) / self._log_r(pmax, shape)

    def geometric_move(self, v, n, up, pmax, a_up, a_down):
        if not isinstance(a_up, torch.Tensor) and not isinstance(a_down, torch.Tensor) and a_up == a_down:
            return 1 - (1 - v) * torch.exp(n * self._log_r(pmax, a_up))
        upf = up.to(v.dtype)
        log_r = self._log_r(pmax, a_down) + (self._log_r(pmax, a_up) - self._log_r(pmax, a_down)) * upf
        return 1 - (1 - v) * torch.exp(n * log_r)

    def describe(self, d: dict) -> None:
        d["up_down_effective"] = self.card.up_down or 0.0
