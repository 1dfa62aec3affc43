r"""Grad-CAM (Selvaraju et al., 2017) of SAnet / ResNet stages, and the ablation of attention blocks.

For stage :math:`s` with output feature map :math:`A \in \mathbb{R}^{C\times H\times W}` (as the
next stage sees it: after the stage's attention block when one is attached) and the score
:math:`y^c` of class :math:`c` (the predicted class, or the label):

.. math::
    \alpha_k = \frac{1}{HW}\sum_{i,j}\frac{\partial y^c}{\partial A_{k,ij}}, \qquad
    L^c = \mathrm{ReLU}\Big(\sum_k \alpha_k A_k\Big),

upsampled bilinearly to the input's size. Per attention block (stage :math:`s`), on the same
samples with the block and with only that block removed at test time:

* the accuracy drop when it is removed (paired: mean and standard error of the per-sample
  difference of correctness);
* how concentrated the stage's maps are: the share of the map's mass in the top 10 % of
  positions (1 = all in a tenth of the image, 0.1 = uniform);
* how much the block changes them: the Pearson correlation of the stage's maps with and
  without it.

**Off chip.** This is an analysis of a trained chip, as a designer would run it on a
workstation from the chip's weights: the reads it makes are not chip work. Every crossbar's
event counters and random streams, and the co-processor's counters, are put back as they were
when it ends.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.plots`, :mod:`neurosal.files`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..crossbar import analog_layers
from ..files import savefig
from ..plots import _plt

__all__ = ["stage_cams", "concentration", "correlation", "off_chip", "ablation", "plot_gradcam"]


def _sanet(net):
    if not net.stage_count:
        raise ValueError(f"Grad-CAM runs on SAnet / ResNet recipes (residual stages), not {type(net).__name__}")
    if net.coding != "rate":
        raise ValueError("Grad-CAM is implemented for rate coding (--coding rate)")
    return net


def stage_cams(net, x: torch.Tensor, *, stages: Sequence[int] = (1, 2, 3),
               target: Optional[torch.Tensor] = None) -> tuple[dict, torch.Tensor]:
    """Grad-CAM maps ``{stage: [B, H, W]}`` (input resolution, not normalized) of ``x`` for
    class ``target`` (default: the predicted class), and the logits ``[B, classes]``."""
    net = _sanet(net)
    bad = [s for s in stages if s not in (1, 2, 3)]
    if bad:
        raise ValueError(f"stages must be among 1, 2, 3, got {bad}")
    was = net.training
    net.eval()
    try:
        with torch.enable_grad(), net.stage_outputs() as outs:
            xin = x.reshape(-1, *net.input_shape).detach()
            logits = net(xin)
            cls = logits.argmax(1) if target is None else target.to(logits.device)
            score = logits.gather(1, cls[:, None]).sum()
            acts = [outs[s] for s in stages]
            grads = torch.autograd.grad(score, acts)
        H, W = net.input_shape[1:]
        cams = {}
        for s, a, g in zip(stages, acts, grads):
            alpha = g.mean((2, 3), keepdim=True)                      # [B, C, 1, 1]
            cam = F.relu((alpha * a).sum(1, keepdim=True))            # [B, 1, h, w]
            cams[s] = F.interpolate(cam, size=(H, W), mode="bilinear", align_corners=False)[:, 0].detach()
        return cams, logits.detach()
    finally:
        net.train(was)


def concentration(cam: torch.Tensor, top: float = 0.1) -> torch.Tensor:
    """Share of each map's mass ``[B, H, W]`` in its top ``top`` fraction of positions (NaN for
    an all-zero map)."""
    flat = cam.reshape(cam.shape[0], -1)
    k = max(1, math.ceil(top * flat.shape[1]))
    total = flat.sum(1)
    share = flat.topk(k, dim=1).values.sum(1) / total
    return torch.where(total > 0, share, torch.full_like(share, float("nan")))


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample of two map batches ``[B, H, W]`` (NaN where one is constant)."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan"))).float()


def _mean_se(v: torch.Tensor) -> tuple:
    v = v[~torch.isnan(v)].double()
    n = int(v.numel())
    if n == 0:
        return (float("nan"), float("nan"), 0)
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return (float(v.mean()), se, n)


@contextlib.contextmanager
def off_chip(net):
    """Run an analysis without it counting as chip work: every crossbar's counters and random
    streams and the co-processor's counters are restored on exit."""
    saved = [(layer.crossbar, layer.crossbar.counters.as_dict(), layer.crossbar._gens.state_dict(),
              layer.crossbar.read_position) for layer in analog_layers(net)]
    cp = net.coprocessor
    cp_saved = copy.deepcopy((cp.counters, cp.blocks)) if cp is not None else None
    neurons = copy.deepcopy(net.neuron_counts)
    attached = net.attention_state()
    try:
        yield net
    finally:
        for xb, counts, rng, pos in saved:
            xb.counters.reset()
            xb.counters.add_all(counts)
            xb._gens.load_state_dict(rng)
            xb.read_position = pos
        if cp is not None:
            cp.counters, cp.blocks = cp_saved
        if neurons is not None:
            net.neuron_counts = neurons
        if attached is not None:
            net.attach(attached)


