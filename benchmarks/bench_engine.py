"""The one timestep engine against plain torch (+ norse), in one run (medians, interleaved).

(a) sanet-resnet8 spike-coded, T = 8, batch 64, CIFAR-shaped input (3x32x32, Bernoulli input
    spikes at the pixel intensities), inference through the engine on ``ideal`` devices: the
    recipe as shipped (8-bit ADC, 16-bit fixed-point co-processor) and with an ideal periphery
    and a float co-processor (then the math is the twin's: the logits are checked to agree),
    against the same graph written here in plain torch (``nn.Conv2d``, ``BatchNorm2d``, the SE
    blocks) with norse's ``LIFBoxCell``: layer by layer (each convolution over all ``T`` steps
    at once, as the engine reads) and step by step.
(b) charge-mlp-784-400-400-10 with DSTD M = 8, batch 64, training forward + backward (random
    grid offsets, cross-entropy), against its matmul floor: the two matmuls per layer
    (``S @ W`` and ``S @ (beta W)`` on every grid interval) and their backward in plain torch,
    with nothing else.
(c) What recording adds to ``simulate``: the same run with ``out`` (spikes of every
    population of the first 16 samples) and without.
(d) Memory as T grows: peak RSS of a recorded ``simulate`` (spikes and membrane potentials)
    at T = 1,000 and T = 8,000, each in its own process (peak RSS above the RSS just before
    the call, Linux /proc).

Run: ``make bench-engine`` (or ``python benchmarks/bench_engine.py --help``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_sim import peak_above, reset_peak
from timing import interleaved


# ============================================================================ (a)
def _card(name: str, **changes):
    from neurosal.networks.recipes import load_network
    card = load_network(name)
    per = changes.pop("periphery", None)
    if per is not None:
        changes["periphery"] = dataclasses.replace(card.periphery, **per)
    return dataclasses.replace(card, **changes)


def _lif_cell(p):
    import norse.torch as norse
    from norse.torch.functional.lif_box import LIFBoxParameters
    return norse.LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.as_tensor(1.0 / p.tau_mem),
                                             v_leak=torch.as_tensor(p.v_leak), v_th=torch.as_tensor(p.v_th),
                                             v_reset=torch.as_tensor(p.v_reset), method="heaviside"), dt=1e-3)


class PlainSAnet8(torch.nn.Module):
    """The spike-coded sanet-resnet8 graph in plain torch + norse, with ``net``'s weights."""

    def __init__(self, net):
        super().__init__()

        def conv(a):
            c = torch.nn.Conv2d(a.in_channels, a.out_channels, a.kernel_size, stride=a._s, padding=a._p,
                                bias=False)
            with torch.no_grad():
                c.weight.copy_(a.weight.detach().reshape(c.weight.shape))
            return c
        self.stem, self.bn = conv(net.stem), copy.deepcopy(net.bn)
        self.blocks = torch.nn.ModuleList()
        for stage in net.stages:
            for blk in stage:
                m = torch.nn.Module()
                m.c1, m.b1 = conv(blk.conv1), copy.deepcopy(blk.bn1)
                m.c2, m.b2 = conv(blk.conv2), copy.deepcopy(blk.bn2)
                m.sc = None if blk.short is None else conv(blk.short[0])
                m.sb = None if blk.short is None else copy.deepcopy(blk.short[1])
                self.blocks.append(m)
        self.se = torch.nn.ModuleList()
        for k in (1, 2, 3):
            a = net.attn[str(k)]
            m = torch.nn.Module()
            m.f1, m.f2 = copy.deepcopy(a.fc1), copy.deepcopy(a.fc2)
            self.se.append(m)
        self.fc = torch.nn.Linear(net.fc.in_features, net.fc.out_features)
        with torch.no_grad():
            self.fc.weight.copy_(net.fc.weight.detach().reshape(self.fc.weight.shape))
            self.fc.bias.copy_(net.fc.bias.detach())
        self.lif_p, self.scale = net.lif, net.spike_logit_scale

    @staticmethod
    def _se(m, x):
        s = torch.sigmoid(m.f2(F.relu(m.f1(x.mean((2, 3))))))
        return x * s[:, :, None, None]

    def _lif_over(self, cur, T):
        """norse LIF neurons through the ``T`` steps of ``cur`` ``[T*B, ...]``."""
        cell, s, zs = _lif_cell(self.lif_p), None, []
        for c in cur.reshape(T, -1, *cur.shape[1:]).unbind(0):
            z, s = cell(c, s)
            zs.append(z)
        return torch.stack(zs).reshape(cur.shape)

    def layers(self, s_in):
        """Layer by layer: every convolution over all ``T`` steps at once."""
        T = s_in.shape[0]
        h = self._lif_over(self.bn(self.stem(s_in.flatten(0, 1))), T)
        for k, m in enumerate(self.blocks):
            z1 = self._lif_over(m.b1(m.c1(h)), T)
            z2 = self._lif_over(m.b2(m.c2(z1)), T)
            sc = h if m.sc is None else self._lif_over(m.sb(m.sc(h)), T)
            h = self._se(self.se[k], z2 + sc)
        out = self.fc(h.mean((2, 3))).reshape(T, -1, self.fc.out_features)
        return self.scale * out.mean(0)

    def steps(self, s_in):
        """Step by step: the whole network once per time step (norse's usual loop)."""
        T = s_in.shape[0]
        n = 2 + 3 * len(self.blocks)
        cells, st = [_lif_cell(self.lif_p) for _ in range(n)], [None] * n
        acc = 0
        for t in range(T):
            z, st[0] = cells[0](self.bn(self.stem(s_in[t])), st[0])
            h, q = z, 1
            for k, m in enumerate(self.blocks):
                z1, st[q] = cells[q](m.b1(m.c1(h)), st[q])
                z2, st[q + 1] = cells[q + 1](m.b2(m.c2(z1)), st[q + 1])
                if m.sc is None:
                    sc = h
                else:
                    sc, st[q + 2] = cells[q + 2](m.sb(m.sc(h)), st[q + 2])
                q += 3
                h = self._se(self.se[k], z2 + sc)
            acc = acc + self.fc(h.mean((2, 3)))
        return self.scale * acc / T


