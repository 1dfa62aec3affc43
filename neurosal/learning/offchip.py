r"""``offchip`` — hardware-aware training of the chip's model off the chip with Adam, then
programming by write-and-verify, for every analog layer type (fully connected, convolutional,
charge-domain).

This is how physical networks are trained when the chip cannot train itself: Sakemi et al.
train their charge-domain networks off-chip (Adam, lr 1e-4, batch 32) with spike-time noise
in the forward pass and program the result; aihwkit's hardware-aware training
(``InferenceRPUConfig``) trains a digital copy through a model of the analog forward pass
(noise, converters, weight clipping) and programs it for inference. Here the model is the
chip's own read path:

* during training every analog layer is in off-chip mode
  (:meth:`~neurosal.crossbar.AnalogLinear.start_offchip`): its ``weight`` ``W`` (effective
  units) is a torch parameter that Adam changes, and every read goes through the crossbar's
  periphery — DAC, per-tile partial sums, read noise, ADC — with the array weights
  :math:`\mathrm{clip}(W^T/s, -1, 1) + \epsilon`, ``s`` the layer's digital gain and
  :math:`\epsilon \sim U(-\tau, \tau)` a fresh draw per step: the error write-and-verify
  leaves within its tolerance :math:`\tau`. The gradient of the read is the straight-through
  one (:math:`\partial L/\partial W = \delta^T x`, as on the chip); after every step
  ``W`` is clipped to :math:`\pm s`, the range a device pair can hold;
* the conductances are untouched and none of this work is charged to the chip (a host
  computer does it: :func:`~neurosal.cost.off_chip`; the arrays' counters do not move);
* :meth:`OffChip.finish` programs every array toward :math:`\mathrm{clip}(W^T/s, -1, 1)`
  with :func:`~neurosal.crossbar.program` (pulses and verify reads counted: the chip's whole
  training cost), and the test accuracy is that of the programmed chip; the accuracy of the
  model before programming is reported as ``software_accuracy``.

Every other parameter (biases, batch norm, attention blocks, software layers) trains with the
same Adam. Adam wants a small ``lr`` (1e-3; Sakemi et al. 1e-4), not the pulse rules' 0.1.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.cost`, :mod:`.rule`.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..cost import Schedule, off_chip
from ..crossbar import Counters, analog_layers
from ..engine import forward, loss_scores
from .rule import Rule, register, rule_parameters

__all__ = ["OffChip"]


@register
class OffChip(Rule):
    """Hardware-aware off-chip training (Adam through the chip's read path), then
    write-and-verify programming of every array."""

    name = "offchip"
    order = 4
    schedule = Schedule("offchip")
    programs_at_end = True

    def __init__(self, net, *, lr: float, seed: int = 0, tolerance: float = 0.02, **_):
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"offchip: lr must be a finite number > 0 (Adam: e.g. 1e-3), got {lr}")
        if not tolerance > 0:
            raise ValueError(f"offchip: the write-and-verify tolerance must be > 0, got {tolerance}")
        self.net, self.lr, self.tolerance = net, float(lr), float(tolerance)
        self.layers = analog_layers(net)
        if not self.layers:
            raise ValueError("offchip trains a chip's analog layers; this network has none")
        self.generators = {}
        self._seed = int(seed) + 4099
        for layer in self.layers:
            layer.start_offchip()
            w = layer.weight
            layer.offchip_perturbation = torch.zeros(w.shape[1], w.shape[0], dtype=w.dtype, device=w.device)
            self._generator(w.device)
        self.params = [p for p in rule_parameters(net) if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=self.lr)
        self.programmed = None

    def _generator(self, dev: torch.device) -> torch.Generator:
        g = self.generators.get(str(dev))
        if g is None:
            g = self.generators[str(dev)] = torch.Generator(device=dev).manual_seed(self._seed)
        return g

    @contextlib.contextmanager
    def _host(self):
        """The step runs on a host computer: no ledger, and the arrays' counters stay as they were."""
        saved = [layer.crossbar.counters for layer in self.layers]
        for layer in self.layers:
            layer.crossbar.counters = Counters()
        try:
            with off_chip():
                yield
        finally:
            for layer, c in zip(self.layers, saved):
                layer.crossbar.counters = c

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        if self.programmed is not None:
            raise RuntimeError("offchip: the chip is already programmed (finish() ran); build a new rule to train again")
        rng = {k: g.get_state() for k, g in self.generators.items()}
        with torch.no_grad():
            for layer in self.layers:
                p = layer.offchip_perturbation
                p.uniform_(-self.tolerance, self.tolerance, generator=self._generator(p.device))
        with self._host():
            self.opt.zero_grad()
            res = forward(self.net, x, coding=coding, steps=steps, seed=seed)
            loss = nn.functional.cross_entropy(loss_scores(self.net, res, coding), y)
            loss.backward()
            grads = [p.grad for p in self.params if p.grad is not None]
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                self.opt.zero_grad()
                for k, st in rng.items():
                    self.generators[k].set_state(st)
                raise ValueError("offchip: the gradient is not finite (NaN or inf in the input or the loss); "
                                 "nothing was changed")
            self.opt.step()
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.clamp_(-layer.weight_scale, layer.weight_scale)
        return loss.detach()

    def finish(self) -> dict:
        """Program the trained weights into the arrays by write-and-verify; returns its cost."""
        pulses = reads = 0
        conv = []
        for layer in self.layers:
            target = layer.end_offchip()
            r = layer.crossbar.program(target, tolerance=self.tolerance)
            layer._sync()
            pulses += r.pulses
            reads += r.verify_reads
            conv.append(r.converged)
        self.programmed = {"program_pulses": pulses, "verify_reads": reads, "converged": conv}
        return self.programmed

    def state_dict(self) -> dict:
        return {"weights": [layer.weight.detach().cpu().clone() for layer in self.layers],
                "optimizer": self.opt.state_dict(),
                "generators": {k: g.get_state() for k, g in self.generators.items()}}

    def load_state_dict(self, sd: dict) -> None:
        ws = sd.get("weights") if isinstance(sd, dict) else None
        if not isinstance(ws, list) or len(ws) != len(self.layers):
            raise ValueError("offchip: the checkpoint's rule state does not hold this network's off-chip weights")
        with torch.no_grad():
            for layer, w in zip(self.layers, ws):
                if tuple(w.shape) != tuple(layer.weight.shape):
                    raise ValueError(f"offchip: checkpoint weight {tuple(w.shape)} does not fit the layer's "
                                     f"{tuple(layer.weight.shape)}")
                layer.weight.copy_(w)
        self.opt.load_state_dict(sd["optimizer"])
        for k, st in sd.get("generators", {}).items():
            self._generator(torch.device(k)).set_state(st)
