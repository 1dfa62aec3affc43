"""Golden engine cases: every shipped recipe with every coding it supports, run on fixed inputs
and seeds, in inference (logits, neuron updates and spikes, crossbar event counters, energy per
inference) and in one training forward + backward (the loss and every gradient).

Pinned before the network forwards moved into the one timestep engine (issue 22); the engine
must reproduce them to float tolerance. ``python tests/golden/engine_cases.py --write``
regenerates ``engine.json`` (only ever on purpose).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "engine.json"

#: (recipe, coding, steps); steps None = the recipe's
CASES = [
    *[("mlp-64-100-10", c, 6) for c in ("rate", "spike", "latency")],
    *[("mlp-784-400-400-10", c, 6) for c in ("rate", "spike", "latency")],
    ("charge-mlp-784-400-400-10", "latency", None),
    ("vgg7-charge", "latency", None),
    *[(r, c, 4) for r in ("resnet8", "sanet-resnet8") for c in ("rate", "spike")],
    *[(r, c, 3) for r in ("resnet20", "sanet-resnet20") for c in ("rate", "spike")],
]


def case_name(recipe: str, coding: str) -> str:
    return f"{recipe}/{coding}"


def run_case(recipe: str, coding: str, steps) -> dict:
    """One case: a fresh chip on the ``moderate`` card (noise, variation, 8-bit periphery),
    8 digits-shaped inputs from a fixed stream."""
    import torch

    from neurosal.cost import Ledger, cost_report
    from neurosal.engine import forward, loss_scores
    from neurosal.networks import build

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(8, 64, generator=g)
    y = torch.arange(8) % 10
    net = build(recipe, device="moderate", coding=coding, seed=5, steps=steps, input_shape=(1, 8, 8), classes=10)
    T = net.meta["steps"]
    led = Ledger(net, samples=8)
    net.eval()
    with torch.no_grad(), led.phase("forward"):
        res = forward(net, x, coding=coding, steps=T, seed=7)
    rep = cost_report(led).as_dict()
    out = {"steps": T, "scores": res.scores.double().tolist(),
           "counts": led.counts["forward"],
           "energy_j": rep["energy_j"], "latency_s": rep["latency_s"]}
    net.train()
    res = forward(net, x, coding=coding, steps=T, seed=9)
    loss = torch.nn.functional.cross_entropy(loss_scores(net, res, coding), y)
    loss.backward()
    out["train_loss"] = float(loss.detach())
    out["grad_norms"] = {n: float(p.grad.double().norm()) for n, p in net.named_parameters() if p.grad is not None}
    return out


def run_all() -> dict:
    return {case_name(r, c): run_case(r, c, s) for r, c, s in CASES}


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/golden/engine_cases.py --write")
    GOLDEN.write_text(json.dumps(run_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
