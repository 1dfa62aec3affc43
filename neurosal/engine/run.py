"""Running any network on the chip through its protocol: one forward pass for a coding, test
accuracy, the calibration of the ADC ranges, and the crossbars a network holds.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.engine.protocol`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..crossbar import analog_layers, calibrate_adc

__all__ = ["forward", "loss_scores", "evaluate", "calibrate", "crossbars", "device_of"]


def forward(net, x: torch.Tensor, *, coding: str, steps: int, seed: int = 0):
    """Run ``net`` on ``x`` (``[batch, features]`` in [0, 1]) with ``coding`` for ``steps``;
    returns what the network's :meth:`~neurosal.engine.protocol.ChipNetwork.run` returns (at
    least ``.scores``)."""
    return net.run(x, coding=coding, steps=steps, seed=seed)


def loss_scores(net, result, coding: str) -> torch.Tensor:
    """The scores of ``result`` the training loss is taken on (the network says which)."""
    return net.loss_scores(result, coding)


def device_of(net) -> torch.device:
    """The torch device the network's chip lives on."""
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(net, x: torch.Tensor, y: torch.Tensor, *, coding: str, steps: int, batch: int = 512,
             seed: int = 0) -> float:
    """Test accuracy with the network's decoder (batch norm in inference mode)."""
    correct = 0
    was = net.training
    net.eval()
    dev = device_of(net)
    try:
        for i in range(0, len(y), batch):
            res = forward(net, x[i:i + batch].to(dev), coding=coding, steps=steps, seed=seed + i)
            correct = correct + (res.scores.argmax(1) == y[i:i + batch].to(dev)).sum()   # read once, at the end
    finally:
        net.train(was)
    return int(correct) / max(1, len(y))


def crossbars(net) -> list:
    """Every crossbar of ``net``, in module order."""
    return [m.crossbar for m in analog_layers(net)]


@torch.no_grad()
def calibrate(net, x: torch.Tensor, *, coding: str, steps: int, quantile: float = 0.999, seed: int = 0) -> list:
    """Calibrate every array's forward ADC range on the inputs ``x`` (see
    :func:`~neurosal.crossbar.calibrate_adc`), in the network's present mode; batch-norm
    running statistics are left as they were. The reads are counted like any others."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    try:
        return calibrate_adc(crossbars(net), lambda: forward(net, x, coding=coding, steps=steps, seed=seed),
                             quantile=quantile)
    finally:
        for m, (a, b, c) in zip(bns, saved):
            m.running_mean.copy_(a), m.running_var.copy_(b), m.num_batches_tracked.copy_(c)
