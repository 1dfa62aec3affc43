"""On-chip training against the same network trained digitally in plain torch, in one run
(medians, interleaved).

``--case mlp``: one epoch of ``mlp-784-400-400-10`` (rate coding, 8-bit ADC periphery of the
recipe) over 8,000 MNIST images at batch 32, with ``hybrid`` on ``ag-a-si`` and
``extreme-nonlinear`` and ``bp`` (stochastic rounding) on ``ag-a-si``; plain torch: the same
MLP (``nn.Linear``, bounded activation) with SGD. Real MNIST from ``--data-dir`` (the IDX
files); without it MNIST-shaped random images (the pulse activity then differs).

``--case resnet``: one training step of sanet-resnet20 on CIFAR-shaped random input (batch
128, 3x32x32), device ``moderate``, ``hybrid`` and ``bp``; plain torch: the same ResNet-20 + SE
written with ``nn.Conv2d``, one SGD step; and the time of one 45,000-image CIFAR-10 epoch at
that batch, from the step times (``--epoch-data DIR``: measured instead, with ``neurosal
train`` on the CIFAR-10 files in DIR). ``--compile``: also each step under ``torch.compile``.

``--case algorithms``: one training step (batch ``--mlp-batch``) of ``mlp-784-400-400-10`` on
``ag-a-si`` with each analog training algorithm (pulse SGD rounded and pulse-train, hybrid,
mixed precision, TTv2, c-TTv2, AGAD) against one plain-torch SGD step of the same MLP.

``--accelerator cpu|cuda|cuda:N`` runs everything there (same network, same data), timing
with the device synchronized around each call.

Run: ``python benchmarks/bench_train.py [--case mlp|resnet|algorithms|all] [--data-dir DIR] [--accelerator cuda]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from timing import interleaved


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                         nn.BatchNorm2d(cout))

    def forward(self, x):
        o = self.b1(self.c1(x)).clamp(0, 1)
        o = self.b2(self.c2(o))
        return (o + (x if self.sc is None else self.sc(x))).clamp(0, 1)


class _SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.f1, self.f2 = nn.Linear(c, c // r), nn.Linear(c // r, c)

    def forward(self, x):
        s = torch.sigmoid(self.f2(F.relu(self.f1(x.mean((2, 3))))))
        return x * s[:, :, None, None]


class PlainSAnet20(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        stages, cin = [], width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for b in range(3):
                blocks.append(_Block(cin, c, 2 if (b == 0 and i > 0) else 1))
                cin = c
            stages.append(nn.Sequential(*blocks, _SE(c)))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(4 * width, 10)

    def forward(self, x):
        return self.fc(self.stages(self.bn(self.stem(x)).clamp(0, 1)).mean((2, 3)))


def bench_mlp(args) -> None:
    from neurosal.datasets import load
    from neurosal.learning import make_rule
    from neurosal.networks import build
    n = args.samples
    dev = args.device
    if args.data_dir:
        data = load("mnist", data_dir=args.data_dir, limit_train=n, limit_test=16)
        x, y, what = data.x_train, data.y_train, f"MNIST ({args.data_dir})"
    else:
        g = torch.Generator().manual_seed(0)
        x, y, what = torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g), "random 28x28"
    x, y = x.to(dev), y.to(dev)
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(784, 400), nn.Hardtanh(0, 1), nn.Linear(400, 400), nn.Hardtanh(0, 1),
                          nn.Linear(400, 10)).to(dev)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    b = args.mlp_batch

    def plain_epoch():
        for i in range(0, n, b):
            opt.zero_grad()
            F.cross_entropy(plain(x[i:i + b]), y[i:i + b]).backward()
            opt.step()

    epochs = {"plain torch (digital SGD)": plain_epoch}
    for rule, card, rounding in (("hybrid", "ag-a-si", None), ("hybrid", "extreme-nonlinear", None),
                                 ("bp", "ag-a-si", "stochastic")):
        net = build("mlp-784-400-400-10", device=card, coding="rate", input_shape=(1, 28, 28), classes=10,
                    accelerator=dev)
        r = make_rule(rule, net, lr=0.1, **({"rounding": rounding} if rounding else {}))

        def ep(r=r):
            for i in range(0, n, b):
                r.step(x[i:i + b], y[i:i + b], coding="rate", steps=1, seed=i)
        epochs[f"neurosal {rule} ({card})"] = ep
    _table(interleaved(epochs, args.repeats, sync=args.sync), "one epoch",
           f"mlp-784-400-400-10 (rate, 8-bit ADC), one epoch of {n} samples at batch {b}, {what} "
           f"(median of {args.repeats} interleaved epochs)", "target for hybrid: <= 2x plain torch")


def bench_algorithms(args) -> None:
    from neurosal.learning import make_rule
    from neurosal.networks import build
    dev, b = args.device, args.mlp_batch
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(b, 784, generator=g).to(dev) for _ in range(16)]
    ys = [torch.randint(0, 10, (b,), generator=g).to(dev) for _ in range(16)]
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(784, 400), nn.Hardtanh(0, 1), nn.Linear(400, 400), nn.Hardtanh(0, 1),
                          nn.Linear(400, 10)).to(dev)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    k = [0]

    def plain_steps():
        for x, y in zip(xs, ys):
            opt.zero_grad()
            F.cross_entropy(plain(x), y).backward()
            opt.step()

    steps = {"plain torch (digital SGD)": plain_steps}
    for label, rule, opts in (("bp, rounded", "bp", {}), ("bp, pulse-train BL 31", "bp", {"update": "pulse-train"}),
                              ("hybrid", "hybrid", {}), ("mixed-precision", "mixed-precision", {}),
                              ("ttv2", "ttv2", {}), ("c-ttv2", "c-ttv2", {}), ("agad", "agad", {}),
                              ("ttv2, pulse-train BL 31", "ttv2", {"update": "pulse-train"})):
        net = build("mlp-784-400-400-10", device="ag-a-si", coding="rate", input_shape=(1, 28, 28), classes=10,
                    accelerator=dev)
        r = make_rule(rule, net, lr=0.1, **opts)

        def run(r=r):
            for x, y in zip(xs, ys):
                k[0] += 1
                r.step(x, y, coding="rate", steps=1, seed=k[0])
        steps[f"neurosal {label}"] = run
    _table(interleaved(steps, args.repeats, sync=args.sync), "16 training steps",
           f"mlp-784-400-400-10 (rate, 8-bit ADC) on ag-a-si, batch {b}, random 28x28 "
           f"(median of {args.repeats} interleaved runs of 16 steps)", "target: each algorithm <= 3x plain torch SGD")


def bench_resnet(args) -> None:
    from neurosal.learning import make_rule
    from neurosal.networks import build
    dev = args.device
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)
    torch.manual_seed(0)
    plain = PlainSAnet20().to(dev)
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)

    def plain_step():
        opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt.step()

    steps = {"plain torch (digital SGD)": plain_step}
    if args.compile:
        compiled_plain = torch.compile(plain)

        def plain_compiled():
            opt.zero_grad()
            F.cross_entropy(compiled_plain(x), y).backward()
            opt.step()
        steps["plain torch, torch.compile"] = plain_compiled
    for rule in ("hybrid", "bp"):
        net = build("sanet-resnet20", device="moderate", coding="rate", input_shape=(3, 32, 32), classes=10,
                    accelerator=dev)
        r = make_rule(rule, net, lr=0.1)
        steps[f"neurosal on-chip ({rule}, moderate)"] = (lambda r=r: r.step(x, y, coding="rate", steps=1, seed=0))
        if args.compile:
            net_c = build("sanet-resnet20", device="moderate", coding="rate", input_shape=(3, 32, 32), classes=10,
                          accelerator=dev)
            rc = make_rule(rule, net_c, lr=0.1)
            fn = torch.compile(rc.step)
            steps[f"neurosal {rule}, torch.compile"] = (lambda fn=fn: fn(x, y, coding="rate", steps=1, seed=0))
    med = interleaved(steps, args.repeats, sync=args.sync, warmup=2 if args.compile else 1)
    _table(med, "training step", f"sanet-resnet20, batch {args.batch}, 3x32x32 (median of {args.repeats} "
           "interleaved steps)", "target: hybrid <= 1.5x plain torch")
    n_steps = -(-45_000 // args.batch)
    print(f"  one 45,000-image CIFAR-10 epoch at batch {args.batch} ({n_steps} steps), from the step times: "
          + ", ".join(f"{k} {v * n_steps / 60:.1f} min" for k, v in med.items()))
    if args.epoch_data:
        import time as _t

        from neurosal.training import train
        t0 = _t.perf_counter()
        r = train("sanet-resnet20", "moderate", rule="hybrid", coding="rate", dataset="cifar10",
                  data_dir=args.epoch_data, epochs=1, batch=args.batch, lr=0.1, accelerator=dev, progress=False)
        print(f"  measured: one epoch of {r['train_samples'] if 'train_samples' in r else 'the'} CIFAR-10 training "
              f"images with `train` (hybrid, moderate) took {_t.perf_counter() - t0:.1f} s, test accuracy "
              f"{r['test_accuracy']:.3f}")


def _table(med: dict, what: str, title: str, target: str) -> None:
    base = med["plain torch (digital SGD)"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_where()}; {title}")
    print(f"  {what:<42} {'seconds':>9} {'x plain':>8}")
    for k, t in med.items():
        print(f"  {k:<42} {t:>9.3f} {t / base:>7.2f}x")
    print(f"  {target}")


def _where() -> str:
    import platform
    dev = torch.device(_ARGS.device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} ({dev})"
    return f"cpu ({platform.processor() or platform.machine()})"


_ARGS = argparse.Namespace(device="cpu")


def main() -> None:
    global _ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="all", choices=("mlp", "resnet", "algorithms", "all"))
    ap.add_argument("--batch", type=int, default=128, help="resnet batch")
    ap.add_argument("--mlp-batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8000, help="mlp: samples per epoch")
    ap.add_argument("--data-dir", default=None, help="mlp: folder with the MNIST IDX files (default: random images)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accelerator", default="cpu", help="cpu, cuda, cuda:N, auto")
    ap.add_argument("--compile", action="store_true", help="resnet: also each step under torch.compile")
    ap.add_argument("--epoch-data", default=None, help="resnet: measure one CIFAR-10 epoch on the files in DIR")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from neurosal.accel import resolve
    args.device = resolve(args.accelerator)
    args.sync = (lambda: torch.cuda.synchronize(args.device)) if args.device.type == "cuda" else None
    _ARGS = args
    if args.case in ("mlp", "all"):
        bench_mlp(args)
    if args.case in ("resnet", "all"):
        bench_resnet(args)
    if args.case in ("algorithms", "all"):
        bench_algorithms(args)


if __name__ == "__main__":
    main()
