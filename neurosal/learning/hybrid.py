r"""``hybrid`` (Kwon et al., TNNLS 2025) — forward on the nonideal arrays; errors and updates
computed off-array in full precision and accumulated per cell in a digital buffer
:math:`b \mathrel{+}= -\eta\,\partial L/\partial w`. A cell is written when :math:`|b|` reaches
what a pulse does at its present conductance on the device's *nominal* curve (nonlinearity and
asymmetry compensated open loop, :mod:`.controller`); :math:`n = \lfloor |b|/\Delta_1 \rfloor`
pulses go to the device of the pair that fits best, with no verify read, and the buffer keeps
:math:`b - \Delta_{nominal}(n)`. Every network and coding.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.cost`,
:mod:`neurosal.accel`, :mod:`.rule`, :mod:`.controller`.
"""

from __future__ import annotations

import math

import torch

from ..accel import all_finite
from ..cost import Schedule, phase
from ..crossbar import PulseError, analog_layers
from .controller import HybridController, write_all
from .rule import Rule, loss_and_gradients, register, rule_parameters

__all__ = ["Hybrid"]


@register
class Hybrid(Rule):
    r"""Kwon et al.'s hybrid rule: off-array updates, a digital buffer per cell, open-loop
    pulses from the device's nominal curve, no verify reads.

    The controller (:class:`HybridController`, one per array) knows only what a chip's
    digital side can know: the device card's nominal curve and what it did itself. Its state:

    * the update buffer :math:`b` per cell (weight units), :math:`b \mathrel{+}= -\eta\,
      \partial L/\partial w`;
    * an estimate :math:`\hat u^\pm` of each device's normalized conductance on the nominal
      curve. It starts at the state the chip was initialized to (``Crossbar.initial_weights``:
      :math:`\hat u^\pm = (1 \pm w_0)/2`; a chip that was written before the controller met it
      is read once, with counted verify reads) and advances by the pulses the controller
      sends, as the nominal curve says they act. It never sees true conductances or
      device-to-device draws, so C2C noise and variation make it drift from the truth.

    Write, per cell: to raise :math:`w` (:math:`b > 0`) move :math:`G^+` up or :math:`G^-`
    down, to lower it :math:`G^+` down or :math:`G^-` up. For each candidate the controller
    plans :math:`n \le` ``max_pulses`` pulses, the most whose nominal change does not exceed
    :math:`|b|` (closed form from its position on the nominal curve,
    :meth:`~neurosal.devices.Device.nominal_pulses`), and uses the one that leaves the smaller
    remainder (best fit: on a nonlinear curve one device of the pair usually has the finer
    step); on a tie, the one with more room in its direction, which keeps the pair's common
    mode near mid-range. :math:`b` keeps the remainder. A device at its bound is never pulsed
    further toward it.

    **Saturated pair.** When the request reaches past both devices' bounds and neither can
    take one more pulse toward it, the pair is at the end of its range (:math:`\hat w
    \approx \pm 1`: :math:`G^+` at its top and :math:`G^-` at its bottom, or the reverse). The
    request is dropped from the buffer, as a software weight clamp to [-1, 1] would, and
    counted (``Counters.clipped_cells``).

    **Readback** (``readback=K``, a separate option; off by default): every ``K`` steps the
    controller reads every pair (two verify reads per pair, counted with their row cycles
    and energy) and re-anchors its estimates to what it read, through the nominal bounds.
    """

    name = "hybrid"
    order = 2
    options = ("readback",)
    schedule = Schedule("hybrid", cell_state_words=5)     # buffer, two estimates, two write thresholds

    def __init__(self, net, *, lr: float, seed: int = 0, max_pulses: int = 16, readback: int = 0, **_):
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if readback < 0:
            raise ValueError(f"readback must be >= 0 steps (0 = never), got {readback}")
        self.net, self.lr, self.max_pulses, self.readback = net, float(lr), int(max_pulses), int(readback)
        self.layers = analog_layers(net)
        for layer in self.layers:
            layer.digital_backward = True
        self.controllers = [HybridController(layer.crossbar, max_pulses=max_pulses) for layer in self.layers]
        self.steps = 0
        analog = {id(layer.weight) for layer in self.layers}
        self.digital = [p for p in rule_parameters(net) if id(p) not in analog]

    @property
    def buffers(self) -> list:
        return [c.buffer for c in self.controllers]

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        loss = loss_and_gradients(self.net, x, y, coding=coding, steps=steps, seed=seed)
        with torch.no_grad(), phase("update"):
            # atomic: a NaN or infinite gradient changes nothing (chip, buffers, digital weights);
            # a sum is finite only if every term is
            # (one read-back for all gradients: the only wait for an accelerator in the step)
            grads = [p for p in list(self.digital) + [layer.weight for layer in self.layers] if p.grad is not None]
            if not all_finite([p.grad for p in grads]):
                for p in grads:
                    if not bool(torch.isfinite(p.grad).all()):
                        raise PulseError(f"a gradient of shape {tuple(p.shape)} is not finite (NaN or inf); "
                                         "nothing was written")
            for p in self.digital:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.lr)
            self.steps += 1
            for layer, ctl in zip(self.layers, self.controllers):
                ctl.follow()
                if self.readback and self.steps % self.readback == 0:
                    ctl.reanchor()
                if layer.weight.grad is not None:
                    ctl.buffer.add_(layer.weight.grad.t(), alpha=-self.lr / layer.weight_scale)   # weight units
            write_all(self.controllers)
        return loss.detach()

    def state_dict(self) -> dict:
        return {"buffers": [c.buffer.detach().cpu().clone() for c in self.controllers],
                "estimates": [c.estimate.detach().cpu().clone() for c in self.controllers], "steps": self.steps}

    def load_state_dict(self, sd: dict) -> None:
        for c, b in zip(self.controllers, sd["buffers"]):
            c.follow()
            c.buffer.copy_(b)
        for c, e in zip(self.controllers, sd.get("estimates", [])):
            c.estimate.copy_(e)
            c._retarget()
        self.steps = int(sd.get("steps", 0))
