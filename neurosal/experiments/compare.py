"""``neurosal compare-coding``: the same network trained rate-coded and spike-coded on the same
chip, then measured on the test set: accuracy, time steps, spikes and synaptic events per
sample (from the crossbars' event counters of the test run), energy per sample (the cost
ledger of the same test run, :mod:`neurosal.cost`), training pulses, energy and time.

May import: :mod:`neurosal.training`, :mod:`neurosal.cost`, :mod:`neurosal.engine`, :mod:`neurosal.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ..cost import COMPONENTS, Ledger, cost_report
from ..engine import forward
from ..files import savefig
from ..plots import _plt
from ..training import train

__all__ = ["compare_coding", "plot_comparison", "test_events"]


@torch.no_grad()
def test_events(net, x, y, coding: str, steps: int, seed: int, batch: int = 256,
                 periphery="isaac-32nm", coprocessor="puma-vfu-32nm") -> dict:
    """Accuracy, per-sample events and energy of a test run, from its cost ledger."""
    correct = 0
    net.eval()
    led = Ledger(net, samples=len(y))
    with led.phase("forward"):
        for i in range(0, len(y), batch):
            res = forward(net, x[i:i + batch], coding=coding, steps=steps, seed=seed + i)
            correct = correct + (res.scores.argmax(1) == y[i:i + batch]).sum()      # read once, at the end
    correct = int(correct)
    n = len(y)
    rep = cost_report(led, periphery=periphery, coprocessor=coprocessor)
    return {"accuracy": correct / n, "spikes_per_sample": led.total("spikes") / n if coding != "rate" else None,
            "synaptic_events_per_sample": led.total("cell_reads") / n,
            "adc_conversions_per_sample": rep.adc_conversions() / n,        # bit cycles included
            "dac_conversions_per_sample": led.total("dac_conversions") / n, "energy_per_sample_j": rep.energy_j / n,
            "analog_energy_per_sample_j": rep.analog_energy_j / n, "digital_energy_per_sample_j": rep.digital_energy_j / n,
            "energy_components_per_sample_j": {c: rep.energy(component=c) / n for c in COMPONENTS}}


def compare_coding(network, device, *, dataset: str = "digits", data_dir=None, codings: Sequence[str] = ("rate", "spike"),
                   rule: str = "hybrid", epochs: int = 2, steps: Optional[int] = None, seed: int = 0, lr: float = 0.1,
                   batch: int = 8, limit_train: Optional[int] = None, limit_test: Optional[int] = None,
                   progress: bool = True, periphery="isaac-32nm", coprocessor="puma-vfu-32nm",
                   accelerator=None) -> dict:
    rows = []
    for coding in codings:
        res, net, data = train(network, device, rule=rule, coding=coding, dataset=dataset, data_dir=data_dir,
                               epochs=epochs, seed=seed, lr=lr, batch=batch, steps=steps, limit_train=limit_train,
                               limit_test=limit_test, progress=progress, return_net=True, periphery=periphery,
                               coprocessor=coprocessor, accelerator=accelerator)
        T = res["steps"]
        ev = test_events(net, data.x_test, data.y_test, coding, T, seed, periphery=periphery, coprocessor=coprocessor)
        rows.append({"coding": coding, "steps": T, "test_accuracy": ev["accuracy"],
                     "spikes_per_sample": ev["spikes_per_sample"],
                     "synaptic_events_per_sample": ev["synaptic_events_per_sample"],
                     "adc_conversions_per_sample": ev["adc_conversions_per_sample"],
                     "dac_conversions_per_sample": ev["dac_conversions_per_sample"],
                     "energy_per_sample_j": ev["energy_per_sample_j"],
                     "analog_energy_per_sample_j": ev["analog_energy_per_sample_j"],
                     "digital_energy_per_sample_j": ev["digital_energy_per_sample_j"],
                     "energy_components_per_sample_j": ev["energy_components_per_sample_j"],
                     "train_pulses": res["pulses"], "train_energy_j": res["energy_j"],
                     "train_seconds": res["seconds"]})
    return {"network": res["network"], "device": res["device"], "dataset": dataset, "rule": rule, "epochs": epochs,
            "seed": seed, "codings": rows, "periphery": res["cost"]["periphery"],
            "coprocessor": res["cost"]["coprocessor"]}


def plot_comparison(result: dict, path: str | Path) -> Path:
    plt = _plt()
    rows = result["codings"]
    names = [f"{r['coding']}\n(T = {r['steps']})" for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    panels = [("test accuracy", [r["test_accuracy"] for r in rows], "{:.3f}"),
              ("synaptic events / sample", [r["synaptic_events_per_sample"] for r in rows], "{:,.0f}"),
              ("ADC conversions / sample (every bit cycle)", [r["adc_conversions_per_sample"] for r in rows], "{:,.0f}"),
              ("energy / inference (nJ)", [r["energy_per_sample_j"] * 1e9 for r in rows], "{:.3g}")]
    colors = ["tab:blue", "tab:orange", "tab:green"][:len(rows)]
    for ax, (title, vals, fmt) in zip(axes, panels):
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)), names, fontsize=8)
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(vals):
            ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    axes[0].set_ylim(0, 1.05)
    fig.suptitle(f"{result['network']} on {result['device']}, {result['dataset']}, rule {result['rule']}, "
                 f"{result['epochs']} epoch(s): rate vs spike coding", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    savefig(fig, path, dpi=120)
    plt.close(fig)
    return path