def _correct(net, x, y, batch: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out.append(net(x[i:i + batch]).argmax(1) == y[i:i + batch])
    return torch.cat(out).float()


def ablation(net, x: torch.Tensor, y: torch.Tensor, *, stages: Sequence[int] = (1, 2, 3), batch: int = 256,
             target: str = "predicted", keep_maps: int = 4) -> dict:
    """Grad-CAM per stage with all attached blocks, and with each block removed at test time;
    per block the accuracy drop, the maps' concentration with and without it, and their
    correlation (mean, SE, N over the samples). Off chip (see :func:`off_chip`)."""
    net = _sanet(net)
    if target not in ("predicted", "label"):
        raise ValueError(f"target must be 'predicted' or 'label', got {target!r}")
    blocks = net.attention_state()
    with off_chip(net):
        net.eval()
        full = _correct(net, x, y, batch)

        def maps():
            out = {s: [] for s in stages}
            for i in range(0, len(y), batch):
                cams, _ = stage_cams(net, x[i:i + batch], stages=stages,
                                     target=y[i:i + batch] if target == "label" else None)
                for s in stages:
                    out[s].append(cams[s])
            return {s: torch.cat(v) for s, v in out.items()}
        with_maps = maps()
        result = {"samples": int(len(y)), "stages": list(stages), "target": target,
                  "accuracy": _mean_se(full), "blocks": {},
                  "concentration": {s: _mean_se(concentration(with_maps[s])) for s in stages},
                  "maps": {"with": {s: with_maps[s][:keep_maps].cpu() for s in stages}, "without": {}}}
        for b in blocks:
            net.attach(set(blocks) - {b})
            without = _correct(net, x, y, batch)
            wm = maps()
            st = b if b in stages else None
            result["blocks"][b] = {
                "stage": b, "kind": net.attention_kind,
                "accuracy_without": _mean_se(without),
                "accuracy_drop": _mean_se(full - without),
                "concentration_with": _mean_se(concentration(with_maps[st])) if st else None,
                "concentration_without": _mean_se(concentration(wm[st])) if st else None,
                "correlation": _mean_se(correlation(with_maps[st], wm[st])) if st else None}
            result["maps"]["without"][b] = {s: wm[s][:keep_maps].cpu() for s in stages}
            net.attach(blocks)
    return result


def plot_gradcam(result: dict, images: torch.Tensor, path, *, title: str = "") -> Path:
    """A PNG grid: per sample row, the input, then per stage the map with all blocks and the map
    with that stage's block removed (overlaid on the input)."""
    plt = _plt()
    stages = result["stages"]
    n = min(len(images), len(next(iter(result["maps"]["with"].values()))))
    cols = [("input", None, None)]
    for s in stages:
        cols.append((f"stage {s}", "with", s))
        if s in result["maps"]["without"]:
            cols.append((f"stage {s}, block {s} removed", "without", s))
    fig, axes = plt.subplots(n, len(cols), figsize=(1.9 * len(cols), 1.9 * n + 0.6), squeeze=False)
    for r in range(n):
        img = images[r].detach().cpu().float()
        img = img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy()
        for c, (name, kind, s) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            if kind is not None:
                m = (result["maps"]["with"][s] if kind == "with" else result["maps"]["without"][s][s])[r].numpy()
                top = m.max()
                ax.imshow(m / top if top > 0 else m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle(title or "Grad-CAM per residual stage (off chip)", fontsize=9)
    fig.tight_layout()
    out = savefig(fig, path, dpi=120)
    plt.close(fig)
    return out
