r"""The per-cell state of an array of devices, and its fabrication: device-to-device variation
and stuck-at faults, drawn once per cell from a seeded generator.

Device-to-device variation (relative sigmas of the card's ``[variation]``, :math:`\xi \sim N(0,1)`
per cell): bounds :math:`G_{\min,\max}(1 + \sigma_b\xi)`, pulses per swing
:math:`P_\max(1+\sigma_s\xi)`, the family's curve parameter :math:`a(1+\sigma_a\xi)` (``a`` of the
exponential, ``gamma`` of the power law); drift exponents :math:`\nu \sim N(\nu_0, \sigma_\nu)`;
stuck-at faults: a fraction of cells stuck at :math:`G_\min`, another at :math:`G_\max`.
The draw order is fixed (bounds, step, nonlinearity, drift, faults), so the same seed gives
the same chip.

May import: nothing of neurosal but :mod:`neurosal.devices.family` (through the card it is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["DeviceState", "fabricate", "take"]


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


def take(p, idx):
    """A per-cell parameter at flat indices ``idx`` (a number stays a number)."""
    return p.reshape(-1).index_select(0, idx) if isinstance(p, torch.Tensor) else p


def fabricate(card, family, shape, *, generator: torch.Generator | None = None,
              u0: float | torch.Tensor = 0.0, dtype=torch.float32, device=None) -> DeviceState:
    """A fresh array of cells of ``card`` at normalized conductance ``u0`` with its D2D draws
    (``family``: the card's response family, which draws its own curve parameters)."""
    c = card
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
    p_up, p_dn = family.draw_shapes(draw, v.nonlinearity)
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
