"""The plain torch twin of a ResNet recipe: the digital reference a SAnet study sets its chip
results beside.

:class:`TorchResNet` has the blocks of :class:`~neurosal.networks.SAnet`'s backbone (a 3x3 stem
with batch norm, three stages of basic blocks with widths ``w, 2w, 4w`` and stride 2 into
stages 2 and 3, 1x1 projections where the shape changes, ``clamp(0, 1)`` activations, global
average pooling, a linear classifier), with ``nn.Conv2d`` instead of crossbars and no
converters, noise or devices. :func:`train_twin` trains it by plain SGD (no momentum, no weight
decay, like the pulse rules' digital parameters) on the same data, in the same order, as
``neurosal train`` with the same seed, batch and learning rate, and evaluates it on the same
test samples: what the chip would reach if it were exact.

May import: :mod:`neurosal.datasets`, :mod:`neurosal.networks` (recipes), :mod:`neurosal.progress`.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import load
from ..networks import load_network
from ..progress import bar as progress_bar

__all__ = ["TorchResNet", "train_twin"]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.sc = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                         nn.BatchNorm2d(cout))

    def forward(self, x):
        o = self.b2(self.c2(self.b1(self.c1(x)).clamp(0, 1)))
        return (o + (x if self.sc is None else self.sc(x))).clamp(0, 1)


class TorchResNet(nn.Module):
    """ResNet-``depth`` (``6n + 2``) in plain torch, the backbone of SAnet without the chip."""

    def __init__(self, depth: int = 8, width: int = 16, cin: int = 3, classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 >= 8 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem, self.bn = nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        blocks, c = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(n):
                blocks.append(_Block(c, cout, 2 if (b == 0 and i > 0) else 1))
                c = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.bn(self.stem(x)).clamp(0, 1)).mean((2, 3)))


def train_twin(network: str = "resnet8", *, dataset: str = "fashion-mnist", data_dir=None, seed: int = 0,
               epochs: int = 1, batch: int = 32, lr: float = 0.1, limit_train=None, limit_test=None,
               progress: bool = True) -> dict:
    """Train the torch twin of the ResNet recipe ``network`` like ``neurosal train`` would train
    the chip (same data, data order, seed, batch, lr, epochs); returns ``{"test_accuracy",
    "history", "seconds", ...}`` with the test accuracy after every epoch."""
    card = load_network(network)
    if card.kind != "resnet":
        raise ValueError(f"the torch twin is defined for ResNet recipes (kind 'resnet'), not {card.name!r} "
                         f"({card.kind})")
    data = load(dataset, data_dir=data_dir, seed=seed, limit_train=limit_train, limit_test=limit_test)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TorchResNet(card.depth, card.width, data.shape[0], data.classes)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x_tr = data.x_train.reshape(-1, *data.shape)
    x_te = data.x_test.reshape(-1, *data.shape)
    n = len(data.y_train)
    g = torch.Generator(device="cpu").manual_seed(seed)        # the data order of neurosal train
    history, t0 = [], time.perf_counter()
    with progress_bar(epochs * n, unit="sample", desc="train torch twin", disable=not progress) as bar:
        for ep in range(epochs):
            net.train()
            perm = torch.randperm(n, generator=g, device="cpu")
            losses = []
            for i in range(0, n, batch):
                j = perm[i:i + batch]
                opt.zero_grad()
                loss = F.cross_entropy(net(x_tr[j]), data.y_train[j])
                loss.backward()
                opt.step()
                losses.append(loss.detach())
                bar.update(len(j))
            net.eval()
            with torch.no_grad():
                pred = torch.cat([net(x_te[i:i + 500]).argmax(1) for i in range(0, len(x_te), 500)])
            acc = float((pred == data.y_test).float().mean())
            history.append({"epoch": ep + 1, "loss": float(torch.stack(losses).mean()), "test_accuracy": acc})
            bar.set_postfix(acc=f"{acc:.3f}")
    return {"network": card.name, "dataset": dataset, "seed": seed, "epochs": epochs, "batch": batch, "lr": lr,
            "limit_train": limit_train, "limit_test": limit_test, "test_accuracy": history[-1]["test_accuracy"],
            "history": history, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}
