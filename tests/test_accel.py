"""The chip on any torch device, checked on a CPU-only machine.

* Under ``torch.set_default_device("meta")`` every tensor created without an explicit device
  lands on ``meta`` and the first operation mixing it with real data fails: every recipe
  must build, take a training step and run a short simulation that way (the network sits on
  the CPU).
* ``net.to("meta")`` must move every tensor the chip holds (walked through every object the
  network reaches, not only its parameters and buffers); ``net.to(torch.float64)`` likewise
  changes every floating tensor, and a step then runs in float64.
* Checkpoints load across dtypes (and are saved on the CPU, so across devices).
* ``cuda``-marked tests compare a GPU with the CPU where CUDA exists.
"""

import json
import math
import types

import pytest
import torch

from neurosal import accel
from neurosal.crossbar import AnalogLinear, Counters, Crossbar, analog_layers
from neurosal.devices import Device
from neurosal.engine import Network, Simulator, crossbars, encoder_for, forward
from neurosal.engine import device_of as _device_of
from neurosal.learning import make_rule
from neurosal.networks import build, load_checkpoint, save_checkpoint

# (recipe, coding, rules, input shape) — every shipped recipe with the rules it trains with
RECIPES = [
    ("mlp-64-100-10", "rate", ("hybrid", "bp", "dfa", "verify"), (1, 8, 8)),
    ("mlp-64-100-10", "spike", ("bp", "hybrid"), (1, 8, 8)),
    ("mlp-64-100-10", "latency", ("bp",), (1, 8, 8)),
    ("mlp-784-400-400-10", "rate", ("hybrid",), (1, 6, 6)),
    ("charge-mlp-784-400-400-10", "latency", ("bp", "hybrid"), (1, 6, 6)),
    ("resnet8", "rate", ("hybrid", "bp", "dfa"), (1, 8, 8)),
    ("sanet-resnet8", "rate", ("hybrid", "dfa"), (1, 8, 8)),
    ("sanet-resnet8", "spike", ("bp",), (1, 8, 8)),
    ("resnet20", "rate", ("bp",), (1, 8, 8)),
    ("sanet-resnet20", "rate", ("hybrid",), (3, 8, 8)),
    ("vgg7-charge", "latency", ("bp",), (1, 8, 8)),
]


