"""The cost model's evidence tables (issue 5), measured from the events of real runs.

1. ``sanet-resnet20`` (CIFAR-shaped random input) and ``mlp-784-400-400-10`` (MNIST-shaped),
   fresh chips on ``moderate``: energy per inference, rate vs spike coding.
2. The digital share of ``sanet-resnet20``: attention at every stage, at the last stage only,
   and detached after training (inference and one hybrid training step).
3. BP vs DFA training-step latency of ``mlp-784-400-400-10`` (MNIST-shaped random input,
   batch 32), on a fast device (``moderate``, 100 ns pulses) and a slow one (``ag-a-si``,
   300 us pulses).
4. What the ledger costs: one training step with and without an active ledger.

Cost cards: ``isaac-32nm`` (periphery) and ``puma-vfu-32nm`` (co-processor). Run:
``python benchmarks/cost_tables.py [--batch 16]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from neurosal.cost import PHASES, Ledger, cost_report
from neurosal.experiments import measure
from neurosal.datasets import Split
from neurosal.learning import make_rule, rule_class
from neurosal.networks import build


def _random_split(shape, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = int(torch.tensor(shape).prod())
    x = torch.rand(2 * n, feats, generator=g)
    y = torch.randint(0, 10, (2 * n,), generator=g)
    return Split("random", x[:n], y[:n], x[n:], y[n:], shape=tuple(shape), classes=10)


def _fmt(j, unit="nJ"):
    f = {"pJ": 1e12, "nJ": 1e9, "uJ": 1e6, "mJ": 1e3}[unit]
    return f"{j * f:.4g} {unit}"


def table_coding(batch):
    print("\n1. energy per inference, rate vs spike coding, fresh chips on moderate (isaac-32nm: bit-serial inputs, "
          "8 cycles per analog value)")
    print(f"{'network':<20} {'coding':<8} {'T':>3} {'nJ/inference':>13} {'analog nJ':>10} {'digital nJ':>11} "
          f"{'digital %':>9} {'ADC nJ':>8} {'array nJ':>9} {'neuron nJ':>10} {'latency us':>11}")
    for network, shape in (("sanet-resnet20", (3, 32, 32)), ("mlp-784-400-400-10", (1, 28, 28))):
        data = _random_split(shape, batch)
        for coding in ("rate", "spike"):
            r = measure(network, "moderate", coding=coding, rule=None, batch=batch, data=data)
            rep, one = r["inference"], r["inference_per_sample"]
            n = rep.samples
            print(f"{network:<20} {coding:<8} {r['steps']:>3} {rep.energy_j / n * 1e9:>13.4g} "
                  f"{rep.analog_energy_j / n * 1e9:>10.4g} {rep.digital_energy_j / n * 1e9:>11.4g} "
                  f"{100 * rep.digital_energy_j / rep.energy_j:>9.1f} {rep.energy(component='adc') / n * 1e9:>8.4g} "
                  f"{rep.energy(component='array') / n * 1e9:>9.4g} {rep.energy(component='neuron') / n * 1e9:>10.4g} "
                  f"{one.latency['forward'] * 1e6:>11.4g}")


def table_attach(batch):
    data = _random_split((3, 32, 32), batch)
    print("\n2. sanet-resnet20 on moderate (rate): the digital share by attachment strategy")
    print(f"{'strategy':<26} {'nJ/inference':>13} {'digital %':>9} {'train step uJ':>14} {'digital %':>9} "
          f"{'co-proc. uJ':>12}")
    for label, stages in (("attention at every stage", [1, 2, 3]), ("last stage only", [3]),
                          ("detached after training", [])):
        net = build("sanet-resnet20", device="moderate", coding="rate", seed=0, input_shape=data.shape, classes=10)
        if stages:                        # the strategy's attention while training
            net.attach(stages)
        tr = _train_step(net, data, batch, "hybrid")
        if not stages:                    # trained with attention everywhere, then detached
            net.detach()
        inf = _inference(net, data, batch)
        n = inf.samples
        print(f"{label:<26} {inf.energy_j / n * 1e9:>13.4g} {100 * inf.digital_energy_j / inf.energy_j:>9.1f} "
              f"{tr.energy_j * 1e6:>14.4g} {100 * tr.digital_energy_j / tr.energy_j:>9.1f} "
              f"{tr.energy(component='coprocessor') * 1e6:>12.4g}")
    print("   (the 'detached' row trains with attention at every stage, then runs without it)")


def _inference(net, data, batch):
    from neurosal.engine import forward
    led = Ledger(net, samples=batch)
    net.train()                       # fresh chip: batch statistics
    with torch.no_grad(), led.phase("forward"):
        forward(net, data.x_test[:batch], coding="rate", steps=1)
    return cost_report(led, rule=rule_class("hybrid").schedule)


def _train_step(net, data, batch, rule):
    r = make_rule(rule, net, lr=0.1, seed=0)
    led = Ledger(net, samples=batch)
    with led.active():
        r.step(data.x_train[:batch], data.y_train[:batch], coding="rate", steps=1, seed=0)
    return cost_report(led, rule=r.schedule)


def table_bp_dfa(batch):
    data = _random_split((1, 28, 28), batch)
    print(f"\n3. mlp-784-400-400-10 (rate, batch {batch}): training-step latency, BP vs DFA")
    print(f"{'device':<10} {'rule':<5} {'step latency':>13} " + " ".join(f"{ph:>11}" for ph in PHASES)
          + f" {'energy uJ':>10} {'BP/DFA':>7}")
    for dev in ("moderate", "ag-a-si"):
        lat, runs = {}, {}
        for rule in ("bp", "dfa"):
            r = measure("mlp-784-400-400-10", dev, coding="rate", rule=rule, batch=batch, data=data)
            t = r["training"]
            lat[rule], runs[rule] = t.latency_s, r
            ratio = f"{lat['bp'] / lat['dfa']:>7.2f}" if rule == "dfa" else ""
            print(f"{dev:<10} {rule:<5} {t.latency_s * 1e3:>10.4g} ms "
                  + " ".join(f"{t.latency[ph] * 1e3:>8.4g} ms" for ph in PHASES)
                  + f" {t.energy_j * 1e6:>10.4g} {ratio}")
        # the schedule alone: BP's own events, written layer by layer vs all layers at once
        led = runs["bp"]["training"]
        upd = [la["phases"]["update"]["latency_s"] for la in led.per_layer()]
        print(f"{'':<10} per-layer update times of the bp run: " + ", ".join(f"{u * 1e3:.3g} ms" for u in upd)
              + f"; written all at once: {(sum(upd) - max(upd)) * 1e3:.4g} ms less "
              f"(step {led.latency_s * 1e3:.4g} -> {(led.latency_s - sum(upd) + max(upd)) * 1e3:.4g} ms, "
              f"{led.latency_s / (led.latency_s - sum(upd) + max(upd)):.2f}x)")


def table_overhead(batch):
    data = _random_split((3, 32, 32), batch)
    net = build("sanet-resnet8", device="moderate", coding="rate", seed=0, input_shape=data.shape, classes=10)
    rule = make_rule("hybrid", net, lr=0.1, seed=0)
    x, y = data.x_train[:batch], data.y_train[:batch]
    times = {"without ledger": [], "with ledger": []}
    for k in range(6):
        for label in times:
            t0 = time.perf_counter()
            if label == "with ledger":
                with Ledger(net, samples=batch).active():
                    rule.step(x, y, coding="rate", steps=1, seed=k)
            else:
                rule.step(x, y, coding="rate", steps=1, seed=k)
            times[label].append(time.perf_counter() - t0)
    print(f"\n4. ledger overhead: sanet-resnet8 hybrid step, batch {batch}, CIFAR-shaped (median of 5 after 1 warm-up)")
    for label, ts in times.items():
        ts = sorted(ts[1:])
        print(f"   {label:<15} {ts[len(ts) // 2] * 1e3:8.1f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--only", default="1234")
    a = ap.parse_args()
    torch.manual_seed(0)
    print("cost cards: isaac-32nm (periphery, ISAAC/PUMA 32 nm), puma-vfu-32nm (co-processor); "
          "device energies from the device cards")
    if "1" in a.only:
        table_coding(a.batch)
    if "2" in a.only:
        table_attach(a.batch)
    if "3" in a.only:
        table_bp_dfa(32)
    if "4" in a.only:
        table_overhead(a.batch)


if __name__ == "__main__":
    main()
