"""The pulse optimizer: SGD whose analog step is a pulse count per device."""

from __future__ import annotations

import math

import torch

from ..accel import Generators, all_finite
from ..devices import PulseError, check_pulses
from ..kernels import stochastic_round
from .layers import AnalogLinear
from .pulse_train import apply_pulse_trains

__all__ = ["PulseSGD", "record_outer"]


class PulseSGD(torch.optim.Optimizer):
    r"""SGD whose analog step is a pulse count per device, applied by the device model.

    For an analog weight, the requested change :math:`\Delta w = -\eta\,\partial L/\partial w`
    becomes :math:`n = R(\Delta w / \Delta w_{min})` push-pull pulses (``+n`` on G+,
    ``-n`` on G-), with :math:`\Delta w_{min}` the nominal step of one pulse pair and
    :math:`R` deterministic rounding (``'round'``) or stochastic rounding
    (``'stochastic'``: :math:`\lfloor v + \xi\rfloor`, :math:`\xi \sim U[0,1)`, unbiased).
    What the pulses actually do depends on the device (nonlinearity, asymmetry, noise).
    Digital parameters (biases, co-processor weights) take a plain SGD step.

    ``update='pulse-train'`` (Gokmen & Vlasov 2016, :mod:`~neurosal.crossbar.pulse_train`):
    no digital gradient; the layers record their inputs and errors
    (:meth:`record_outer`), and each sample's stochastic pulse trains of length ``bl`` update
    the array where they coincide, :math:`E[n] = \eta\,x\delta/\Delta w_{min}` per cell and
    sample. Fully connected layers only.
    """

    UPDATES = ("rounded", "pulse-train")

    def __init__(self, params, lr: float = 0.01, *, rounding: str = "stochastic", max_pulses: int = 64,
                 seed: int = 0, update: str = "rounded", bl: int = 31):
        if rounding not in ("round", "stochastic"):
            raise ValueError(f"rounding must be 'round' or 'stochastic', got {rounding!r}")
        if update not in self.UPDATES:
            raise ValueError(f"update must be one of {', '.join(self.UPDATES)}, got {update!r}")
        if not (isinstance(bl, int) and 1 <= bl <= 4096):
            raise ValueError(f"bl (pulse-train length) must be an integer 1..4096, got {bl!r}")
        self.update, self.bl, self._steps = update, int(bl), 0
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
                if layer.record_outer is not None:
                    continue
                scale = -lr / layer.dw_min                     # pulses per cell, [rows, cols]
                if self.rounding == "round":
                    n = torch.round(p.grad.t() * scale)
                else:
                    n = stochastic_round(p.grad.t(), scale, self._gens.get(p.grad.device))
                writes.append((layer, n))
        trains = []
        if self.update == "pulse-train":
            for group in self.param_groups:
                for p in group["params"]:
                    layer = getattr(p, "_neurosal_layer", None)
                    if layer is not None and layer.record_outer:
                        x = torch.cat([a for a, _ in layer.record_outer])
                        d = torch.cat([b for _, b in layer.record_outer])
                        layer.record_outer.clear()
                        trains.append((layer, x, d, group["lr"]))
            if not all_finite([t for _, x, d, _ in trains for t in (x, d)]):
                raise PulseError("an input or error vector of a pulse-train update is not finite (NaN or inf); "
                                 "nothing was written")
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
            layer.crossbar.apply_push_pull(n, check=False, max_count=self.max_pulses)
        for layer, x, d, lr in trains:
            apply_pulse_trains(layer.crossbar, x, d, scale=lr / layer.dw_min, bl=self.bl,
                               generator=self._gens.get(x.device), down_first=bool(self._steps % 2))
        self._steps += 1
        return loss

    def record(self, layers) -> None:
        """Under ``update='pulse-train'``: have ``layers`` (fully connected) record their inputs and
        errors in backward instead of forming the weight gradient (:func:`record_outer`)."""
        if self.update == "pulse-train":
            record_outer(layers)


def record_outer(layers) -> None:
    """Have the fully connected ``layers`` record ``(x, dL/dy)`` in backward instead of forming
    the weight gradient (an in-array update takes the vectors); any other layer is refused."""
    for layer in layers:
        if type(layer) is not AnalogLinear:
            raise ValueError(f"the pulse-train update works on fully connected layers (AnalogLinear); "
                             f"this network has a {type(layer).__name__} {tuple(layer.weight.shape)} "
                             "(use update='rounded' for it)")
    for layer in layers:
        layer.record_outer = []
