r"""Attention strategies of networks with digital attention (SAnet): which blocks to keep.

``attach_gate = t`` keeps a block only where a calibration read of the fresh chip shows its
stage's output deviating from the ideal-device value by more than ``t``
(:func:`attention_deviation`: the relative Frobenius norm).

May import: :mod:`neurosal.networks`.
"""

from __future__ import annotations

import torch

from ..networks import build

__all__ = ["attention_deviation"]


@torch.no_grad()
def attention_deviation(net, card, x: torch.Tensor) -> dict:
    r"""Per residual stage, how far the chip's output is from the ideal-device value:
    :math:`\lVert h_{chip} - h_{ideal}\rVert_F / \lVert h_{ideal}\rVert_F` on the calibration batch
    ``x``, blocks detached, batch norm in inference mode. The chip is read (its reads are chip
    work); the ideal value comes from the same recipe and seed on the ideal device (a software
    reference of the weights the chip was meant to hold, off chip)."""
    ideal = build(card, device="ideal", coding="rate", seed=net.meta["seed"], input_shape=net.input_shape,
                  classes=net.classes).to(x.device)
    outs = []
    for m in (net, ideal):
        was, attached = m.training, m.attention_state()
        m.eval()
        m.detach()
        try:
            with m.stage_outputs() as stage:
                m(x.reshape(-1, *m.input_shape))
            outs.append({k: v.detach() for k, v in stage.items()})
        finally:
            m.attach(attached)
            m.train(was)
    chip, ref = outs
    return {s: float((chip[s] - ref[s]).norm() / ref[s].norm().clamp_min(1e-30)) for s in sorted(ref)}
