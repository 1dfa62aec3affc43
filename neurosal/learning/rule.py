r"""The protocol of a learning rule, the registry of rules, and the backprop step they share.

Every rule ends in the same place: a pulse count per device, applied by the device model (the
rule asks the crossbar; it never sets a weight, except ``verify``, which pays for it in pulses
and verify reads). A rule is a class in its own module of :mod:`neurosal.learning`, registered
by name with :func:`register`, that declares:

* ``name``; ``options`` — the training options it takes besides ``lr`` and ``seed`` (fields of
  :class:`~neurosal.training.TrainConfig`; an option a rule does not take is refused);
* ``schedule`` — how its backward and update phases use the hardware
  (:class:`~neurosal.cost.Schedule`, what the cost model prices);
* ``programs_at_end`` — whether it writes the chip once after training (:meth:`Rule.finish`);
* :meth:`Rule.check` — which networks (layers, codings) it supports, a named error otherwise;

and one lifecycle: ``rule = Cls(net, lr=..., seed=..., **options)``, ``rule.step(x, y, coding=,
steps=, seed=)`` per batch (the forward, backward and update phases marked for the cost
ledger), ``rule.finish()`` at the end, ``state_dict`` / ``load_state_dict`` for checkpoints.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.cost` (phases,
schedules).
"""

from __future__ import annotations

from typing import ClassVar, Optional

from torch import nn

from ..cost import Schedule, phase
from ..engine import forward, loss_scores

__all__ = ["Rule", "register", "rule_class", "rule_names", "backprop_step", "loss_and_gradients", "rule_parameters"]

_REGISTRY: dict[str, type["Rule"]] = {}


def register(cls):
    """Class decorator: make a rule available by ``cls.name`` (``train --rule NAME``)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"learning rule {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def rule_names() -> tuple:
    """The registered rules' names, in their listing order."""
    return tuple(c.name for c in sorted(_REGISTRY.values(), key=lambda c: (c.order, c.name)))


def rule_class(name: str) -> type["Rule"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; allowed: {', '.join(rule_names())}") from None


class Rule:
    """Base of the learning rules: the declarations and the lifecycle's defaults."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100
    options: ClassVar[tuple] = ()
    schedule: ClassVar[Schedule] = Schedule()
    programs_at_end: ClassVar[bool] = False

    @classmethod
    def check(cls, net) -> None:
        """Raise a :class:`ValueError` naming what is not supported (default: everything is)."""

    def finish(self) -> Optional[dict]:
        """After the last epoch: write what the rule still owes the chip; returns its cost."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


def rule_parameters(net) -> list:
    """The parameters a rule trains: all of ``net``'s except those with a digital optimizer of
    their own (``net.separately_trained``: their ids; set by the training driver for
    ``attention_optimizer``). The rule's backward still gives them gradients."""
    own = getattr(net, "separately_trained", ())
    return [p for p in net.parameters() if id(p) not in own]


def loss_and_gradients(net, x, y, *, coding: str, steps: int, seed: int):
    """The forward and backward phases a rule with its own update shares: gradients cleared,
    forward through the engine, cross-entropy, backward; returns the loss (with its graph)."""
    for p in net.parameters():
        p.grad = None
    with phase("forward"):
        res = forward(net, x, coding=coding, steps=steps, seed=seed)
        loss = nn.functional.cross_entropy(loss_scores(net, res, coding), y)
    with phase("backward"):
        loss.backward()
    return loss


def backprop_step(net, opt, x, y, *, coding: str, steps: int, seed: int):
    """Forward, cross-entropy, backward, then ``opt`` (pulses for analog weights)."""
    opt.zero_grad()
    with phase("forward"):
        res = forward(net, x, coding=coding, steps=steps, seed=seed)
        loss = nn.functional.cross_entropy(loss_scores(net, res, coding), y)
    with phase("backward"):
        loss.backward()
    with phase("update"):
        opt.step()
    return loss.detach()
