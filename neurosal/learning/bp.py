r"""``bp`` — backpropagation (BPTT through the spiking engine, surrogate gradients) with errors
read back through the arrays (transposed reads), then
:math:`n = R(-\eta\,\partial L/\partial w / \Delta w_{min})` push-pull pulses per cell,
:math:`R` = deterministic or stochastic rounding (:class:`~neurosal.crossbar.PulseSGD`);
or, with ``update='pulse-train'``, no digital gradient at all: stochastic pulse trains of length
``bl`` from the inputs and the errors coincide in the array (Gokmen & Vlasov 2016,
:mod:`neurosal.crossbar.pulse_train`). Every network and coding (pulse trains: fully connected
layers).

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.cost`, :mod:`.rule`.
"""

from __future__ import annotations

from ..cost import Schedule
from ..crossbar import PulseSGD, analog_layers
from .rule import Rule, backprop_step, register, rule_parameters

__all__ = ["BP"]


@register
class BP(Rule):
    """Surrogate-gradient backprop through the arrays; pulses by :class:`PulseSGD`."""

    name = "bp"
    order = 0
    options = ("rounding", "update", "bl")
    schedule = Schedule("bp")

    def __init__(self, net, *, lr: float, rounding: str = "stochastic", seed: int = 0, max_pulses: int = 64,
                 update: str = "rounded", bl: int = 31):
        self.net = net
        self.opt = PulseSGD(rule_parameters(net), lr=lr, rounding=rounding, seed=seed, max_pulses=max_pulses,
                            update=update, bl=bl)
        self.opt.record(analog_layers(net))

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        return backprop_step(self.net, self.opt, x, y, coding=coding, steps=steps, seed=seed)

    def state_dict(self) -> dict:
        return {"generator": self.opt._gens.state_dict(), "steps": self.opt._steps}

    def load_state_dict(self, sd: dict) -> None:
        self.opt._steps = int(sd.get("steps", 0))
        g = sd["generator"]
        self.opt._gens.load_state_dict(g if isinstance(g, dict) else {"states": {"cpu": g}})
