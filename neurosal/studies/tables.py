"""``neurosal report``: tables with error bars and plots from a sweep's results file.

Per study, the trials are grouped into cells by every configuration key that varies across
the study except ``seed``; a cell's figures are the mean ± standard error over its seeds
(``N`` seeds; the SE is the sample standard deviation over sqrt(N), blank for N = 1).

May import: :mod:`.sweep` (the results file), :mod:`neurosal.files`; matplotlib when a plot is drawn.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Optional

from ..files import savefig, write_text
from .runs import read_results

__all__ = ["summarize", "report"]

#: figures per cell: (column, how to read it from a trial's result)
METRICS = (
    ("accuracy", lambda r: r["test_accuracy"]),
    ("software_accuracy", lambda r: r["software_accuracy"]),      # verify: before programming
    ("energy_nJ_per_inference", lambda r: r["cost"]["inference"]["energy_per_sample_j"] * 1e9),
    ("train_energy_mJ", lambda r: r["cost"]["training"]["energy_j"] * 1e3),
    ("train_latency_s", lambda r: r["cost"]["training"]["latency_s"]),     # the chip's, whole training
    ("digital_share_inference", lambda r: r["digital_share"]["inference"]),   # of the energy per inference
    ("pulses", lambda r: r["pulses"]),
    ("seconds", lambda r: r["seconds"]),
)
_IGNORED = ("seed", "data_dir")


def _mean_se(xs: list) -> tuple:
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan"), n
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n), n


def summarize(records: list) -> dict:
    """study -> {"axes": varying keys, "cells": [{"key": {...}, metric: (mean, se, n), "history": ...}],
    "failed": [...]} from the latest record of each trial."""
    latest = {}
    for r in records:
        latest[r["id"]] = r
    by_study: dict = {}
    for r in latest.values():
        by_study.setdefault(r.get("study") or "?", []).append(r)
    out = {}
    for study, recs in sorted(by_study.items()):
        ok = [r for r in recs if r.get("status") == "ok"]
        failed = [r for r in recs if r.get("status") != "ok"]
        keys = sorted({k for r in ok for k in r["config"]})
        axes = [k for k in keys if k not in _IGNORED and len({json_key(r["config"].get(k)) for r in ok}) > 1]
        cells: dict = {}
        for r in ok:
            ck = tuple(json_key(r["config"].get(a)) for a in axes)
            cells.setdefault(ck, []).append(r)
        rows = []
        for ck, rs in cells.items():
            row = {"key": dict(zip(axes, (rs[0]["config"].get(a) for a in axes)))}
            for name, get in METRICS:
                vals = []
                for r in rs:
                    try:
                        vals.append(float(get({**r["result"], "seconds": r.get("seconds", 0.0)})))
                    except (KeyError, TypeError):
                        pass
                row[name] = _mean_se(vals) if vals else (float("nan"), float("nan"), 0)
            hist = [[h["test_accuracy"] for h in r["result"].get("history", [])] for r in rs]
            if hist and all(len(h) == len(hist[0]) for h in hist):
                row["history"] = [_mean_se([h[i] for h in hist]) for i in range(len(hist[0]))]
            row["seeds"] = sorted(r["config"].get("seed", 0) for r in rs)
            rows.append(row)
        rows.sort(key=lambda row: tuple(json_key(row["key"][a]) for a in axes))
        out[study] = {"axes": axes, "cells": rows, "failed": failed}
    return out


def json_key(v) -> str:
    return repr(v)


def _fmt(m, se, digits=4) -> str:
    if isinstance(m, float) and math.isnan(m):
        return "-"
    s = f"{m:.{digits}g}"
    return s if math.isnan(se) else f"{s} ± {se:.2g}"


def _table(study: str, s: dict) -> str:
    axes = s["axes"]
    head = axes + ["N"] + [m for m, _ in METRICS]
    lines = [f"### {study}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in s["cells"]:
        acc = row["accuracy"]
        vals = [str(row["key"][a]) for a in axes] + [str(acc[2])]
        vals += [_fmt(*row[m][:2], digits=4 if m.endswith("accuracy") else 3) for m, _ in METRICS]
        lines.append("| " + " | ".join(vals) + " |")
    if s["failed"]:
        lines += ["", f"{len(s['failed'])} failed trial(s):"]
        lines += [f"- {r['config']}: {r.get('error', '?')}" for r in s["failed"][:20]]
    return "\n".join(lines) + "\n"


def _x_axis(s: dict, wanted: Optional[str] = None) -> Optional[str]:
    """The plots' x axis: ``wanted`` if it varies; else a card field (a nonideality level), else
    the device, else the axis with the most values; the rule is never the x axis while another
    one varies."""
    axes = s["axes"]
    if wanted is not None:
        if wanted not in axes:
            raise ValueError(f"--x {wanted!r} does not vary in this study; its axes: {', '.join(axes) or 'none'}")
        return wanted
    for a in axes:
        if "." in a:
            return a
    if "device" in axes:
        return "device"
    others = [a for a in axes if a != "rule"]
    if not others:
        return axes[0] if axes else None
    return max(others, key=lambda a: len({repr(row["key"][a]) for row in s["cells"]}))


def _x_axes(s: dict, wanted: Optional[str]) -> list:
    """The axes that get an accuracy plot: ``wanted``; else every card field (nonideality
    levels) and the device; else the axis with the most values."""
    if wanted is not None:
        return [_x_axis(s, wanted)]
    axes = [a for a in s["axes"] if "." in a] + (["device"] if "device" in s["axes"] else [])
    axes = axes or ([_x_axis(s)] if s["axes"] else [None])
    # grids with different axes (e.g. one strategy per grid): when an axis is unset in some
    # cells, one more plot puts every configuration side by side
    if any(row["key"].get(a) is None for a in s["axes"] for row in s["cells"]):
        axes.append(CONFIGURATION)
    return axes


CONFIGURATION = "configuration"       # the x axis of the side-by-side plot: one tick per cell


def _style(i: int) -> dict:
    """A distinct colour and marker for series i (20 colours, then the next marker)."""
    import matplotlib
    return {"color": matplotlib.colormaps["tab20"](i % 20), "marker": "osD^v<>p*h"[(i // 20) % 10]}


def _accuracy_plot(study: str, cells: list, x_axis: Optional[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # the cells where this axis is set (a study's grids may have different axes); lines: the
    # other keys that vary among them
    if x_axis == CONFIGURATION:     # every cell its own tick, named by the keys it sets
        # (a card field by its last name: the tick is narrow)
        cells = [{**row, "key": {CONFIGURATION: "\n".join(f"{a.rsplit('.', 1)[-1]}={v}" for a, v in row["key"].items()
                                                          if v is not None and a != "seed")}}
                 for row in cells]
    cells = [row for row in cells if x_axis is None or row["key"].get(x_axis) is not None]
    others = [a for a in (cells[0]["key"] if cells else {}) if a != x_axis
              and len({repr(row["key"].get(a)) for row in cells}) > 1]
    xs = []
    for row in cells:
        v = row["key"].get(x_axis) if x_axis else ""
        if v not in xs:
            xs.append(v)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    wide = x_axis == CONFIGURATION and not numeric        # a tick per configuration, each some labels tall
    fig, ax = plt.subplots(figsize=(max(10.0, 1.35 * len(xs)) if wide else 10.0, 4.8))
    lines: dict = {}
    for row in cells:
        lk = ", ".join(f"{a}={row['key'][a]}" for a in others) or "all"
        lines.setdefault(lk, []).append(row)
    for i, (lk, rows) in enumerate(lines.items()):
        pts = sorted(((row["key"].get(x_axis) if x_axis else "", row["accuracy"]) for row in rows),
                     key=lambda p: p[0] if numeric else xs.index(p[0]))
        px = [p[0] if numeric else xs.index(p[0]) for p in pts]
        ax.errorbar(px, [p[1][0] for p in pts], yerr=[0 if math.isnan(p[1][1]) else p[1][1] for p in pts],
                    capsize=3, label=lk, linestyle="none" if x_axis == CONFIGURATION else "-", **_style(i))
    if not numeric:
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=0 if x_axis == CONFIGURATION else 20,
                      fontsize=6 if x_axis == CONFIGURATION else None)
    ax.set_xlabel(x_axis or "")
    ax.set_ylabel("test accuracy (mean ± SE over seeds)")
    ax.set_title(study)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    savefig(fig, path, dpi=120)
    plt.close(fig)


def _plots(study: str, s: dict, out_dir: Path, x: Optional[str] = None) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = s["cells"]
    if not cells:
        return []
    written = []
    for x_axis in _x_axes(s, x):
        tag = "" if x_axis is None else "_" + "".join(c if c.isalnum() else "-" for c in x_axis)
        p = out_dir / f"{study}_accuracy{tag}.png"
        _accuracy_plot(study, cells, x_axis, p)
        written.append(p)
    # an axis a trial leaves at its default (None) says nothing about the line: left out of its label
    label = lambda row: ", ".join(f"{k}={v}" for k, v in row["key"].items() if v is not None) or "all"  # noqa: E731
    nz = lambda se: 0 if math.isnan(se) else se                                         # noqa: E731

    def figure(name: str, xlabel: str, title: str, draw, log_x: bool = False) -> None:
        fig, ax = plt.subplots(figsize=(10, 4.8))
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(f"{study}: {title}")
        ax.grid(alpha=0.3)
        # below the axes, so that long labels widen the figure, not squeeze the plot
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=1, frameon=False)
        p = out_dir / f"{study}_{name}.png"
        savefig(fig, p, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(p)

    def energy(ax):                         # accuracy against energy per inference
        for i, row in enumerate(cells):
            e, a = row["energy_nJ_per_inference"], row["accuracy"]
            ax.errorbar([e[0]], [a[0]], xerr=[nz(e[1])], yerr=[nz(a[1])], capsize=3, label=label(row), **_style(i))
    figure("energy", "energy per inference (nJ)", "accuracy against energy", energy, log_x=True)
    curves = [row for row in cells if len(row.get("history", [])) > 1]

    def learning(ax):                       # where trials ran more than one epoch
        for i, row in enumerate(curves):
            h = row["history"]
            ax.errorbar(list(range(1, len(h) + 1)), [m for m, _, _ in h], yerr=[nz(se) for _, se, _ in h],
                        capsize=2, label=label(row), **_style(i))
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))       # epochs are whole
    if curves:
        figure("curves", "epoch", "learning curves", learning)
    return written


def report(results: str | Path, out_dir: Optional[str | Path] = None, x: Optional[str] = None) -> dict:
    """Summarize a results file; with ``out_dir``, write ``<study>.md``, ``<study>.csv`` and the
    PNG plots there. Returns {"tables": {study: markdown}, "files": [...], "summary": ...}."""
    results = Path(results)
    if not results.is_file():
        raise FileNotFoundError(f"{results}: no such results file")
    recs = read_results(results)
    if not recs:
        raise ValueError(f"{results}: no trial records in it (a neurosal sweep results file is JSON lines)")
    summ = summarize(recs)
    tables = {study: _table(study, s) for study, s in summ.items()}
    files = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for study, s in summ.items():
            md = out_dir / f"{study}.md"
            write_text(md, tables[study], what="table")
            files.append(md)
            cp = out_dir / f"{study}.csv"
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(s["axes"] + ["N"] + [x for m, _ in METRICS for x in (m, m + "_se")])
            for row in s["cells"]:
                w.writerow([row["key"][a] for a in s["axes"]] + [row["accuracy"][2]] +
                           [x for m, _ in METRICS for x in row[m][:2]])
            write_text(cp, buf.getvalue(), what="table")
            files.append(cp)
            files += _plots(study, s, out_dir, x)
    return {"tables": tables, "files": [str(f) for f in files], "summary": summ}
