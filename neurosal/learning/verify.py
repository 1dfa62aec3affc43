r"""``verify`` — train in software (ideal digital weights), then program the result into the
arrays with write-and-verify (:func:`~neurosal.crossbar.program`), counting its pulses and
verify reads: the baseline hybrid training avoids. Fully connected analog layers.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.cost`, :mod:`.rule`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..cost import Schedule
from ..crossbar import analog_layers
from .rule import Rule, backprop_step, register, rule_parameters

__all__ = ["Verify"]


@register
class Verify(Rule):
    """Software training, then write-and-verify programming (pulses and verify reads counted)."""

    name = "verify"
    order = 3
    schedule = Schedule("verify")
    programs_at_end = True

    @classmethod
    def check(cls, net) -> None:
        for _, layer in net.analog_units():
            if not layer.software_training:
                raise ValueError("verify supports fully connected analog layers")

    def __init__(self, net, *, lr: float, seed: int = 0, tolerance: float = 0.02, **_):
        self.net, self.lr, self.tolerance = net, float(lr), float(tolerance)
        self.check(net)
        self.layers = analog_layers(net)
        self.soft = []
        for layer in self.layers:
            w = nn.Parameter(layer.crossbar.weights().clone() * layer.weight_scale)     # [in, out]
            layer.software_weight = w
            self.soft.append(w)
        skip = {id(layer.weight) for layer in self.layers} | {id(w) for w in self.soft}
        self.opt = torch.optim.SGD([p for p in rule_parameters(net) if id(p) not in skip] + self.soft, lr=lr)
        self.programmed = None

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        return backprop_step(self.net, self.opt, x, y, coding=coding, steps=steps, seed=seed)

    def finish(self) -> dict:
        """Program the software weights into the arrays; returns the cost."""
        pulses = reads = 0
        conv = []
        for layer, w in zip(self.layers, self.soft):
            target = (w.detach() / layer.weight_scale).clamp(-1, 1)
            r = layer.crossbar.program(target, tolerance=self.tolerance)
            pulses += r.pulses
            reads += r.verify_reads
            conv.append(r.converged)
            layer.software_weight = None
        self.programmed = {"program_pulses": pulses, "verify_reads": reads, "converged": conv}
        return self.programmed

    def state_dict(self) -> dict:
        return {"software": [w.detach().cpu().clone() for w in self.soft]}

    def load_state_dict(self, sd: dict) -> None:
        with torch.no_grad():
            for w, s in zip(self.soft, sd["software"]):
                w.copy_(s)
