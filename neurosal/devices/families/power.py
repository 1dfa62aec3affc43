r"""``power`` (Fusi–Abbott): :math:`\Delta u_\uparrow = \alpha_\uparrow(1-u)^{\gamma_\uparrow}`,
:math:`\Delta u_\downarrow = -\alpha_\downarrow u^{\gamma_\downarrow}`, :math:`\alpha = 2^\gamma/P_\max`
(step :math:`1/P_\max` at mid-range). No closed form: the pulses act one after another, iterated
pulse by pulse, vectorized over cells."""

from __future__ import annotations

from typing import Optional

import torch

from ...cards import spec
from ..family import ResponseFamily, register


@register
class Power(ResponseFamily):
    name = "power"
    order = 3
    params = {
        "gamma_up": (Optional[float], spec(None, lo=0.0, hi=10.0, doc="power: exponent, potentiation")),
        "gamma_down": (Optional[float], spec(None, lo=0.0, hi=10.0, doc="power: exponent, depression")),
    }

    def nominal_shape(self) -> tuple:
        c = self.card
        return (c.gamma_up if c.gamma_up is not None else 1.0, c.gamma_down if c.gamma_down is not None else 1.0)

    def draw_shapes(self, draw, sigma: float) -> tuple:
        c = self.card
        p_up = draw(sigma, c.gamma_up if c.gamma_up is not None else 1.0, 0.0)
        p_dn = draw(sigma, c.gamma_down if c.gamma_down is not None else 1.0, 0.0)
        return p_up, p_dn

    def check_grid(self) -> torch.Tensor:
        return torch.arange(min(self.card.pmax, 64) + 1, dtype=torch.float32, device="cpu")

    def move(self, u, n, pmax, shape, up: bool, k_max: Optional[int] = None):
        v = u if up else 1 - u
        v = self._steps(v, n, pmax, shape, k_max)
        return v if up else 1 - v

    def _steps(self, v, n, pmax, gamma, k_max: Optional[int] = None):
        """Fusi-Abbott steps on the travel: v += alpha (1 - v)^gamma per pulse. The loop runs to the
        largest count, read back on a CPU (free there) or given as ``k_max`` (no read-back on an
        accelerator)."""
        gamma_t = torch.as_tensor(gamma, dtype=v.dtype, device=v.device)
        alpha = torch.pow(torch.tensor(2.0, dtype=v.dtype, device=v.device), gamma_t) / pmax
        if k_max is None:
            k_max = int(torch.ceil(n.max())) if n.numel() else 0
        for k in range(k_max):
            frac = (n - k).clamp(0, 1)  # a fractional last pulse (scaled pulse axis) counts partly
            v = (v + frac * alpha * (1 - v).clamp_min(0) ** gamma_t).clamp(0, 1)
        return v

    def nominal_pulses(self, v: torch.Tensor, dv: torch.Tensor, up: torch.Tensor, max_pulses: int):
        c = self.card
        su, sd = self.nominal_shape()
        target = (v + dv).clamp(max=1.0)
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