def bench_a(args) -> dict:
    from neurosal.engine import Simulator
    from neurosal.networks import build
    T, B = 8, 64
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 32, 32, generator=g)
    s_in = (torch.rand(T, B, 3, 32, 32, generator=g) < x).float()
    shipped = build("sanet-resnet8", device="ideal", coding="spike", steps=T, input_shape=(3, 32, 32), classes=10)
    same = build(_card("sanet-resnet8", cp_format="float", periphery={"adc_bits": None}), device="ideal",
                 coding="spike", steps=T, input_shape=(3, 32, 32), classes=10)
    for n in (shipped, same):
        n.eval()
    twin = PlainSAnet8(same).eval()

    def engine(net, chunk=T):
        return lambda: Simulator(net, dt=net.dt, chunk=chunk).run(s_in, steps=T, spikes_in=True).scores

    with torch.no_grad():
        ref = twin.layers(s_in)
        for label, out in (("step by step", twin.steps(s_in)), ("engine", engine(same)()),
                           ("engine, chunk 1", engine(same, 1)())):
            err = float((out - ref).abs().max())
            if err > 1e-3 * float(ref.abs().max()) + 1e-5:
                raise SystemExit(f"(a) {label}: logits differ from the plain twin by {err:.3g}: not the same graph")
        impls = {"plain torch + norse, step by step": lambda: twin.steps(s_in),
                 "plain torch + norse, layer by layer": lambda: twin.layers(s_in),
                 "engine, ideal periphery + float co-proc., chunk 1": engine(same, 1),
                 "engine, ideal periphery + float co-proc., chunk 8": engine(same),
                 "engine, as shipped (8-bit ADC, 16-bit fixed), chunk 1": engine(shipped, 1),
                 "engine, as shipped (8-bit ADC, 16-bit fixed), chunk 8": engine(shipped)}
        return interleaved(impls, args.repeats, warmup=2)


# ============================================================================ (b)
def bench_b(args) -> dict:
    from neurosal.networks import build
    from neurosal.neurons import beta_of
    M, B = 8, 64
    net = build(_card("charge-mlp-784-400-400-10", dstd_steps=M), device="ideal", coding="latency", seed=0)
    bare = build(_card("charge-mlp-784-400-400-10", dstd_steps=M, periphery={"adc_bits": None}), device="ideal",
                 coding="latency", seed=0)
    net.train(), bare.train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 784, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    c = net.card.charge
    ws = [layer.weight.detach().t().contiguous().requires_grad_() for layer in net.layers]
    # the floor's grid inputs: one row per sample and interval (K = M + 1 with a random offset)
    Ss = [torch.rand(B * (M + 1), w.shape[0], generator=g).requires_grad_() for w in ws]

    def engine(net=net):
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    def floor():
        loss = 0
        for S, w in zip(Ss, ws):
            loss = loss + (S @ w).sum() + (S @ beta_of(w, c.e_plus, c.e_minus)).sum()
        loss.backward()
        for t in Ss + ws:
            t.grad = None

    def floor_mm():                     # the same matmuls, beta precomputed: the bare GEMMs
        loss = 0
        for S, w, bw in zip(Ss, ws, bws):
            loss = loss + (S @ w).sum() + (S @ bw).sum()
        loss.backward()
        for t in Ss + ws + bws:
            t.grad = None
    bws = [beta_of(w, c.e_plus, c.e_minus).detach().requires_grad_() for w in ws]
    return interleaved({"engine": engine, "bare": lambda: engine(bare), "floor": floor, "floor_mm": floor_mm},
                       args.repeats * 3, warmup=2)


