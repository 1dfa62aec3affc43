"""Spiking simulator speed and memory, against plain torch and norse, in one run (medians).

(a) Spike-coded 784-400-10 LIF network, T = 32, batch 256, 10 % input firing, CPU:
    the neurosal engine (ideal crossbars, so the math is the same) against a plain-torch
    step loop of the same math written here, a plain-torch layer-by-layer loop, and norse
    (``nn.Linear`` + ``LIFBoxCell`` per step). Inference (no grad) and forward+backward (BPTT).
(b) The engine's event-driven path against its dense path at 50 %, 90 % and 99 % input
    silence, and what ``path='auto'`` picks.
(c) DSTD layers (M = 4, 8, 16, 32) against the exact event-driven layer, 1000 -> 1000
    neurons, batch 32, RC-spike and TTFS: forward+backward time and peak memory (each case in
    its own process; peak RSS above the RSS just before the call, Linux /proc).
(d) Recording memory as T grows: peak RSS of a streamed run at T = 256 and T = 4096.

``--accelerator cuda`` runs (a) and (b) on a GPU (device synchronized around each timed call);
(c) and (d) measure host memory and run on the CPU only.

Run: ``make bench-sim`` (or ``python benchmarks/bench_sim.py --help``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from timing import interleaved


def _status_kb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise KeyError(field)


def reset_peak() -> float:
    """Reset the kernel's peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``) and
    return the present RSS in MB, the baseline of :func:`peak_above`."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kb("VmRSS") / 1024.0


def peak_above(base_mb: float) -> float:
    """Peak RSS (MB) since :func:`reset_peak`, above its baseline."""
    return _status_kb("VmHWM") / 1024.0 - base_mb


# ============================================================================ (a) + (b)
DEV = torch.device("cpu")
SYNC = None


def _engine(path: str):
    from neurosal.crossbar import AnalogLinear
    from neurosal.neurons import LIFNeurons, LIFParameters
    from neurosal.engine import Layer, Network, Simulator
    p = LIFParameters(tau_mem=5e-3, v_th=1.0, method="super", alpha=100.0)
    l1 = AnalogLinear(784, 400, device="ideal", seed=1, init_gain=3.0)
    l2 = AnalogLinear(400, 10, device="ideal", seed=2, init_gain=3.0)
    net = Network([Layer(l1, LIFNeurons(p), "fc1"), Layer(l2, LIFNeurons(p), "fc2")]).to(DEV)
    return net, Simulator(net, chunk=32, path=path)


def bench_a(args) -> list:
    import norse.torch as norse
    from norse.torch.functional.lif_box import LIFBoxParameters
    T, B = 32, 256
    g = torch.Generator().manual_seed(0)
    s_in = (torch.rand(T, B, 784, generator=g) < 0.10).float().to(DEV)
    net, sim = _engine("auto")
    l1, l2 = net.layers[0].synapse, net.layers[1].synapse
    W1 = (l1.crossbar.weights() * l1.weight_scale).clone().requires_grad_()
    W2 = (l2.crossbar.weights() * l2.weight_scale).clone().requires_grad_()
    b1, b2 = l1.bias.detach().clone().requires_grad_(), l2.bias.detach().clone().requires_grad_()
    a = 1e-3 / 5e-3

    def spike(x):
        from neurosal.neurons import SuperSpike
        return SuperSpike.apply(x, 100.0)

    def torch_steps():
        v1 = torch.zeros(B, 400, device=DEV)
        v2 = torch.zeros(B, 10, device=DEV)
        cnt = 0
        for t in range(T):
            v1 = v1 + a * (s_in[t] @ W1 + b1 - v1)
            z1 = spike(v1 - 1.0)
            v1 = v1 - z1 * v1
            v2 = v2 + a * (z1 @ W2 + b2 - v2)
            z2 = spike(v2 - 1.0)
            v2 = v2 - z2 * v2
            cnt = cnt + z2
        return cnt

    def torch_layers():
        i1 = (s_in.reshape(T * B, 784) @ W1 + b1).reshape(T, B, 400)
        v1 = torch.zeros(B, 400, device=DEV)
        zs = []
        for i in i1.unbind(0):
            v1 = v1 + a * (i - v1)
            z1 = spike(v1 - 1.0)
            v1 = v1 - z1 * v1
            zs.append(z1)
        i2 = (torch.stack(zs).reshape(T * B, 400) @ W2 + b2).reshape(T, B, 10)
        v2 = torch.zeros(B, 10, device=DEV)
        cnt = 0
        for i in i2.unbind(0):
            v2 = v2 + a * (i - v2)
            z2 = spike(v2 - 1.0)
            v2 = v2 - z2 * v2
            cnt = cnt + z2
        return cnt

    lin1, lin2 = torch.nn.Linear(784, 400).to(DEV), torch.nn.Linear(400, 10).to(DEV)
    with torch.no_grad():
        lin1.weight.copy_(W1.t()), lin1.bias.copy_(b1), lin2.weight.copy_(W2.t()), lin2.bias.copy_(b2)
    np_ = LIFBoxParameters(tau_mem_inv=torch.as_tensor(200.0), v_th=torch.as_tensor(1.0), method="super",
                           alpha=torch.as_tensor(100.0))
    c1, c2 = norse.LIFBoxCell(np_).to(DEV), norse.LIFBoxCell(np_).to(DEV)

    def norse_run():
        s1 = s2 = None
        cnt = 0
        for t in range(T):
            z1, s1 = c1(lin1(s_in[t]), s1)
            z2, s2 = c2(lin2(z1), s2)
            cnt = cnt + z2
        return cnt

    def engine():
        return sim.run(s_in, spikes_in=True).spike_counts

    # same math: identical output spike counts
    with torch.no_grad():
        ref = torch_steps()
        for name, fn in (("layer-by-layer", torch_layers), ("norse", norse_run), ("neurosal", engine)):
            out = fn()
            if not torch.equal(out, ref):
                print(f"  note: {name} spike counts differ from the step loop in "
                      f"{int((out != ref).sum())} of {ref.numel()} entries (float summation order)")
    impls = {"plain torch, step loop": torch_steps, "plain torch, layer by layer": torch_layers,
             "norse LIFBoxCell": norse_run, "neurosal engine (ideal crossbars)": engine}
    with torch.no_grad():
        t_inf = interleaved(impls, args.repeats * 2, sync=SYNC)

    def fb(fn):
        def run():
            fn().sum().backward()            # BPTT through the spike counts (surrogate gradients)
        return run
    t_fb = interleaved({k: fb(fn) for k, fn in impls.items()}, args.repeats, sync=SYNC)
    return [(k, t_inf[k], t_fb[k]) for k in impls]


