r"""``bp`` — backpropagation (BPTT through the spiking engine, surrogate gradients) with errors
read back through the arrays (transposed reads), then
:math:`n = R(-\eta\,\partial L/\partial w / \Delta w_{min})` push-pull pulses per cell,
:math:`R` = deterministic or stochastic rounding (:class:`~neurosal.crossbar.PulseSGD`).
Every network and coding.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.cost`, :mod:`.rule`.
"""

from __future__ import annotations

from ..cost import Schedule
from ..crossbar import PulseSGD
from .rule import Rule, backprop_step, register

__all__ = ["BP"]


@register
class BP(Rule):
    """Surrogate-gradient backprop through the arrays; pulses by :class:`PulseSGD`."""

    name = "bp"
    order = 0
    options = ("rounding",)
    schedule = Schedule("bp")

    def __init__(self, net, *, lr: float, rounding: str = "stochastic", seed: int = 0, max_pulses: int = 64):
        self.net = net
        self.opt = PulseSGD(net.parameters(), lr=lr, rounding=rounding, seed=seed, max_pulses=max_pulses)

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        return backprop_step(self.net, self.opt, x, y, coding=coding, steps=steps, seed=seed)

    def state_dict(self) -> dict:
        return {"generator": self.opt._gens.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        g = sd["generator"]
        self.opt._gens.load_state_dict(g if isinstance(g, dict) else {"states": {"cpu": g}})
