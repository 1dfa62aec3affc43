"""``neurosal compare-coding``: the same network trained rate-coded and spike-coded on the same
chip, then measured on the test set: accuracy, time steps, spikes and synaptic events per
sample (from the crossbars' event counters of the test run), energy per sample (the cost
ledger of the same test run, :mod:`neurosal.cost`), training pulses, energy and time.

May import: :mod:`neurosal.training`, :mod:`neurosal.cost`, :mod:`neurosal.engine`, :mod:`neurosal.plots`.
"""

from __future__ import annotations

import math
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
            "energy_components_per_sample_j": {c: rep.energy(component=c) / n for c in COMPONENTS},
            "latency_per_sample_s": rep.latency_s / n}


#: the per-coding figures compare_coding averages over seeds (mean and standard error)
FIGURES = ("test_accuracy", "spikes_per_sample", "synaptic_events_per_sample", "adc_conversions_per_sample",
           "dac_conversions_per_sample", "energy_per_sample_j", "analog_energy_per_sample_j",
           "digital_energy_per_sample_j", "latency_per_sample_s", "train_pulses", "train_energy_j", "train_seconds")


def _mean_se(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var / len(vals))


def compare_coding(network, device, *, dataset: str = "digits", data_dir=None, codings: Sequence[str] = ("rate", "spike"),
                   rule: str = "hybrid", epochs: int = 2, steps: Optional[int] = None, seed: int = 0, lr: float = 0.1,
                   batch: int = 8, limit_train: Optional[int] = None, limit_test: Optional[int] = None,
                   progress: bool = True, periphery="isaac-32nm", coprocessor="puma-vfu-32nm",
                   accelerator=None, seeds: Optional[Sequence[int]] = None) -> dict:
    """Train ``network`` on ``device`` once per coding (and per seed of ``seeds``, default just
    ``seed``) and measure each trained chip on the test set. Each coding's figures are the
    mean over the seeds, with their standard errors (``<figure>_se``, None for one seed) and
    the per-seed values (``per_seed``)."""
    codings = list(codings)
    if not codings:
        raise ValueError("compare-coding needs at least one coding (allowed: rate, spike, latency)")
    seeds = [int(seed)] if not seeds else [int(v) for v in seeds]
    rows = []
    for coding in codings:
        runs = []
        for sd in seeds:
            res, net, data = train(network, device, rule=rule, coding=coding, dataset=dataset, data_dir=data_dir,
                                   epochs=epochs, seed=sd, lr=lr, batch=batch, steps=steps, limit_train=limit_train,
                                   limit_test=limit_test, progress=progress, return_net=True, periphery=periphery,
                                   coprocessor=coprocessor, accelerator=accelerator)
            T = res["steps"]
            ev = test_events(net, data.x_test, data.y_test, coding, T, sd, periphery=periphery, coprocessor=coprocessor)
            runs.append({"seed": sd, "test_accuracy": ev["accuracy"], **{k: ev[k] for k in ev if k != "accuracy"},
                         "train_pulses": res["pulses"], "train_energy_j": res["energy_j"],
                         "train_seconds": res["seconds"], "firing": res.get("firing")})
        row = {"coding": coding, "steps": T}
        for k in FIGURES:
            m, se = _mean_se([r[k] for r in runs])
            row[k] = int(round(m)) if k == "train_pulses" and m is not None else m
            if len(seeds) > 1:
                row[k + "_se"] = se
        comps = runs[0]["energy_components_per_sample_j"]
        row["energy_components_per_sample_j"] = {c: sum(r["energy_components_per_sample_j"][c] for r in runs) / len(runs)
                                                 for c in comps}
        if len(seeds) > 1:
            row["per_seed"] = [{k: r[k] for k in ("seed",) + FIGURES + ("firing",)} for r in runs]
        rows.append(row)
    return {"network": res["network"], "device": res["device"], "dataset": dataset, "rule": rule, "epochs": epochs,
            "seed": seeds[0] if len(seeds) == 1 else seeds, "codings": rows, "periphery": res["cost"]["periphery"],
            "coprocessor": res["cost"]["coprocessor"]}


def plot_comparison(result: dict, path: str | Path) -> Path:
    plt = _plt()
    rows = result["codings"]
    names = [f"{r['coding']}\n(T = {r['steps']})" for r in rows]
    def col(k, scale=1.0):
        return ([r[k] * scale for r in rows],
                [(r.get(k + "_se") or 0.0) * scale for r in rows])
    panels = [("test accuracy", *col("test_accuracy"), "{:.3f}"),
              ("synaptic events / sample", *col("synaptic_events_per_sample"), "{:,.0f}"),
              ("ADC conversions / sample (every bit cycle)", *col("adc_conversions_per_sample"), "{:,.0f}"),
              ("energy / inference (nJ)", *col("energy_per_sample_j", 1e9), "{:.3g}")]
    if all(r.get("latency_per_sample_s") is not None for r in rows):
        panels.append(("latency / inference (us)", *col("latency_per_sample_s", 1e6), "{:.3g}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4))
    colors = ["tab:blue", "tab:orange", "tab:green"][:len(rows)]
    for ax, (title, vals, errs, fmt) in zip(axes, panels):
        ax.bar(range(len(vals)), vals, yerr=errs if any(errs) else None, capsize=4, color=colors)
        ax.set_xticks(range(len(vals)), names, fontsize=8)
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(vals):
            ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    axes[0].set_ylim(0, 1.05)
    seed = result.get("seed")
    seeds = seed if isinstance(seed, list) else [seed]
    fig.suptitle(f"{result['network']} on {result['device']}, {result['dataset']}, rule {result['rule']}, "
                 f"{result['epochs']} epoch(s), " + (f"mean +- SE over {len(seeds)} seeds" if len(seeds) > 1
                                                     else "" if seeds[0] is None else f"seed {seeds[0]}") + ": "
                 + " vs ".join(r["coding"] for r in rows) + " coding", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    savefig(fig, path, dpi=120)
    plt.close(fig)
    return path
