r"""``linear``: a constant step, :math:`u' = \mathrm{clip}(u \pm n/P_\max, 0, 1)` — the ideal
reference (``levels`` states per swing)."""

from __future__ import annotations

from ..family import GeometricFamily, register


@register
class Linear(GeometricFamily):
    name = "linear"
    order = 0

    def is_linear(self, shape) -> bool:
        return True

    def travel(self, q, pmax, shape, up: bool):
        return (q / pmax).clamp(0, 1)

    def _position(self, v, pmax, shape, up: bool):
        return v * pmax

    def geometric_move(self, v, n, up, pmax, a_up, a_down):
        return (v + n / pmax).clamp(max=1.0)
