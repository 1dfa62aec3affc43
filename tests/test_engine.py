"""The timestep engine: event-driven equals dense, chunking changes nothing, it equals a
hand-written plain-torch loop, events are counted, gradients flow (BPTT)."""

import pytest
import torch
from torch import nn

from neurosal import coding
from neurosal.crossbar import AnalogLinear
from neurosal.networks import build, mlp
from neurosal.neurons import LIFNeurons, LIFParameters, RateNeurons
from neurosal.engine import Layer, Network, Probe, Simulator, encoder_for


def _net(device="moderate", coding_="spike", sizes=(64, 100, 10), seed=0):
    return build("mlp-64-100-10", device=device, coding=coding_, seed=seed) if tuple(sizes) == (64, 100, 10) \
        else mlp(sizes, device=device, coding=coding_, seed=seed)


def _x(n=24, seed=0):
    return torch.rand(n, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("coding_,enc,device", [("spike", "rate", "moderate"), ("spike", "rate", "severe"),
                                                ("latency", "latency", "moderate")])
def test_event_driven_equals_dense(coding_, enc, device):
    x = _x()
    res = {}
    for path in ("dense", "event"):
        net = _net(device, coding_)
        sim = Simulator(net, path=path, chunk=16)
        with torch.no_grad():
            res[path] = (sim.run(encoder_for(enc, x, 32, seed=3), steps=32,
                                 probes=[Probe("fc1", ("spikes", "v")), Probe("fc2", ("spikes", "v"))]), net)
    (a, na), (b, nb) = res["dense"], res["event"]
    for k in a.probes:
        if k.endswith("spikes"):
            assert torch.equal(a.probes[k], b.probes[k]), k
        else:
            assert torch.allclose(a.probes[k], b.probes[k], atol=1e-5), k
    assert a.events == b.events
    assert all(p["event"] == 0 for p in a.paths.values()) and all(p["dense"] == 0 for p in b.paths.values())
    for la, lb in zip(na.layers, nb.layers):
        assert la.crossbar.counters == lb.crossbar.counters


def test_auto_path_follows_input_silence():
    x = _x(64)
    for p_max, want in ((1.0, "dense"), (0.005, "event")):
        net = mlp((64, 400, 10), device="ideal")
        sim = Simulator(net, chunk=32)
        with torch.no_grad():
            r = sim.run(encoder_for("rate", x, 32, seed=0, p_max=p_max), steps=32)
        other = "event" if want == "dense" else "dense"
        assert r.paths["fc1"][want] == 1 and r.paths["fc1"][other] == 0


def test_chunking_changes_nothing():
    x = _x()
    out = []
    for chunk in (1, 7, 64):
        net = _net("moderate")
        with torch.no_grad():
            out.append(Simulator(net, chunk=chunk).run(encoder_for("rate", x, 30, seed=5), steps=30,
                                                       probes=[Probe("fc1", ("spikes", "v"))]))
    for r in out[1:]:
        assert torch.equal(r.probes["fc1/spikes"], out[0].probes["fc1/spikes"])
        assert torch.allclose(r.probes["fc1/v"], out[0].probes["fc1/v"], atol=1e-5)
        assert torch.equal(r.scores, out[0].scores)


def test_engine_equals_plain_torch_loop():
    """Ideal device: the engine is x @ W + b then norse-style LIF, step by step."""
    torch.manual_seed(0)
    p = LIFParameters(tau_mem=5e-3, v_th=1.0)
    l1 = AnalogLinear(20, 30, device="ideal", seed=1, init_gain=4.0)
    l2 = AnalogLinear(30, 5, device="ideal", seed=2, init_gain=4.0)
    with torch.no_grad():
        l2.bias.fill_(0.9)                              # a digital bias current: the output fires too
    net = Network([Layer(l1, LIFNeurons(p), "a"), Layer(l2, LIFNeurons(p), "b")])
    x = torch.rand(8, 20)
    s_in = coding.rate(x, 25, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        r = Simulator(net, chunk=10).run(s_in, probes=[Probe("a"), Probe("b")])
    w1, w2 = l1.crossbar.weights() * l1.weight_scale, l2.crossbar.weights() * l2.weight_scale
    v1, v2 = torch.zeros(8, 30), torch.zeros(8, 5)
    a = 1e-3 / 5e-3
    z1s, z2s = [], []
    for t in range(25):
        v1 = v1 + a * (s_in[t] @ w1 + l1.bias - v1)
        z1 = (v1 > 1).float()
        v1 = v1 * (1 - z1)
        v2 = v2 + a * (z1 @ w2 + l2.bias - v2)
        z2 = (v2 > 1).float()
        v2 = v2 * (1 - z2)
        z1s.append(z1)
        z2s.append(z2)
    assert torch.equal(r.probes["a/spikes"], torch.stack(z1s))
    assert torch.equal(r.probes["b/spikes"], torch.stack(z2s))
    assert r.probes["a/spikes"].sum() > 0 and r.probes["b/spikes"].sum() > 0


def test_events_are_counted():
    x = _x(10)
    net = _net("moderate")
    s_in = coding.rate(x, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        r = Simulator(net).run(s_in, probes=[Probe("fc1", ("spikes",))])
    ev = r.events
    assert ev["fc1"]["input_events"] == int(s_in.sum())
    assert ev["fc1"]["synaptic_events"] == int(s_in.sum()) * 100
    assert ev["fc1"]["spikes"] == int(r.probes["fc1/spikes"].sum())
    assert ev["fc2"]["input_events"] == ev["fc1"]["spikes"]
    assert ev["fc1"]["reads"] == 20 * 10 and ev["fc1"]["dac_conversions"] == 0
    # one ADC conversion per column for every (step, sample) with at least one input spike
    active = int((s_in.sum(-1) > 0).sum())
    assert ev["fc1"]["adc_conversions"] == active * 100


def test_rate_coding_is_the_one_step_analog_limit():
    x = _x(6)
    net = mlp((64, 100, 10), device="ideal", coding="rate")           # ideal converters too
    with torch.no_grad():
        r = Simulator(net).run(coding.direct(x, 1))
        l1, l2 = (layer.synapse for layer in net.layers)
        h = (x @ l1.weight.t() + l1.bias).clamp(0, 1)
        y = (h @ l2.weight.t() + l2.bias)
    assert torch.allclose(r.scores, y, atol=1e-5)          # readout: the output current (max membrane)


def test_bptt_gradients_reach_the_crossbars():
    x = _x(8)
    net = _net("moderate")
    r = Simulator(net, chunk=8).run(encoder_for("rate", x, 16, seed=0), steps=16)
    loss = nn.functional.cross_entropy(r.scores + r.max_v, torch.arange(8) % 10)
    loss.backward()
    for layer in net.layers:
        gw = layer.synapse.weight.grad
        assert gw is not None and torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_probe_and_input_errors():
    net = _net("ideal")
    sim = Simulator(net)
    with pytest.raises(ValueError, match="probe 'fc9' names no component of the network; components: input, fc1, fc2"):
        sim.run(torch.zeros(2, 1, 64), probes=[Probe("fc9")])
    with pytest.raises(ValueError, match="unknown probe variable"):
        Probe("fc1", ("voltage",))
    with pytest.raises(ValueError, match=r"inputs must be \[T, batch, 64\]"):
        sim.run(torch.zeros(2, 1, 63))
    with pytest.raises(ValueError, match="fc1 has 100 outputs but b takes 99"):
        Network([net.layers[0], Layer(nn.Linear(99, 3), RateNeurons(), "b")])


def test_probe_sample_selection():
    x = _x(5)
    net = _net("ideal")
    with torch.no_grad():
        r = Simulator(net).run(encoder_for("rate", x, 10, seed=0), steps=10,
                               probes=[Probe("fc1", ("spikes", "v", "current"), samples=[1, 3]),
                                       Probe("input", ("spikes",))])
    assert r.probes["fc1/v"].shape == (10, 2, 100)
    assert r.probes["fc1/current"].shape == (10, 2, 100)
    assert r.probes["input/spikes"].shape == (10, 5, 64)


@pytest.mark.parametrize("coding_", ["spike", "latency"])
def test_address_event_input_equals_dense_input(coding_):
    """Input given as address events (no scan of silent rows) gives the dense-input run."""
    x = _x(12)
    dense_in = coding.rate(x, 24, p_max=0.2, generator=torch.Generator().manual_seed(0)) if coding_ == "spike" \
        else coding.latency(x, 24)
    ev = coding.SpikeEvents.from_dense(dense_in)
    out = []
    for inp in (dense_in, ev):
        net = _net("moderate", coding_)
        with torch.no_grad():
            out.append((Simulator(net, chunk=10, path="dense" if inp is dense_in else "auto").run(
                inp, probes=[Probe("input"), Probe("fc1", ("spikes", "v"))]), net))
    (a, na), (b, nb) = out
    assert torch.equal(a.probes["input/spikes"], b.probes["input/spikes"])
    assert torch.equal(a.probes["fc1/spikes"], b.probes["fc1/spikes"])
    assert torch.allclose(a.probes["fc1/v"], b.probes["fc1/v"], atol=1e-5)
    assert a.events == b.events
    assert na.layers[0].crossbar.counters == nb.layers[0].crossbar.counters


def test_rate_events_is_a_bernoulli_process():
    """Geometric gaps give Bernoulli spikes: per-step rate p and Binomial(T, p) count variance,
    within 5 standard errors."""
    x = torch.full((2000, 3), 0.0)
    x[:, 1], x[:, 2] = 0.05, 1.0
    T = 40
    ev = coding.rate_events(x, T, p_max=0.5, generator=torch.Generator().manual_seed(0))
    d = ev.to_dense()
    assert d[..., 0].sum() == 0                                # x = 0 never fires
    p = 0.025
    counts = d[..., 1].sum(0)                                  # per sample, Binomial(T, p)
    n = counts.numel()
    assert abs(counts.mean().item() - T * p) <= 5 * (T * p * (1 - p) / n) ** 0.5
    var = counts.var().item()
    assert abs(var - T * p * (1 - p)) <= 5 * T * p * (1 - p) * (2 / (n - 1)) ** 0.5 * 1.5
    per_step = d[..., 1].mean(1)                               # flat in time: no gap bias
    assert torch.all((per_step - p).abs() <= 5 * (p * (1 - p) / 2000) ** 0.5)
    full = d[..., 2].mean().item()                            # p = 0.5 on the bright input
    assert abs(full - 0.5) <= 5 * (0.25 / (T * 2000)) ** 0.5
    assert torch.equal(ev.t, coding.SpikeEvents.from_dense(d).t)  # sorted (t, b, i)