@pytest.fixture
def meta_default():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def _data(shape, n=4, classes=10, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(n, math.prod(shape), generator=g, device="cpu")
    y = torch.arange(n, device="cpu") % classes
    return x, y


def _short_run(net, x, coding):
    """A short simulation: the timestep simulator for layer chains, inference for modules."""
    T = net.meta["steps"]
    with torch.no_grad():
        if isinstance(net, Network):
            enc = {"rate": "direct", "spike": "rate", "latency": "latency"}[coding]
            return Simulator(net, chunk=max(1, T // 2)).run(encoder_for(enc, x, T, seed=1), steps=T).scores
        net.eval()
        try:
            return forward(net, x, coding=coding, steps=T, seed=1).scores
        finally:
            net.train()


@pytest.mark.parametrize("recipe,coding,rules,shape", RECIPES, ids=[f"{r[0]}-{r[1]}" for r in RECIPES])
def test_every_recipe_trains_and_simulates_with_meta_as_default_device(meta_default, recipe, coding, rules, shape):
    for rule in rules:
        net = build(recipe, device="moderate", coding=coding, seed=0, steps=4 if coding != "rate" else None,
                    input_shape=shape, classes=10)
        assert _device_of(net).type == "cpu"
        x, y = _data(shape)
        r = make_rule(rule, net, lr=0.05, seed=0)
        loss = r.step(x, y, coding=coding, steps=net.meta["steps"], seed=0)
        if rule == "verify":
            r.finish()
        assert loss.device.type == "cpu" and math.isfinite(float(loss)), (recipe, rule)
        scores = _short_run(net, x, coding)
        assert scores.device.type == "cpu" and scores.shape == (4, 10)
        assert sum(xb.counters.pulses for xb in crossbars(net)) > 0 or rule == "verify"


@pytest.mark.parametrize("recipe,coding,rules,shape", RECIPES, ids=[f"{r[0]}-{r[1]}" for r in RECIPES])
def test_every_recipe_trains_with_the_chip_on_the_meta_device(recipe, coding, rules, shape):
    """The whole network on torch's meta device (shapes, no values) stands in for a GPU: the
    accelerator code paths run (dense writes, counts kept on the device, no CPU-only event
    path), a tensor created on the CPU in a hot path meets meta data and fails, and so does any
    read-back (``.item()``, ``bool``, ``int`` of a meta tensor raise). Write-and-verify reads
    back by nature and is left out."""
    for rule in rules:
        if rule == "verify":
            continue
        net = build(recipe, device="ag-a-si", coding=coding, input_shape=shape, classes=10,
                    steps=4 if coding != "rate" else None).to("meta")
        x = torch.rand(4, math.prod(shape), device="meta")
        y = torch.zeros(4, dtype=torch.long, device="meta")
        r = make_rule(rule, net, lr=0.05, seed=0)
        loss = r.step(x, y, coding=coding, steps=net.meta["steps"], seed=0)
        assert loss.device.type == "meta", (recipe, rule)
        assert _short_run(net, x, coding).device.type == "meta"


# ------------------------------------------------------------------------ every tensor moves
_LEAVES = (str, bytes, int, float, bool, complex, type(None), type, types.FunctionType, types.MethodType,
           types.BuiltinFunctionType, types.ModuleType, torch.dtype, torch.device, torch.Generator)


def _walk(obj, path="net", seen=None):
    """Every tensor reachable from ``obj`` through attributes, slots, dicts and sequences (device
    cards' nominal curves excepted: card constants, copied per device when used)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, _LEAVES) or isinstance(obj, Device):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}[{k!r}]", seen)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]", seen)
        return
    for name in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, name):
            yield from _walk(getattr(obj, name), f"{path}.{name}", seen)
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _walk(v, f"{path}.{k}", seen)


@pytest.mark.parametrize("recipe,coding,shape", [("mlp-64-100-10", "rate", (1, 8, 8)),
                                                  ("sanet-resnet8", "rate", (1, 8, 8)),
                                                  ("vgg7-charge", "latency", (1, 8, 8)),
                                                  ("charge-mlp-784-400-400-10", "latency", (1, 6, 6))])
def test_module_to_moves_every_tensor_the_chip_holds(recipe, coding, shape):
    # drift on (clocks), variation on (per-cell draws), stuck cells (masks): the most state
    net = build(recipe, device="ag-a-si", coding=coding, input_shape=shape, classes=10)
    before = list(_walk(net))
    assert any(".crossbar._state" in p for p, _ in before) and any("initial_weights" in p for p, _ in before)
    net.to("meta")
    stray = [(p, t.device) for p, t in _walk(net) if t.device.type != "meta"]
    assert not stray, f"tensors left behind by net.to('meta'): {stray[:5]}"


def test_float64_moves_every_floating_tensor_and_a_step_runs_in_float64():
    net = build("mlp-64-100-10", device="severe", coding="rate", input_shape=(1, 8, 8), classes=10)
    early = make_rule("hybrid", net, lr=0.1, seed=0)         # a rule made before the move follows it
    net.to(torch.float64)
    wrong = [(p, t.dtype) for p, t in _walk(net) if t.is_floating_point() and t.dtype != torch.float64]
    assert not wrong, f"floating tensors not in float64: {wrong[:5]}"
    assert all(xb.dtype == torch.float64 for xb in crossbars(net))
    x, y = _data((1, 8, 8))
    for rule in ("hybrid", "bp"):
        r = early if rule == "hybrid" else make_rule(rule, net, lr=0.1, seed=0)
        loss = r.step(x.double(), y, coding="rate", steps=1, seed=0)
        assert loss.dtype == torch.float64
        if rule == "hybrid":
            assert all(c.buffer.dtype == torch.float64 and c.estimate.dtype == torch.float64 for c in r.controllers)
    wrong = [(p, t.dtype) for p, t in _walk(net) if t.is_floating_point() and t.dtype != torch.float64]
    assert not wrong, f"a step brought back float32 state: {wrong[:5]}"
    assert sum(xb.counters.pulses for xb in crossbars(net)) > 0


def test_float64_weights_are_the_float32_weights():
    """The same chip in both dtypes: moving it changes the precision, nothing else."""
    a = build("resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    b = build("resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10).to(torch.float64)
    for la, lb in zip(analog_layers(a), analog_layers(b)):
        assert torch.equal(la.crossbar.state.g.double(), lb.crossbar.state.g)       # the same conductances
        torch.testing.assert_close(la.crossbar.weights().double(), lb.crossbar.weights(), rtol=1e-6, atol=1e-7)
    # without read noise (whose float32 and float64 draws differ) the outputs agree to float32
    # rounding, up to an occasional ADC level flipped by it (8 bits: one level is 1/127 of full scale)
    a = build("resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
    b = build("resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10).to(torch.float64)
    x, _ = _data((1, 8, 8))
    a.eval(), b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x.double())
    assert yb.dtype == torch.float64
    assert (ya.double() - yb).abs().median() < 1e-4 and (ya.double() - yb).abs().max() < 0.1 * yb.abs().max()


@pytest.mark.parametrize("src,dst", [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_checkpoint_loads_across_dtypes(tmp_path, src, dst):
    x, y = _data((1, 8, 8), n=8)
    net = build("mlp-64-100-10", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10).to(src)
    r = make_rule("hybrid", net, lr=0.1, seed=0)
    r.step(x.to(src), y, coding="rate", steps=1, seed=0)
    save_checkpoint(net, tmp_path / "c.pt", rule_state=r.state_dict())
    other = build("mlp-64-100-10", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10,
                  seed=5).to(dst)
    ck = load_checkpoint(other, tmp_path / "c.pt")
    for xa, xb_ in zip(crossbars(net), crossbars(other)):
        assert xb_.state.g.dtype == dst and xb_.initial_weights.dtype == dst
        torch.testing.assert_close(xb_.weights().double(), xa.weights().double(), rtol=1e-6, atol=1e-7)
        assert xb_.counters.as_dict() == xa.counters.as_dict()
    r2 = make_rule("hybrid", other, lr=0.1, seed=0)
    r2.load_state_dict(ck["rule_state"])
    assert r2.controllers[0].buffer.dtype == dst
    assert math.isfinite(float(r2.step(x.to(dst), y, coding="rate", steps=1, seed=1)))


def test_checkpoint_tensors_are_saved_on_the_cpu(tmp_path):
    net = build("mlp-64-100-10", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    sd = crossbars(net)[0].state_dict()
    assert all(t.device.type == "cpu" for _, t in _walk(sd))


# ------------------------------------------------------------------------ accelerators, threads
def test_accelerator_names():
    assert accel.resolve("cpu") == torch.device("cpu")
    assert accel.resolve("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(accel.AcceleratorError, match="unknown accelerator 'gpu0'"):
        accel.resolve("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(accel.AcceleratorError, match="no CUDA GPU"):
            accel.resolve("cuda:0")


def test_cli_refuses_a_missing_accelerator_before_any_work(capsys):
    from neurosal.cli import main
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc = main(["train", "--network", "mlp-64-100-10", "--device", "ideal", "--accelerator", "cuda", "--json"])
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_threads():
    n0 = torch.get_num_threads()
    try:
        assert accel.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert 1 <= accel.default_threads() <= (len(__import__("os").sched_getaffinity(0)))
        with pytest.raises(ValueError, match="threads must be >= 1"):
            accel.set_threads(0)
    finally:
        torch.set_num_threads(n0)


def test_generators_keep_one_stream_per_device_and_restore():
    g = accel.Generators(7)
    a = torch.rand(3, generator=g.get("cpu"), device="cpu")
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(7)))   # the CPU stream as before
    sd = g.state_dict()
    b = torch.rand(3, generator=g.get("cpu"), device="cpu")
    h = accel.Generators(0)
    h.load_state_dict(sd)
    assert torch.equal(torch.rand(3, generator=h.get("cpu"), device="cpu"), b)
    # a state from a device type that is not here: a new stream derived from it, not the seed's
    foreign = {"seed": 7, "states": {"cuda:3": sd["states"]["cpu"]}}
    k = accel.Generators(0)
    k.load_state_dict(foreign)
    fresh = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(torch.rand(3, generator=k.get("cpu"), device="cpu"), fresh)


# ------------------------------------------------------------------------ counts without read-back
def test_deferred_counts_equal_immediate_counts():
    """What an accelerator does (counts kept as device tensors, summed when read) gives the same
    numbers as the CPU's immediate counting, for reads, spikes, codes and pulses."""
    def run(defer):
        Counters.defer_cpu = defer
        try:
            for recipe, coding in (("mlp-64-100-10", "rate"), ("mlp-64-100-10", "spike"), ("sanet-resnet8", "spike")):
                net = build(recipe, device="severe", coding=coding, input_shape=(1, 8, 8), classes=10, steps=4)
                x, y = _data((1, 8, 8), n=8)
                from neurosal.cost import Ledger
                led = Ledger(net, samples=8)
                r = make_rule("bp", net, lr=0.2, seed=0)
                with led.active():
                    r.step(x, y, coding=coding, steps=net.meta["steps"], seed=0)
                yield [xb.counters.as_dict() for xb in crossbars(net)], led.counts
        finally:
            Counters.defer_cpu = False
    imm, dfr = list(run(False)), list(run(True))
    assert imm == dfr
    assert imm[0][0][0]["pulses"] > 0 and imm[1][0][0]["adc_conversions"] > 0
    assert sum(c["code_reads"] for c in imm[2][0]) > 0 and sum(c["analog_reads"] for c in imm[2][0]) > 0


def test_counters_cannot_be_assigned_and_survive_pickling():
    import pickle
    c = Counters(pulses=3)
    c.add("pulses", torch.tensor(4))
    with pytest.raises(AttributeError, match="cannot be assigned"):
        c.pulses = 0
    assert pickle.loads(pickle.dumps(c)).pulses == 7


# ------------------------------------------------------------------------ GPU (where there is one)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
def test_cuda_ideal_chip_matches_cpu():
    x, y = _data((1, 8, 8), n=16)
    out = {}
    for dev in ("cpu", "cuda"):
        net = build("resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10, accelerator=dev)
        net.eval()
        with torch.no_grad():
            out[dev] = net(x.to(dev)).cpu()
        for layer in analog_layers(net):
            assert layer.crossbar.state.g.device.type == dev
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@cuda
def test_cuda_training_step_and_counts_match_cpu_on_ideal():
    x, y = _data((1, 8, 8), n=16)
    res = {}
    for dev in ("cpu", "cuda"):
        net = build("mlp-64-100-10", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10,
                    accelerator=dev)
        r = make_rule("hybrid", net, lr=0.1, seed=0)
        r.step(x.to(dev), y.to(dev), coding="rate", steps=1, seed=0)
        res[dev] = ([xb.weights().cpu() for xb in crossbars(net)], [xb.counters.as_dict() for xb in crossbars(net)])
    for a, b in zip(res["cpu"][0], res["cuda"][0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(res["cpu"][1], res["cuda"][1]):
        assert a["forward_reads"] == b["forward_reads"] and abs(a["pulses"] - b["pulses"]) <= 0.01 * a["pulses"] + 2


@pytest.mark.cuda
@cuda
def test_cuda_noise_statistics_match_cpu():
    """Read noise on the GPU: a different stream, the same distribution (mean and variance
    within 5 standard errors of the CPU's)."""
    n = 200_000
    stats = {}
    for dev in ("cpu", "cuda"):
        xb = Crossbar(64, 64, "severe", seed=0, torch_device=dev, adc_bits=None)
        x = torch.ones(n // 64, 64, device=dev)
        y = xb.forward(x)
        ideal = x @ xb.weights()
        e = (y - ideal).flatten().double().cpu()
        stats[dev] = (e.mean().item(), e.var().item(), e.numel())
    (m0, v0, n0), (m1, v1, n1) = stats["cpu"], stats["cuda"]
    assert abs(m1 - m0) < 5 * math.sqrt(v0 / n0 + v1 / n1)
    assert abs(v1 - v0) < 5 * v0 * math.sqrt(2 / n0 + 2 / n1)


@pytest.mark.cuda
@cuda
def test_cuda_checkpoint_loads_on_cpu(tmp_path):
    net = build("mlp-64-100-10", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10,
                accelerator="cuda")
    x, y = _data((1, 8, 8), n=8)
    make_rule("bp", net, lr=0.2, seed=0).step(x.cuda(), y.cuda(), coding="rate", steps=1, seed=0)
    save_checkpoint(net, tmp_path / "g.pt")
    cpu = build("mlp-64-100-10", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    load_checkpoint(cpu, tmp_path / "g.pt")
    for a, b in zip(crossbars(net), crossbars(cpu)):
        torch.testing.assert_close(a.weights().cpu(), b.weights())


# ------------------------------------------------------------------------ torch.compile
def test_torch_compile_analog_layer_matches_eager():
    """A compiled analog layer: the same output and counts as eager on a noise-free chip."""
    torch._dynamo.reset()
    x, _ = _data((1, 8, 8), n=16)
    runs = {}
    for mode in ("eager", "compiled"):
        layer = AnalogLinear(64, 32, device="ideal", adc_bits=8, seed=3)
        fwd = torch.compile(layer) if mode == "compiled" else layer
        out = fwd(x)
        out.sum().backward()
        runs[mode] = (out.detach(), layer.weight.grad.clone(), layer.crossbar.counters.as_dict())
    e, c = runs["eager"], runs["compiled"]
    torch.testing.assert_close(c[0], e[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c[1], e[1], rtol=1e-5, atol=1e-5)
    assert e[2] == c[2] and e[2]["forward_reads"] == 16


@pytest.mark.slow
def test_torch_compile_training_step_matches_eager():
    """A compiled training step (forward, backward, pulse update) agrees with eager on a
    noise-free chip: loss, weights after the pulses, counts. (About a minute of compiling.)"""
    torch._dynamo.reset()
    x, y = _data((1, 8, 8), n=16)
    runs = {}
    for mode in ("eager", "compiled"):
        net = build("mlp-64-100-10", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
        r = make_rule("bp", net, lr=0.2, seed=0, rounding="round")
        step = torch.compile(r.step) if mode == "compiled" else r.step
        loss = step(x, y, coding="rate", steps=1, seed=0)
        runs[mode] = (float(loss), [xb.weights().clone() for xb in crossbars(net)],
                      [xb.counters.as_dict() for xb in crossbars(net)])
    e, c = runs["eager"], runs["compiled"]
    assert c[0] == pytest.approx(e[0], rel=1e-5)
    for a, b in zip(e[1], c[1]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert e[2] == c[2] and e[2][0]["pulses"] > 0


# ------------------------------------------------------------------------ dense writes (accelerators)
@pytest.mark.parametrize("card_name", ["severe", "pcmo", "ag-a-si"])
@pytest.mark.parametrize("rule", ["hybrid", "bp"])
def test_dense_writes_equal_sparse_writes(rule, card_name):
    """What an accelerator does (every cell planned and handed to the device model, zero counts
    where nothing is asked) writes what the CPU's sparse selection writes: the same
    conductances, pulses and counts, on cards with variation (noise off: its draws are made for
    every cell in dense mode). Elementwise math on tensors of other lengths may round a
    transcendental function differently (vectorized vs scalar tail), which can flip a pulse count
    at a rounding boundary: at most one cell in a thousand may differ."""
    import dataclasses

    from neurosal.devices import Noise, load_device
    from neurosal.learning import HybridController
    card = dataclasses.replace(load_device(card_name), noise=Noise())
    x, y = _data((1, 8, 8), n=16)
    res = {}
    for dense in (False, True):
        HybridController.dense, Crossbar.dense_writes = dense, dense
        try:
            net = build("mlp-64-100-10", device=card, coding="rate", input_shape=(1, 8, 8), classes=10)
            r = make_rule(rule, net, lr=0.3, seed=0, rounding="round")
            for s in range(3):
                r.step(x, y, coding="rate", steps=1, seed=s)
            res[dense] = ([xb.state.g.clone() for xb in crossbars(net)], [xb.counters.as_dict() for xb in crossbars(net)])
        finally:
            HybridController.dense, Crossbar.dense_writes = None, None
    for a, b in zip(res[False][0], res[True][0]):
        assert (a != b).float().mean() <= 1e-3
    for a, b in zip(res[False][1], res[True][1]):
        assert a.keys() == b.keys() and a["pulses"] > 0
        for k in a:
            assert abs(a[k] - b[k]) <= 2e-3 * a[k] + 2, k


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("rule", ["hybrid", "bp"])
def test_cuda_training_step_waits_for_the_gpu_once(rule):
    """torch's sync debug mode flags every operation that makes the host wait for the GPU: a
    training step makes one (the check that every gradient is finite, before anything is
    written)."""
    import warnings
    net = build("sanet-resnet8", device="moderate", coding="rate", input_shape=(3, 16, 16), classes=10,
                accelerator="cuda")
    r = make_rule(rule, net, lr=0.05, seed=0)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(8, 3 * 16 * 16, generator=g).cuda()
    y = (torch.arange(8) % 10).cuda()
    r.step(x, y, coding="rate", steps=1, seed=0)                 # warm-up: generators, caches
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            r.step(x, y, coding="rate", steps=1, seed=1)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchron" in str(w.message).lower()]
    assert len(syncs) <= 1, syncs


# ------------------------------------------------------------------------ the parallel noise generator
N_BIG = 1 << 21          # above the parallel threshold: 4 chunks of 2**19


def test_parallel_randn_is_standard_normal():
    """Mean 0 and variance 1 within 5 standard errors (n = 2**21), and normal: the
    Kolmogorov-Smirnov distance to the standard normal below its 1e-6 critical value
    (sqrt(-ln(1e-6/2)/(2n)) ~ 0.0026)."""
    from scipy import stats
    z = accel.randn((N_BIG,), generator=torch.Generator().manual_seed(3)).double()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    d = stats.kstest(z[:: 8].numpy(), "norm").statistic              # 2**18 samples
    assert d < math.sqrt(-math.log(1e-6 / 2) / (2 * (n // 8)))
    # the fourth moment (3 for a normal) catches a wrong shape the KS test is slow to see
    assert abs(float((z ** 4).mean()) - 3) < 5 * math.sqrt(96 / n)


def test_parallel_randn_has_no_correlation_between_chunks_or_draws():
    g = torch.Generator().manual_seed(4)
    a = accel.randn((N_BIG,), generator=g).double()
    b = accel.randn((N_BIG,), generator=g).double()               # the next read
    q = N_BIG // 4
    chunks = a.view(4, q)
    se = 1 / math.sqrt(q)
    for i in range(4):
        for j in range(i + 1, 4):                                  # chunks from their own streams
            assert abs(float((chunks[i] * chunks[j]).mean())) < 5 * se
    assert abs(float((a * b).mean())) < 5 / math.sqrt(N_BIG)     # successive reads
    assert abs(float((a[1:] * a[:-1]).mean())) < 5 / math.sqrt(N_BIG)  # neighbours within a read


def test_parallel_randn_is_reproducible_whatever_the_threads():
    n0 = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(accel.randn((3, N_BIG // 3), generator=torch.Generator().manual_seed(5)))
        assert torch.equal(outs[0], outs[1]) and outs[0].shape == (3, N_BIG // 3)
    finally:
        torch.set_num_threads(n0)
    small = accel.randn((100,), generator=torch.Generator().manual_seed(5))      # below the threshold
    assert torch.equal(small, torch.randn(100, generator=torch.Generator().manual_seed(5)))


def test_every_simulating_command_takes_accelerator_and_threads(tmp_path, capsys):
    from neurosal.cli import build_parser, main
    n0 = torch.get_num_threads()
    common = ["--accelerator", "cpu", "--threads", "1"]
    try:
        assert main(["train", "--network", "mlp-64-100-10", "--device", "ideal", "--limit-train", "32",
                     "--limit-test", "16", "--json"] + common) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["accelerator"] == "cpu" and r["threads"] == 1 and torch.get_num_threads() == 1
        assert main(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--samples", "8",
                     "--json"] + common) == 0
        assert main(["cost", "--network", "mlp-64-100-10", "--device", "ideal", "--batch", "4",
                     "--json"] + common) == 0
        assert main(["compare-coding", "--network", "mlp-64-100-10", "--device", "ideal", "--epochs", "1",
                     "--limit-train", "16", "--limit-test", "8", "--json"] + common) == 0
        args = build_parser().parse_args(["demo"] + common)
        assert (args.accelerator, args.threads) == ("cpu", 1)
    finally:
        torch.set_num_threads(n0)
