"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def noisy_cycles(device, samples: int = 200, seed: int = 0) -> np.ndarray:
    """``samples`` independent full cycles (Pmax pulses up from Gmin, Pmax down) of one
    nominal-curve device with its cycle-to-cycle noise (no D2D variation): [samples, 2*Pmax+1] (S)."""
    import dataclasses
    from .devices import Device, Faults, Variation, Drift
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
    from .devices import Device
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
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
