"""The pulse optimizer: SGD whose analog step is a pulse count per device."""

from __future__ import annotations

import math

import torch

from ..accel import Generators, all_finite
from ..devices import PulseError, check_pulses

__all__ = ["PulseSGD"]


class PulseSGD(torch.optim.Optimizer):
    r"""SGD whose analog step is a pulse count per device, applied by the device model.

    For an analog weight, the requested change :math:`\Delta w = -\eta\,\partial L/\partial w`
    becomes :math:`n = R(\Delta w / \Delta w_{min})` push-pull pulses (``+n`` on G+,
    ``-n`` on G-), with :math:`\Delta w_{min}` the nominal step of one pulse pair and
    :math:`R` deterministic rounding (``'round'``) or stochastic rounding
    (``'stochastic'``: :math:`\lfloor v + \xi\rfloor`, :math:`\xi \sim U[0,1)`, unbiased).
    What the pulses actually do depends on the device (nonlinearity, asymmetry, noise).
    Digital parameters (biases, co-processor weights) take a plain SGD step.
    """

    def __init__(self, params, lr: float = 0.01, *, rounding: str = "stochastic", max_pulses: int = 64,
                 seed: int = 0):
        if rounding not in ("round", "stochastic"):
            raise ValueError(f"rounding must be 'round' or 'stochastic', got {rounding!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        super().__init__(params, dict(lr=lr))
        self.rounding = rounding
        self.max_pulses = int(max_pulses)
        self._gens = Generators(seed)     # stochastic rounding draws, on the weights' device

    @property
    def generator(self) -> torch.Generator:
        """The CPU generator (kept for compatibility; each device has its own stream)."""
        return self._gens.get("cpu")

    def state_dict(self):
        sd = super().state_dict()
        sd["neurosal_rng"] = self._gens.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        rng = state_dict.pop("neurosal_rng", None)
        super().load_state_dict(state_dict)
        if rng is not None:
            self._gens.load_state_dict(rng)

    @torch.no_grad()
    def step(self, closure=None):
        """One step, atomic: every pulse count and digital update is computed and checked
        first (:class:`PulseError` on a NaN or infinite one), then everything is written.
        The check is one read-back for the whole step; nothing else waits for an accelerator."""
        loss = closure() if closure is not None else None
        writes, digital = [], []
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                layer = getattr(p, "_neurosal_layer", None)
                if layer is None:
                    digital.append((p, lr))
                    continue
                v = p.grad.t() * (-lr / layer.dw_min)          # pulses per cell, [rows, cols]
                if self.rounding == "round":
                    n = torch.round(v)
                else:
                    n = torch.floor(v + torch.rand(v.shape, generator=self._gens.get(v.device), dtype=v.dtype,
                                                   device=v.device))
                writes.append((layer, n))
        if not all_finite([p.grad for p, _ in digital] + [n for _, n in writes]):
            for p, _ in digital:
                if not bool(torch.isfinite(p.grad).all()):
                    raise PulseError("a digital parameter's gradient is not finite; nothing was written")
            for layer, n in writes:
                check_pulses(n, f"{type(layer).__name__} {tuple(layer.weight.shape)}")
        for p, lr in digital:
            p.add_(p.grad, alpha=-lr)
        for layer, n in writes:
            n = n.clamp_(-self.max_pulses, self.max_pulses)
            layer.crossbar.apply_pulses(n, -n, check=False, max_count=self.max_pulses)
        return loss
