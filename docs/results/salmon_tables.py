"""The tables of the salmon-hypotheses study, per hypothesis: SAnet against its backbone.

Reads the sweep's results file and prints, per condition (device, rule, batch norm, column
errors, attention optimizer) and network: final test accuracy (mean ± SE over seeds), the mean
of the last three epochs' test accuracies (a steadier figure where accuracy swings from epoch
to epoch), the digital share of the energy per inference and in training, and the seeds done.

Run: ``python docs/results/salmon_tables.py docs/results/salmon-hypotheses.jsonl``
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict


def mean_se(xs):
    n = len(xs)
    m = sum(xs) / n
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n) if n > 1 else float("nan")
    return m, se


def condition(cfg: dict) -> tuple:
    net = cfg.get("network", "")
    col = (cfg.get("network.periphery.column_gain"), cfg.get("network.periphery.column_offset"))
    return (cfg.get("device"), cfg.get("rule"), cfg.get("network.batch_norm", "digital"),
            "none" if col == (None, None) else f"gain {col[0]}, offset {col[1]}",
            cfg.get("attention_optimizer", "rule")), net


def main(path: str) -> None:
    cells = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        if r.get("status") != "ok":
            continue
        cond, net = condition(r["config"])
        res = r["result"]
        hist = [h["test_accuracy"] for h in res["history"]]
        cells[cond, net].append((res["test_accuracy"], sum(hist[-3:]) / len(hist[-3:]),
                                 res["digital_share"]["inference"], res["digital_share"]["training"],
                                 r["config"].get("seed")))
    print("| device | rule | batch norm | column errors | attention optimizer | network | n | final accuracy | "
          "last-3-epoch accuracy | digital share, inference | digital share, training |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (cond, net), rows in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] != "sanet-resnet8")):
        fin, late, di, dt = (mean_se([row[i] for row in rows]) for i in range(4))
        print(f"| {' | '.join(str(c) for c in cond)} | {net} | {len(rows)} | {fin[0]:.3f} ± {fin[1]:.3f} | "
              f"{late[0]:.3f} ± {late[1]:.3f} | {100 * di[0]:.1f} % | {100 * dt[0]:.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1])
