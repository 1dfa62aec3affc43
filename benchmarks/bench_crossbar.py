"""Crossbar speed against plain torch, measured in one run (medians).

1024 x 1024 array, batch 64, CPU. Forward (x @ W) and backward (d @ W^T) through the
crossbar against the plain matmul of the same shape; a pulse update against a dense
outer product (x^T d, the gradient of the same layer). Run: ``make bench``.
"""

from __future__ import annotations

import argparse

import torch

from neurosal.crossbar import Crossbar
from timing import median_time as _median_time


def median_time(fn, repeats: int) -> float:
    return _median_time(fn, repeats, warmup=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, b = args.size, args.batch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, generator=g)
    d = torch.randn(b, n, generator=g)
    W = torch.randn(n, n, generator=g) * 0.05

    t_mm = median_time(lambda: x @ W, args.repeats)
    t_mmT = median_time(lambda: d @ W.t(), args.repeats)
    t_outer = median_time(lambda: x.t() @ d, args.repeats)

    rows = []
    configs = [
        ("ideal periphery (ideal)", dict(device="ideal")),
        ("8-bit DAC/ADC + read noise (severe)", dict(device="severe", dac_bits=8, adc_bits=8)),
    ]
    for label, kw in configs:
        xb = Crossbar(n, n, kw.pop("device"), seed=0, **kw)
        xb.initialize((W / W.abs().max()).clamp(-1, 1))
        tf = median_time(lambda: xb.forward(x), args.repeats)
        tb = median_time(lambda: xb.backward(d), args.repeats)
        rows.append((f"forward, {label}", tf, t_mm))
        rows.append((f"backward, {label}", tb, t_mmT))

    # pulse update with severe: counts as PulseSGD makes them (stochastic rounding of
    # lr * grad / dw_min from a batch outer product); about a third of the cells pulse.
    xb = Crossbar(n, n, "severe", seed=0)
    grad = x.t() @ d
    gen = torch.Generator().manual_seed(1)
    for target in (0.03, 0.35):          # mean |lr*grad/dw_min|: sparse and dense updates
        v = grad * (target / grad.abs().mean())
        n_counts = torch.floor(v + torch.rand(v.shape, generator=gen))
        frac = (n_counts != 0).float().mean().item()
        tp = median_time(lambda: xb.apply_push_pull(n_counts), args.repeats)
        rows.append((f"pulse update, severe ({frac:.1%} of devices pulsed)", tp, t_outer))

    def full_step():
        vv = (x.t() @ d) * (0.03 / grad.abs().mean())
        nn_ = torch.floor(vv + torch.rand(vv.shape, generator=gen))
        xb.apply_push_pull(nn_)
    tps = median_time(full_step, args.repeats)
    rows.append(("PulseSGD-like step (outer product, stoch. rounding, pulses), sparse", tps, t_outer))

    print(f"neurosal crossbar benchmark: {n}x{n}, batch {b}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'operation':<58} {'neurosal (ms)':>14} {'plain torch (ms)':>17} {'ratio':>7}")
    for name, t, ref in rows:
        print(f"{name:<58} {t * 1e3:>14.3f} {ref * 1e3:>17.3f} {t / ref:>6.2f}x")
    print("plain torch: forward = x @ W, backward = d @ W.T, pulse update = x.T @ d (dense outer product)")


if __name__ == "__main__":
    main()
