"""The speed targets of on-chip training on a CPU, against plain torch, in one run (medians of
interleaved repeats): the table ``make bench`` prints first.

1. pulse update, ``severe``, 1024 x 1024 (counts as pulse SGD makes them: stochastic rounding
   of a batch-64 outer product, sparse 3 % and dense 35 % of the pairs pulsed), against the
   dense outer product ``x.T @ d`` of the same layer;
2. a pulse-SGD-like step (outer product, stochastic rounding, pulses), same array;
3. forward and backward reads with 8-bit DAC/ADC and read noise, against ``x @ W`` / ``d @ W.T``;
4. one epoch of ``mlp-784-400-400-10`` (rate, 8-bit ADC) over 8,000 images at batch 32,
   ``hybrid`` and ``bp`` on ``ag-a-si``, against the same MLP trained by SGD in plain torch;
5. ``resnet8`` on Fashion-MNIST, ``ideal``, 3,000 images x 2 epochs at batch 32, ``bp`` and
   ``hybrid``, against a plain torch twin (same blocks, batch norm, clamp activations, SGD).

``--data-dir DIR``: real MNIST from ``DIR/mnist`` and Fashion-MNIST from ``DIR/fashion-mnist``
(IDX files); without it, random images of those shapes (the pulse activity then differs).
Run: ``make bench`` or ``python benchmarks/bench_targets.py [--data-dir DIR] [--only 12345]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from timing import interleaved


# ------------------------------------------------------------------------------- 1-3: one array
def array_rows(args) -> list:
    from neurosal.crossbar import Crossbar
    try:
        from neurosal.kernels import stochastic_round
    except ImportError:                       # an older neurosal (the baseline of a comparison)
        def stochastic_round(v, scale, generator):
            w = v * scale
            return torch.floor(w + torch.rand(w.shape, generator=generator, dtype=w.dtype))
    n, b = 1024, 64
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(b, n, generator=g), torch.randn(b, n, generator=g)
    W = torch.randn(n, n, generator=g) * 0.05
    rows = []
    ref = interleaved({"mm": lambda: x @ W, "mmT": lambda: d @ W.t(), "outer": lambda: x.t() @ d}, args.repeats,
                      warmup=3)
    if "1" in args.only or "2" in args.only:
        xb = Crossbar(n, n, "severe", seed=0)
        grad = x.t() @ d
        gen = torch.Generator().manual_seed(1)
        fns, fracs = {}, {}
        for target, label in ((0.03, "sparse"), (0.35, "dense")):
            v = grad * (target / grad.abs().mean())
            counts = torch.floor(v + torch.rand(v.shape, generator=gen))
            fracs[label] = float((counts != 0).float().mean())
            fns[label] = (lambda c=counts: xb.apply_push_pull(c))
        scale = 0.03 / float(grad.abs().mean())

        def sgd_step():
            xb.apply_push_pull(stochastic_round(x.t() @ d, scale, gen))
        fns["step"] = sgd_step
        t = interleaved(fns, args.repeats, warmup=3)
        if "1" in args.only:
            rows.append((f"pulse update, severe 1024², {fracs['sparse']:.0%} pulsed", t["sparse"], ref["outer"],
                         "<= 3x"))
            rows.append((f"pulse update, severe 1024², {fracs['dense']:.0%} pulsed", t["dense"], ref["outer"],
                         "<= 6x"))
        if "2" in args.only:
            rows.append(("PulseSGD-like step (outer product, stoch. rounding, pulses)", t["step"], ref["outer"],
                         "<= 4x"))
    if "3" in args.only:
        xb = Crossbar(n, n, "severe", seed=0, dac_bits=8, adc_bits=8)
        xb.initialize((W / W.abs().max()).clamp(-1, 1))
        t = interleaved({"f": lambda: xb.forward(x), "b": lambda: xb.backward(d)}, args.repeats, warmup=3)
        rows.append(("forward, 8-bit DAC/ADC + read noise (severe) 1024², batch 64", t["f"], ref["mm"], "<= 2x"))
        rows.append(("backward, 8-bit DAC/ADC + read noise (severe) 1024², batch 64", t["b"], ref["mmT"], "<= 2x"))
    return rows


# ------------------------------------------------------------------------------- 4-5: training
def _images(args, name: str, n: int, shape):
    if args.data_dir:
        from neurosal.datasets import load
        data = load(name, data_dir=str(Path(args.data_dir) / name), limit_train=n, limit_test=16)
        return data.x_train.reshape(n, *shape), data.y_train, "real"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g), "random"


def _plain_sgd(model, x, y, batch, lr, epochs=1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def run(limit=None):
        for _ in range(epochs if limit is None else 1):
            for i in range(0, x.shape[0] if limit is None else limit, batch):
                opt.zero_grad()
                F.cross_entropy(model(x[i:i + batch]), y[i:i + batch]).backward()
                opt.step()
    return run


def _chip(recipe, card, rule, x, y, batch, lr, epochs=1, **kw):
    from neurosal.learning import make_rule
    from neurosal.networks import build
    net = build(recipe, device=card, coding="rate", input_shape=tuple(x.shape[1:]), classes=10, seed=0)
    r = make_rule(rule, net, lr=lr, **kw)

    def run(limit=None):
        for _ in range(epochs if limit is None else 1):
            for i in range(0, x.shape[0] if limit is None else limit, batch):
                r.step(x[i:i + batch], y[i:i + batch], coding="rate", steps=1, seed=i)
    return run


def mlp_rows(args) -> list:
    x, y, what = _images(args, "mnist", 8000, (784,))
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(784, 400), nn.Hardtanh(0, 1), nn.Linear(400, 400), nn.Hardtanh(0, 1),
                          nn.Linear(400, 10))
    fns = {"plain": _plain_sgd(plain, x, y, 32, 0.1),
           "hybrid": _chip("mlp-784-400-400-10", "ag-a-si", "hybrid", x, y, 32, 0.1),
           "bp": _chip("mlp-784-400-400-10", "ag-a-si", "bp", x, y, 32, 0.1, rounding="stochastic")}
    t = interleaved(fns, max(1, args.repeats // 10), warmup=1)
    return [(f"MNIST epoch, mlp-784-400-400-10, 8,000 {what} images, hybrid", t["hybrid"], t["plain"], "<= 1.5x"),
            (f"MNIST epoch, mlp-784-400-400-10, 8,000 {what} images, bp", t["bp"], t["plain"], "<= 2x")]


def resnet_rows(args) -> list:
    x, y, what = _images(args, "fashion-mnist", 3000, (1, 28, 28))
    torch.manual_seed(0)
    from neurosal.experiments.twin import TorchResNet          # resnet8's plain torch twin
    fns = {"plain": _plain_sgd(TorchResNet(8, 16, cin=1, classes=10), x, y, 32, 0.1, epochs=2),
           "bp": _chip("resnet8", "ideal", "bp", x, y, 32, 0.1, epochs=2),
           "hybrid": _chip("resnet8", "ideal", "hybrid", x, y, 32, 0.1, epochs=2)}
    for fn in fns.values():                   # warm-up: a few batches (first calls, compilation)
        fn(limit=256)
    t = interleaved(fns, 1, warmup=0)
    return [(f"Fashion-MNIST resnet8 (ideal), 3,000 {what} images x 2 epochs, bp", t["bp"], t["plain"], "<= 2x"),
            (f"Fashion-MNIST resnet8 (ideal), 3,000 {what} images x 2 epochs, hybrid", t["hybrid"], t["plain"],
             "<= 2x")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder with mnist/ and fashion-mnist/ (IDX files)")
    ap.add_argument("--repeats", type=int, default=30, help="repeats of the array timings (epochs: a tenth)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="12345", help="which rows, e.g. '123'")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import os
    t0 = time.perf_counter()
    rows = []
    if set("123") & set(args.only):
        rows += array_rows(args)
    if "4" in args.only:
        rows += mlp_rows(args)
    if "5" in args.only:
        rows += resnet_rows(args)
    print(f"neurosal speed targets: torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
          f"NEUROSAL_COMPILE={os.environ.get('NEUROSAL_COMPILE', 'auto')}, neurosal from "
          f"{Path(__import__('neurosal').__file__).parent} ({time.perf_counter() - t0:.0f} s)")
    print(f"  {'measure':<72} {'neurosal':>10} {'plain torch':>12} {'ratio':>7} {'target':>7}")
    for name, t, ref, target in rows:
        unit, k = ("ms", 1e3) if ref < 0.1 else ("s", 1.0)
        print(f"  {name:<72} {t * k:>8.2f}{unit:>2} {ref * k:>10.2f}{unit:>2} {t / ref:>6.2f}x {target:>7}")


if __name__ == "__main__":
    main()
