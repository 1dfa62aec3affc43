"""Plots of a cost measurement: energy per layer by component, for inference and for one
training step by phase (PNG, matplotlib's Agg backend).

May import: :mod:`neurosal.cost.pricing`, :mod:`neurosal.files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..files import savefig
from .ledger import PHASES
from .pricing import COMPONENTS

__all__ = ["plot_breakdown"]


def plot_breakdown(result: dict, path, title: Optional[str] = None) -> Path:
    """Stacked bars by component: energy per inference per layer, and one training step's
    energy per layer and phase. Writes a PNG."""
    import matplotlib                     # heavy: imported when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(COMPONENTS, ("#4c72b0", "#8172b2", "#c44e52", "#55a868", "#dd8452", "#937860",
                                   "#da8bc3", "#ccb974")))
    rep_i = result["inference"]
    rep_t = result.get("training")
    ncols = 2 if rep_t is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 4.8), squeeze=False)
    ax = axes[0][0]
    names = [layer["name"] for layer in rep_i.per_layer()]
    n = max(1, rep_i.samples)
    bottom = [0.0] * len(names)
    for comp in COMPONENTS:
        vals = [rep_i.energy("forward", comp, u) / n * 1e12 for u in names]
        if any(vals):
            ax.bar(range(len(names)), vals, bottom=bottom, color=colors[comp], label=comp)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("energy per inference (pJ)")
    ax.set_title(f"inference: {rep_i.energy_j / n * 1e9:.3g} nJ/sample, "
                 f"digital {100 * rep_i.digital_energy_j / max(rep_i.energy_j, 1e-300):.1f} %", fontsize=9)
    ax.legend(fontsize=7)
    if rep_t is not None:
        ax = axes[0][1]
        width = 0.27
        top = 0.0
        for k, ph in enumerate(PHASES):
            bottom = [0.0] * len(names)
            for comp in COMPONENTS:
                vals = [rep_t.energy(ph, comp, u) * 1e9 for u in names]
                if any(vals):
                    ax.bar([i + (k - 1) * width for i in range(len(names))], vals, width, bottom=bottom,
                           color=colors[comp], edgecolor="black" if ph == "update" else "none", linewidth=0.4,
                           hatch=("", "//", "..")[k], label=comp if k == 0 else None)
                    bottom = [b + v for b, v in zip(bottom, vals)]
            top = max([top] + bottom)
        ax.set_ylim(0, 1.05 * top if top > 0 else 1)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("energy of one training step (nJ)")
        ax.set_title(f"training step ({rep_t.rule}, batch {rep_t.samples}): bars forward | backward (//) | "
                     f"update (..)\n{rep_t.energy_j * 1e6:.3g} uJ, {rep_t.latency_s * 1e3:.3g} ms", fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in COMPONENTS if rep_t.energy(component=c) > 0]
        ax.legend(handles, [c for c in COMPONENTS if rep_t.energy(component=c) > 0], fontsize=7)
    fig.suptitle(title or f"{result.get('network')} ({result.get('coding')}, T = {result.get('steps')})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig(fig, path, dpi=120)
    plt.close(fig)
    return path
