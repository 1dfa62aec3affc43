"""``neurosal demo``: what ``make demo`` runs.

Until the full simulator demo exists, this trains a 64-100-10 perceptron on the
``digits`` dataset (scikit-learn, 8x8 images) on crossbars of several devices with
:class:`~neurosal.crossbar.PulseSGD` (every weight change is a pulse through the device
model), against the same network trained digitally in plain torch, and writes the device
curves and the accuracy comparison as PNG plots.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .crossbar import AnalogLinear, PulseSGD, analog_layers

DEVICES = ("ideal", "mild", "moderate", "severe", "ag-a-si", "extreme-nonlinear")


def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """The scikit-learn digits (1797 8x8 images, 10 classes), pixels scaled to [0, 1]."""
    from .datasets import load
    d = load("digits", seed=seed, test_fraction=test_fraction)
    return d.x_train, d.y_train, d.x_test, d.y_test


def _mlp(device: str | None, seed: int) -> nn.Module:
    if device is None:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    return nn.Sequential(AnalogLinear(64, 100, device=device, seed=seed), nn.ReLU(),
                         AnalogLinear(100, 10, device=device, seed=seed + 1))


def train_eval(device: str | None, xtr, ytr, xte, yte, *, epochs: int, seed: int, lr: float = 0.1,
               batch: int = 32, progress=None) -> dict:
    model = _mlp(device, seed)
    opt = PulseSGD(model.parameters(), lr=lr, seed=seed) if device else torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), batch):
            j = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[j]), ytr[j]).backward()
            opt.step()
        if progress is not None:
            progress.update(1)
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    pulses = sum(m.crossbar.counters.pulses for m in analog_layers(model))
    return dict(device=device or "digital (torch SGD)", test_accuracy=acc, train_seconds=train_s, pulses=pulses)


def run_demo(out_dir: Path = Path("runs"), epochs: int = 3, seed: int = 0) -> int:
    from .plots import _plt, plot_device_curves
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = load_digits_split(seed)
    print(f"neurosal demo: on-chip training of a 64-100-10 perceptron on digits "
          f"({len(ytr)} train / {len(yte)} test), {epochs} epochs, PulseSGD (stochastic rounding)\n")
    results = []
    with tqdm(total=epochs * (len(DEVICES) + 1), desc="training", unit="epoch") as bar:
        results.append(train_eval(None, xtr, ytr, xte, yte, epochs=epochs, seed=seed, progress=bar))
        for dev in DEVICES:
            results.append(train_eval(dev, xtr, ytr, xte, yte, epochs=epochs, seed=seed, progress=bar))
    t_dig = results[0]["train_seconds"]
    print(f"\n{'device':<22} {'test accuracy':>13} {'pulses':>12} {'time vs digital':>16}")
    for r in results:
        print(f"{r['device']:<22} {r['test_accuracy']:>13.3f} {r['pulses']:>12,d} "
              f"{r['train_seconds'] / t_dig:>15.1f}x")
    curves = plot_device_curves(list(DEVICES), out_dir / "device_curves.png")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [r["device"] for r in results]
    accs = [r["test_accuracy"] for r in results]
    ax.bar(range(len(names)), accs, color=["0.5"] + ["tab:blue"] * len(DEVICES))
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"digits, 64-100-10, {epochs} epochs: on-chip (PulseSGD) vs digital", fontsize=10)
    for i, a in enumerate(accs):
        ax.text(i, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    acc_png = out_dir / "demo_accuracy.png"
    fig.savefig(acc_png, dpi=120)
    plt.close(fig)
    print(f"\nwrote {curves} and {acc_png}")
    return 0
