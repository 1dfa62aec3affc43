r"""``mixed-precision`` (Nandakumar et al., Front. Neurosci. 14, 406 (2020)) — backprop through the
arrays (errors by transposed reads, as ``bp``); the weight gradient is accumulated in a digital
accumulator :math:`\chi` per weight, in units of one device step,

.. math:: \chi \mathrel{+}= -\eta\,\frac{\partial L}{\partial w} / \Delta w_{min}, \qquad
          n = \mathrm{trunc}(\chi) \ (|n| \le \text{max\_pulses}), \qquad \chi \mathrel{-}= n,

and :math:`n` push-pull pulses go to the pair: an update reaches the device only once it amounts
to a whole step. Unlike ``hybrid`` the step is the card's fixed nominal :math:`\Delta w_{min}`
(no knowledge of where on its curve the device is), and the errors go through the arrays.
Every network and coding.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.cost`,
:mod:`neurosal.accel`, :mod:`.rule`.
"""

from __future__ import annotations

import math

import torch

from ..accel import all_finite
from ..cost import Schedule, phase
from ..crossbar import PulseError, analog_layers
from .rule import Rule, loss_and_gradients, register, rule_parameters

__all__ = ["MixedPrecision"]


@register
class MixedPrecision(Rule):
    """Nandakumar et al.'s mixed-precision rule: a digital accumulator per weight, a pulse per whole
    device step it holds."""

    name = "mixed-precision"
    order = 7
    options = ()
    schedule = Schedule("bp", cell_state_words=1)        # the accumulator chi

    def __init__(self, net, *, lr: float, seed: int = 0, max_pulses: int = 16, **_):
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        self.net, self.lr, self.max_pulses = net, float(lr), int(max_pulses)
        self.layers = analog_layers(net)
        self.chi = [torch.zeros(layer.crossbar.rows, layer.crossbar.cols, dtype=layer.crossbar.dtype,
                                device=layer.crossbar.torch_device) for layer in self.layers]
        analog = {id(layer.weight) for layer in self.layers}
        self.digital = [p for p in rule_parameters(net) if id(p) not in analog]

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        loss = loss_and_gradients(self.net, x, y, coding=coding, steps=steps, seed=seed)
        with torch.no_grad(), phase("update"):
            grads = [p.grad for p in list(self.digital) + [layer.weight for layer in self.layers]
                     if p.grad is not None]
            if not all_finite(grads):
                raise PulseError("a gradient is not finite (NaN or inf); nothing was written")
            for p in self.digital:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.lr)
            for layer, chi in zip(self.layers, self.chi):
                if layer.weight.grad is not None:
                    self.accumulate(layer, chi, layer.weight.grad)
        return loss.detach()

    def accumulate(self, layer, chi: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Add ``-lr * grad`` (``[out, in]``, effective units) to the accumulator ``chi`` in device
        steps, pulse the whole steps, keep the rest; returns the pulse counts ``[rows, cols]``."""
        chi.add_(grad.t().to(chi.dtype), alpha=-self.lr / layer.dw_min)
        n = torch.trunc(chi).clamp_(-self.max_pulses, self.max_pulses)
        chi.sub_(n)
        xb = layer.crossbar
        xb.counters.add("buffer_accesses", 2 * xb.rows * xb.cols)          # read and write chi
        xb.apply_push_pull(n, check=False, max_count=self.max_pulses)
        return n

    def state_dict(self) -> dict:
        return {"chi": [c.detach().cpu().clone() for c in self.chi]}

    def load_state_dict(self, sd: dict) -> None:
        for c, v in zip(self.chi, sd["chi"]):
            c.copy_(v)
