r"""``soft-bounds``: the step shrinks linearly toward the bound it moves to,
:math:`\Delta u_\uparrow = \delta(1-u)`, :math:`\Delta u_\downarrow = -\delta u`, with
:math:`\delta = 2/P_\max` (the step at mid-range is :math:`1/P_\max`). ``n`` pulses in closed
form: :math:`u' = 1 - (1-u)(1-\delta)^n` and :math:`u' = u(1-\delta)^n`. A cell's own
:math:`P_\max` (device-to-device variation) stretches its pulse axis."""

from __future__ import annotations

import math

import torch

from ...cards import CardError
from ..family import GeometricFamily, register


@register
class SoftBounds(GeometricFamily):
    name = "soft-bounds"
    order = 1

    @classmethod
    def validate(cls, card, source) -> None:
        if card.levels < 4:
            raise CardError(source, "levels", "soft-bounds needs levels >= 4 (step 2/Pmax must be < 1)")

    def _log_r(self, pmax):
        """ln(1 - delta) per pulse of a cell with ``pmax`` pulses per swing (delta = 2/Pmax nominal)."""
        return math.log1p(-2.0 / self.card.pmax) * (self.card.pmax / pmax)

    def geometric(self, shape, pmax: float):
        return 1.0, self._log_r(pmax)

    def travel(self, q, pmax, shape, up: bool):
        # (1 - delta)^q with delta = 2/Pmax_nominal; a cell's own Pmax stretches its pulse axis
        return -torch.expm1(q.clamp_min(0) * self._log_r(pmax))

    def _position(self, v, pmax, shape, up: bool):
        return torch.log1p(-v) / self._log_r(pmax)

    def geometric_move(self, v, n, up, pmax, a_up, a_down):
        return 1 - (1 - v) * torch.exp(n * self._log_r(pmax))