# ============================================================================ (c) + (d)
def _simulate(network, T, out, record, samples, batch=64):
    from neurosal.experiments.inference import simulate
    return simulate(network, "moderate", coding="spike", steps=T, samples=samples, dataset="digits",
                    record=record, out=out, record_samples=16, overwrite=True, batch=batch, progress=False)


def bench_c(args) -> list:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for network, T, record in (("sanet-resnet8", 8, ("spikes",)), ("mlp-64-100-10", 256, ("spikes", "v"))):
            out = Path(d) / "r.h5"
            t = interleaved({"off": lambda: _simulate(network, T, None, record, 256),
                             "on": lambda: _simulate(network, T, out, record, 256)}, args.repeats, warmup=1)
            rows.append((network, T, "+".join(record), t["off"], t["on"], out.stat().st_size / 1e6))
    return rows


def one_case(case: str) -> dict:
    torch.set_num_threads(2)
    _, T = case.split(":")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.h5"
        _simulate("mlp-64-100-10", 16, out, ("spikes", "v"), 64)          # imports and first-call work
        base = reset_peak()
        t0 = time.perf_counter()
        _simulate("mlp-64-100-10", int(T), out, ("spikes", "v"), 64)
        dt = time.perf_counter() - t0
        return {"seconds": dt, "peak_mb": peak_above(base), "file_mb": out.stat().st_size / 1e6}


def run_case(case: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", case], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="abcd", help="which parts to run, e.g. 'ab'")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_case(args.one)))
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu\n")
    if "a" in args.only:
        t = bench_a(args)
        ref = min(t["plain torch + norse, layer by layer"], t["plain torch + norse, step by step"])
        print("(a) sanet-resnet8 spike-coded, T = 8, batch 64, 3x32x32, inference (median s per run)")
        print(f"  {'implementation':<56} {'seconds':>9} {'x twin':>8}")
        for k, v in t.items():
            print(f"  {k:<56} {v:>9.4f} {v / ref:>7.2f}x")
        print("  x twin: against the faster plain twin; target <= 1.3x (logits of the ideal-periphery engine "
              "checked equal to the twin's)\n")
    if "b" in args.only:
        t = bench_b(args)
        print("(b) charge-mlp-784-400-400-10, DSTD M = 8, batch 64, forward + backward (median s per step)")
        print(f"  {'':<52} {'seconds':>9} {'x floor':>8}")
        for k, label in (("floor_mm", "matmul floor: S@W, S@(beta W) and their backward"),
                         ("floor", "... with beta(W) formed (and differentiated) too"),
                         ("engine", "engine, recipe (8-bit ADC per row tile), DSTD walk"),
                         ("bare", "engine, ideal periphery, DSTD walk")):
            print(f"  {label:<52} {t[k]:>9.4f} {t[k] / t['floor'] :>7.2f}x")
        print("  target: the engine (recipe) <= 1.5x the floor with beta(W)\n")
    if "c" in args.only:
        rows = bench_c(args)
        print("(c) recording overhead: simulate, 256 digits samples, 16 recorded (median s per run)")
        print(f"  {'network':<16} {'T':>5} {'recorded':<10} {'no file':>9} {'recorded':>9} {'overhead':>9} "
              f"{'file MB':>8}")
        for net, T, rec, off, on, mb in rows:
            print(f"  {net:<16} {T:>5} {rec:<10} {off:>9.3f} {on:>9.3f} {100 * (on / off - 1):>8.1f}% {mb:>8.2f}")
        print("  target: <= 10 %\n")
    if "d" in args.only:
        print("(d) memory as T grows: mlp-64-100-10 spike, 64 samples, spikes + v of 16 recorded (own process each)")
        print(f"  {'T':>6} {'seconds':>9} {'peak MB':>9} {'file MB':>9}")
        for T in (1000, 8000):
            r = run_case(f"record:{T}")
            print(f"  {T:>6} {r['seconds']:>9.2f} {r['peak_mb']:>9.1f} {r['file_mb']:>9.1f}")
        print("  target: peak flat in T (the file grows, the process does not)")


if __name__ == "__main__":
    main()
