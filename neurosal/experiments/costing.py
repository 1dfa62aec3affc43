"""Cost measurement: run a chip's inference and one training step, and price what happened.

The cost model (:mod:`neurosal.cost`) prices a ledger; this fills one by running the network on
test samples and, with a rule, one training step on training samples.

May import: :mod:`neurosal.cost`, :mod:`neurosal.learning`, :mod:`neurosal.networks`,
:mod:`neurosal.engine`, :mod:`neurosal.datasets`, :mod:`neurosal.accel`.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..accel import resolve
from ..cost import Ledger, cost_report, phase
from ..datasets import load
from ..engine import forward
from ..learning import make_rule, rule_class
from ..networks import build, load_checkpoint, recipe_for

__all__ = ["measure"]


def measure(network, device, *, coding: str = "rate", rule: Optional[str] = "bp", steps: Optional[int] = None,
            dataset: str = "digits", data_dir=None, batch: int = 16, seed: int = 0, lr: float = 0.1,
            periphery="isaac-32nm", coprocessor="puma-vfu-32nm", checkpoint=None, net=None, data=None,
            accelerator=None) -> dict:
    """Run ``batch`` test samples (inference) and, with ``rule``, one training step on
    ``batch`` training samples, on the simulated chip; return both cost reports.

    The counts are the events of these runs. A fresh network (no ``checkpoint`` or ``net``)
    normalizes with batch statistics, so its activity is that of a fresh chip; a given
    ``net`` or checkpoint is taken as trained (inference mode).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch {batch!r}: not allowed; allowed: an integer >= 1 (samples measured)")
    if data is None:
        data = load(dataset, data_dir=data_dir, seed=seed, limit_test=batch, limit_train=batch)
    trained = net is not None
    if net is None:
        net = build(recipe_for(network, checkpoint), device=device, coding=coding, seed=seed, steps=steps,
                    input_shape=data.shape, classes=data.classes, accelerator=accelerator)
        if checkpoint is not None:          # the trained chip, into the network of its recipe
            load_checkpoint(net, checkpoint)
            trained = True
    elif accelerator is not None:
        net = net.to(resolve(accelerator))
    where = next(net.parameters()).device
    T = net.meta["steps"]
    coding = net.meta.get("coding", coding)
    x, y = data.x_test[:batch].to(where), data.y_test[:batch].to(where)
    schedule = rule_class(rule).schedule if rule is not None else None
    led = Ledger(net, samples=len(y))
    was = net.training
    net.train(not trained)
    with torch.no_grad(), led.phase("forward"):
        forward(net, x, coding=coding, steps=T, seed=seed)
    net.train(was)
    out = {"network": net.meta.get("recipe", {}).get("name"), "coding": coding, "steps": T, "batch": len(y),
           "inference": cost_report(led, periphery=periphery, coprocessor=coprocessor, rule=schedule),
           "inference_per_sample": cost_report(led.per_sample(), periphery=periphery, coprocessor=coprocessor,
                                               rule=schedule)}
    if rule is not None:
        r = make_rule(rule, net, lr=lr, seed=seed)
        tled = Ledger(net, samples=len(y))
        with tled.active():
            r.step(data.x_train[:batch].to(where), data.y_train[:batch].to(where), coding=coding, steps=T, seed=seed)
            if r.programs_at_end:                    # the step trained in software; program the result
                with phase("update"):
                    r.finish()
        out["training"] = cost_report(tled, periphery=periphery, coprocessor=coprocessor, rule=schedule)
    out["rule"] = rule
    return out
