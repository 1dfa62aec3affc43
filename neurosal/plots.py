"""PNG plots (matplotlib, Agg backend: no display needed): device curves with their
cycle-to-cycle spread, spike rasters of recordings, learning curves of a training run.
matplotlib is imported when a plot is drawn (:func:`_plt`), not with neurosal.

May import: :mod:`neurosal.devices`, :mod:`neurosal.files`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from .devices import Device, Drift, Faults, Variation
from .files import savefig


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def noisy_cycles(device, samples: int = 200, seed: int = 0) -> np.ndarray:
    """``samples`` independent full cycles (Pmax pulses up from Gmin, Pmax down) of one
    nominal-curve device with its cycle-to-cycle noise (no D2D variation): [samples, 2*Pmax+1] (S)."""
    card = dataclasses.replace(device.card, variation=Variation(), faults=Faults(), drift=Drift())
    dev = Device(card)
    gen = torch.Generator().manual_seed(seed)
    st = dev.init_state((samples,), u0=0.0, dtype=torch.float64)
    p = card.pmax
    out = [st.g.clone()]
    for k in range(2 * p):
        dev.pulse(st, torch.full((samples,), 1.0 if k < p else -1.0, dtype=torch.float64), generator=gen)
        out.append(st.g.clone())
    return torch.stack(out, 1).numpy()


def plot_device_curves(names, output, samples: int = 200, seed: int = 0) -> Path:
    """Conductance vs pulse number (potentiation then depression) for each device, the
    nominal curve as a line and the cycle-to-cycle 5-95 % spread shaded."""
    plt = _plt()
    n = len(names)
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, name in zip(axes.flat, names):
        dev = Device(name)
        c = dev.card
        up, down = dev.curve()
        nominal = np.concatenate([up, down[1:]]) * 1e6
        x = np.arange(nominal.size)
        cyc = noisy_cycles(dev, samples, seed) * 1e6
        lo, hi = np.percentile(cyc, [5, 95], axis=0)
        ax.fill_between(x, lo, hi, color="tab:orange", alpha=0.35, lw=0,
                        label=f"cycle-to-cycle spread, 5-95 % of {samples} cycles")
        ax.plot(x[:c.pmax + 1], nominal[:c.pmax + 1], color="tab:blue", lw=1.6, label="potentiation")
        ax.plot(x[c.pmax:], nominal[c.pmax:], color="tab:red", lw=1.6, label="depression")
        ax.axvline(c.pmax, color="0.6", lw=0.8, ls=":")
        ax.set_title(f"{c.name} ({c.model}, {c.levels} levels, C2C σ={c.noise.c2c:.1%})", fontsize=9)
        ax.set_xlabel("pulse number")
        ax.set_ylabel("conductance (µS)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if nrow == 1 else 0.04, 1, 1))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    savefig(fig, out, dpi=120)
    plt.close(fig)
    return out


def network_order(metadata: dict, names) -> list:
    """``names`` (populations or reports of a recording) in network order: the input first, then
    the components in the order the engine lists them (``metadata['engine']``), then the rest
    by name (a file without engine metadata: input first, then by name)."""
    eng = metadata.get("engine") if isinstance(metadata.get("engine"), dict) else {}
    order = {n: i for i, n in enumerate(["input", *eng.get("components", {})])}
    return sorted(names, key=lambda p: (order.get(p, len(order)), p != "input", p))


def plot_raster(rec, path, sample: int = 0) -> Path:
    """Spike raster of every population of a recording for one recorded sample (PNG)."""
    plt = _plt()
    pops = list(rec.populations)
    if not pops:
        raise ValueError(f"{rec.path}: the recording has no spikes (record with --record spikes)")
    pops = network_order(rec.metadata, pops)
    n_samples = len(rec.samples) if rec.samples is not None else 1
    if not 0 <= sample < n_samples:
        raise ValueError(f"--sample {sample} out of range: the file holds samples 0..{n_samples - 1}")
    sizes = [rec.n_neurons(p) for p in pops]
    heights = [max(1.0, min(4.0, n / 40)) for n in sizes]
    fig, axes = plt.subplots(len(pops), 1, figsize=(8, 1.2 + 1.1 * sum(heights)), sharex=True,
                             gridspec_kw=dict(height_ratios=heights), squeeze=False)
    dt = float(rec.metadata.get("dt_ms", 1.0))
    eng = rec.metadata.get("engine") if isinstance(rec.metadata.get("engine"), dict) else {}
    windows = int(eng.get("windows", 0))       # charge-domain: one accumulation phase per layer
    t_end = dt * float(windows or rec.metadata.get("steps", 1))
    label_of = int(rec.labels[sample]) if rec.labels is not None and sample < len(rec.labels) else None
    for ax, pop, n in zip(axes[:, 0], pops, sizes):
        t, i = rec.spike_trains(pop, sample)
        ax.set_xlim(0.0 if windows else -dt, t_end)
        ax.tick_params(labelsize=7)
        for k in range(1, windows):
            ax.axvline(k * dt, color="0.8", lw=0.6, zorder=0)
        if len(t) == 0 and f"{pop}.v" in rec.reports and n <= 32:
            # a silent (e.g. leaky-integrator readout) layer: show its membrane potentials
            times = rec.times(f"{pop}.v")
            v = rec.trace(pop, "v", sample)
            for j in range(n):
                bold = j == label_of
                ax.plot(times, v[:, j], lw=1.6 if bold else 0.7, color="tab:red" if bold else "0.55",
                        label=f"neuron {j} (the label)" if bold else None)
            ax.set_ylabel(f"{pop} v\n({n})", fontsize=8)
            ax.text(1.0, 1.0, "no spikes: membrane potentials", transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=7)
            if label_of is not None:
                ax.legend(fontsize=7, loc="upper left", frameon=False)
            continue
        ax.scatter(t, i, s=4 if len(t) < 5000 else 1, marker="|" if n <= 200 else ".", color="k", linewidths=0.8)
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_ylabel(f"{pop}\n({n})", fontsize=8)
        ax.text(1.0, 1.0, f"{len(t)} spikes", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    axes[-1, 0].set_xlabel("time (ms)" + ("; one accumulation phase per window, input first" if windows else ""))
    md = rec.metadata
    label = ""
    if rec.labels is not None and sample < len(rec.labels):
        label = f", label {int(rec.labels[sample])}"
    net = md.get("network", {}).get("name", "") if isinstance(md.get("network"), dict) else ""
    dev = ""
    if isinstance(md.get("devices"), dict):
        dev = ", ".join(v.get("name", "") for v in md["devices"].values() if isinstance(v, dict))
    fig.suptitle(f"{net} on {dev}, {md.get('coding', '')} coding: recorded sample {sample}{label}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    savefig(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_history(result: dict, path) -> Path:
    """Learning curves of one training run: loss and test accuracy per epoch."""
    from matplotlib.ticker import MaxNLocator
    plt = _plt()
    h = result["history"]
    ep = [r["epoch"] for r in h]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [r["loss"] for r in h], "o-", color="tab:red")
    a1.set_ylabel("training loss (mean over the epoch)")
    a2.plot(ep, [r["test_accuracy"] for r in h], "o-", color="tab:blue")
    a2.set_ylabel("test accuracy")
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{result['network']} on {result['device']}, rule {result['rule']}, {result['coding']} coding, "
                 f"{result['dataset']}", fontsize=9)
    fig.tight_layout()
    out = savefig(fig, path, dpi=120)
    plt.close(fig)
    return out
