"""Spike-coded on-chip training on MNIST against a plain-torch twin, in one run.

``mlp-784-400-400-10``, spike coding (Bernoulli input spikes, T = 32 by default), LIF hidden
layers with the recipe's data-driven gain initialization, leaky-integrator readout read by its
maximum membrane, cross-entropy, batch 8, lr 0.1, one epoch:

* neurosal, ``bp`` on ``ideal`` (BPTT through the engine, errors through the arrays, pulses
  with stochastic rounding; the recipe's 8-bit ADC periphery);
* neurosal, ``hybrid`` on ``ag-a-si``;
* the twin: the same network written here in plain torch (``nn.Linear``-free matmuls, the LIF-box
  equations norse steps, neurosal's SuperSpike surrogate with the recipe's width: norse
  1.1.0's own ``super`` surrogate ignores its width), no devices, no periphery, plain SGD, with
  the calibrated initial weights of the neurosal network and the same data order.

Accuracy on the validation split (MNIST ``t10k-*`` of the shared data: the last 10,000
official training images) and wall time. Run:
``python benchmarks/bench_spike_train.py --data-dir ../shared/data/mnist [--limit-train N]``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def twin_run(net, data, *, steps, lr, batch, seed, epochs=1):
    """Train the plain-torch twin of the (calibrated) chain ``net``; returns (accuracy, seconds)."""
    from neurosal.engine import LOGIT_SCALE
    from neurosal.neurons import SuperSpike
    Ws = [layer.synapse.weight.detach().clone().requires_grad_() for layer in net.layers]        # [out, in]
    bs = [layer.synapse.bias.detach().clone().requires_grad_() for layer in net.layers]
    ps = [layer.neurons.p for layer in net.layers]
    dt = net.layers[0].neurons.dt

    def forward(x, gen):
        T, B = steps, x.shape[0]
        h = (torch.rand((T,) + tuple(x.shape), generator=gen) < x).float()
        for li, (W, b, p) in enumerate(zip(Ws, bs, ps)):
            cur = (h.reshape(T * B, -1) @ W.t() + b).reshape(T, B, -1)
            a = dt / p.tau_mem
            v = torch.full((B, W.shape[0]), p.v_leak)
            zs, vmax = [], None
            last = li == len(Ws) - 1
            for i in cur.unbind(0):
                v = v + a * (i + p.v_leak - v)
                if last:                                   # the leaky-integrator readout
                    vmax = v if vmax is None else torch.maximum(vmax, v)
                    continue
                z = SuperSpike.apply(v - p.v_th, p.alpha)
                v = v - z * (v - p.v_reset)
                zs.append(z)
            if last:
                return vmax * LOGIT_SCALE
            h = torch.stack(zs)

    n = len(data.y_train)
    g = torch.Generator().manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            j = perm[i:i + batch]
            loss = F.cross_entropy(forward(data.x_train[j], gen), data.y_train[j])
            grads = torch.autograd.grad(loss, Ws + bs)
            with torch.no_grad():
                for t, gr in zip(Ws + bs, grads):
                    t.sub_(lr * gr)
    seconds = time.perf_counter() - t0
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.y_test), 500):
            correct += int((forward(data.x_test[i:i + 500], gen).argmax(1) == data.y_test[i:i + 500]).sum())
    return correct / len(data.y_test), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="tbh", help="t: twin, b: bp on ideal, h: hybrid on ag-a-si")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from neurosal.datasets import load
    from neurosal.engine import initialize_gains
    from neurosal.networks import build, load_network
    from neurosal.training import TrainConfig, train
    data = load("mnist", data_dir=args.data_dir, seed=args.seed, limit_train=args.limit_train)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; MNIST {len(data.y_train)} training "
          f"images, {len(data.y_test)} validation images, T = {args.steps}, one epoch, batch 8, lr 0.1\n")
    rows = []
    if "t" in args.only:
        card = load_network("mlp-784-400-400-10")
        net = build(card, device="ideal", coding="spike", seed=args.seed, steps=args.steps, input_shape=data.shape,
                    classes=data.classes)
        initialize_gains(net, card, data.x_train, coding="spike", steps=args.steps, seed=args.seed)
        acc, sec = twin_run(net, data, steps=args.steps, lr=0.1, batch=8, seed=args.seed)
        rows.append(("plain-torch twin (LIF-box, SuperSpike, SGD)", acc, sec))
        print(f"  {rows[-1][0]:<44} accuracy {acc:.4f}  {sec:7.1f} s", flush=True)
    for key, rule, dev in (("b", "bp", "ideal"), ("h", "hybrid", "ag-a-si")):
        if key not in args.only:
            continue
        r = train(TrainConfig(network="mlp-784-400-400-10", device=dev, rule=rule, coding="spike", dataset="mnist",
                              data_dir=args.data_dir, seed=args.seed, steps=args.steps, limit_train=args.limit_train,
                              epochs=1), progress=False)
        rows.append((f"neurosal {rule} on {dev}", r.test_accuracy, r.seconds))
        print(f"  {rows[-1][0]:<44} accuracy {r.test_accuracy:.4f}  {r.seconds:7.1f} s  firing "
              + ", ".join(f"{k} {v:.3f}" for k, v in (r.firing or {}).items()), flush=True)
    if rows and "t" in args.only:
        tw = rows[0]
        print("\n  vs the twin: " + "; ".join(f"{lab}: {100 * (a - tw[1]):+.1f} points, {s / tw[2]:.2f}x time"
                                              for lab, a, s in rows[1:]))
        print("  targets: bp on ideal >= 0.95 and within 1 point of the twin at <= 1.5x its time; "
              "hybrid on ag-a-si >= 0.94")


if __name__ == "__main__":
    main()
