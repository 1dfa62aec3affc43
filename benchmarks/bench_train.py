"""One on-chip training step of sanet-resnet20 against the same network trained digitally in
plain torch, in one run (medians, interleaved).

CIFAR-shaped random input (batch 128, 3x32x32), device ``moderate``. neurosal: forward on
the crossbars (8-bit ADC periphery of the recipe), backward, and the rule's pulse update
(``hybrid`` and ``bp``). Plain torch: the same ResNet-20 + SE written with ``nn.Conv2d``, one
SGD step. Run: ``python benchmarks/bench_train.py``.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from neurosal.learning import make_rule
    from neurosal.networks import build
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    torch.manual_seed(0)
    plain = PlainSAnet20()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)

    def plain_step():
        opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt.step()

    steps = {"plain torch (digital SGD)": plain_step}
    for rule in ("hybrid", "bp"):
        net = build("sanet-resnet20", device="moderate", coding="rate", input_shape=(3, 32, 32), classes=10)
        r = make_rule(rule, net, lr=0.1)
        steps[f"neurosal on-chip ({rule}, moderate)"] = (lambda r=r: r.step(x, y, coding="rate", steps=1, seed=0))
    med = interleaved(steps, args.repeats)
    base = med["plain torch (digital SGD)"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; sanet-resnet20, batch {args.batch}, "
          f"3x32x32 (median of {args.repeats} interleaved steps)")
    print(f"  {'training step':<36} {'seconds':>9} {'x plain':>8}")
    for k, t in med.items():
        print(f"  {k:<36} {t:>9.3f} {t / base:>7.2f}x")
    print("  target: <= 1.5x plain torch on CPU")


if __name__ == "__main__":
    main()