def bench_b(args) -> list:
    from neurosal.coding import SpikeEvents
    T, B = 32, 256
    rows = []
    sims = {path: _engine(path)[1] for path in ("dense", "event", "auto")}
    for silence in (0.50, 0.90, 0.99):
        g = torch.Generator().manual_seed(1)
        s_in = (torch.rand(T, B, 784, generator=g) >= silence).float().to(DEV)
        ev = SpikeEvents.from_dense(s_in)
        with torch.no_grad():
            # the same network, the same spikes either way
            ref = sims["dense"].run(s_in, spikes_in=True).spike_counts
            assert torch.equal(ref, sims["auto"].run(ev).spike_counts)
            picked = sims["auto"].run(s_in, spikes_in=True).paths["fc1"]
            t = interleaved({"dense": lambda: sims["dense"].run(s_in, spikes_in=True),
                             "event": lambda: sims["event"].run(s_in, spikes_in=True),
                             "auto": lambda: sims["auto"].run(s_in, spikes_in=True),
                             "aer": lambda: sims["auto"].run(ev)}, args.repeats * 2, sync=SYNC)
        rows.append((silence, t["dense"], t["event"], t["auto"], "event" if picked["event"] else "dense", t["aer"]))
    return rows


# ============================================================================ (c) + (d), one case per process
def one_case(case: str) -> dict:
    torch.set_num_threads(2)
    kind, *rest = case.split(":")
    if kind in ("dstd", "exact"):
        from neurosal import neurons
        scheme = rest[0]
        g = torch.Generator().manual_seed(0)
        B, n = 32, 1000
        t_in = torch.rand(B, n, generator=g).requires_grad_()
        w = (torch.randn(n, n, generator=g) * (1.5 / math.sqrt(n))).requires_grad_()
        e = dict(e_plus=3.0, e_minus=-3.0)
        if kind == "exact":
            fn = (lambda: neurons.rc_spike_layer(t_in, w, **e)) if scheme == "rc" else \
                (lambda: neurons.ttfs_layer(t_in, w, v_th=1.0, t_max=2.0, **e))
        else:
            M = int(rest[1])
            fn = (lambda: neurons.dstd_rc_spike_layer(t_in, w, steps=M, offset="random", **e)) if scheme == "rc" \
                else (lambda: neurons.dstd_ttfs_layer(t_in, w, steps=M, offset="random", v_th=1.0, t_max=2.0, **e))
        base = reset_peak()
        t0 = time.perf_counter()
        out = fn()
        loss = torch.where(torch.isfinite(out), out, torch.zeros_like(out)).sum()
        loss.backward()
        dt = time.perf_counter() - t0
        return {"seconds": dt, "peak_mb": peak_above(base)}
    if kind == "record":
        from neurosal.networks import build
        from neurosal.recording import Recorder
        from neurosal.engine import Probe, Simulator, encoder_for
        T = int(rest[0])
        net = build("mlp-64-100-10", device="moderate", coding="spike", seed=0)
        x = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
        with tempfile.TemporaryDirectory() as d:
            base = reset_peak()
            t0 = time.perf_counter()
            with Recorder(Path(d) / "r.h5", dt=1e-3, steps=T, samples=range(64),
                          populations={"fc1": 100, "fc2": 10}) as rec, torch.no_grad():
                Simulator(net, chunk=64).run(encoder_for("rate", x, T, seed=0), steps=T, recorder=rec,
                                             probes=[Probe("fc1", ("spikes", "v")), Probe("fc2", ("spikes", "v"))])
            size = (Path(d) / "r.h5").stat().st_size / 1e6
            peak = peak_above(base)
        return {"seconds": time.perf_counter() - t0, "peak_mb": peak, "file_mb": size}
    raise SystemExit(f"unknown case {case}")


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
    ap.add_argument("--accelerator", default="cpu", help="cpu, cuda, cuda:N, auto: where (a) and (b) run")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_case(args.one)))
        return
    torch.set_num_threads(args.threads)
    global DEV, SYNC
    from neurosal.accel import resolve
    DEV = resolve(args.accelerator)
    if DEV.type == "cuda":
        SYNC = lambda: torch.cuda.synchronize(DEV)  # noqa: E731
        args.only = "".join(c for c in args.only if c in "ab")
        where = f"{torch.cuda.get_device_name(DEV)} ({DEV})"
    else:
        where = "cpu"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {where}\n")
    if "a" in args.only:
        rows = bench_a(args)
        print("(a) 784-400-10 LIF, T = 32, batch 256, 10 % input firing (median s per run)")
        ref_i, ref_f = rows[0][1], rows[0][2]
        norse_i, norse_f = rows[2][1], rows[2][2]
        print(f"  {'implementation':<36} {'inference':>10} {'x torch':>8} {'fwd+bwd':>9} {'x torch':>8}")
        for label, ti, tf in rows:
            print(f"  {label:<36} {ti:>10.4f} {ti / ref_i:>7.2f}x {tf:>9.4f} {tf / ref_f:>7.2f}x")
        eng = rows[3]
        print(f"  neurosal vs norse: inference {eng[1] / norse_i:.2f}x, fwd+bwd {eng[2] / norse_f:.2f}x "
              f"(target: <= 1.3x plain torch, no slower than norse)\n")
    if "b" in args.only:
        rows = bench_b(args)
        print("(b) engine paths, 784-400-10, T = 32, batch 256 (median s per run). dense/event/auto: input as a")
        print("    [T, batch, n] 0/1 tensor (the event path must scan it: nonzero); AER: input as address events")
        print(f"  {'input silence':>13} {'dense':>9} {'event':>9} {'auto':>9} {'auto picks':>10} {'dense/auto':>10} "
              f"{'AER':>9} {'dense/AER':>9}")
        for s, td, te, ta, pick, tv in rows:
            print(f"  {s:>13.0%} {td:>9.4f} {te:>9.4f} {ta:>9.4f} {pick:>10} {td / ta:>9.2f}x {tv:>9.4f} "
                  f"{td / tv:>8.2f}x")
        print("  target: auto never slower than dense, >= 2x faster at 99 % silence\n")
    if "c" in args.only:
        print("(c) DSTD vs exact event-driven layer, 1000 -> 1000, batch 32, forward+backward (own process each)")
        print(f"  {'scheme':<8} {'layer':<10} {'seconds':>9} {'speed-up':>9} {'peak MB':>9} {'memory /':>9}")
        for scheme in ("rc", "ttfs"):
            ex = run_case(f"exact:{scheme}")
            print(f"  {scheme:<8} {'exact':<10} {ex['seconds']:>9.3f} {'1.0x':>9} {ex['peak_mb']:>9.1f} {'1.0x':>9}")
            for M in (4, 8, 16, 32):
                r = run_case(f"dstd:{scheme}:{M}")
                print(f"  {scheme:<8} {'DSTD M=' + str(M):<10} {r['seconds']:>9.3f} "
                      f"{ex['seconds'] / r['seconds']:>8.1f}x {r['peak_mb']:>9.1f} "
                      f"{ex['peak_mb'] / max(r['peak_mb'], 0.1):>8.1f}x")
        print("  target: DSTD M = 8 at least 10x faster than exact\n")
    if "d" in args.only:
        print("(d) streamed recording (mlp-64-100-10, 64 samples, spikes + v of both layers)")
        print(f"  {'T':>6} {'seconds':>9} {'peak MB':>9} {'file MB':>9}")
        for T in (256, 4096):
            r = run_case(f"record:{T}")
            print(f"  {T:>6} {r['seconds']:>9.2f} {r['peak_mb']:>9.1f} {r['file_mb']:>9.1f}")


if __name__ == "__main__":
    main()
