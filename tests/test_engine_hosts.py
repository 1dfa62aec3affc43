"""The one engine hosts every network: every shipped recipe x coding simulates and records
(read back by our reader and by libsonata), charge-domain spike times sit in their own phase
windows and the exact solver is DSTD's limit, attention gates are reports, chunking changes
nothing, and what cannot be recorded is a named error."""

import dataclasses
import math

import h5py
import numpy as np
import pytest
import torch

from neurosal import recording
from neurosal.cli import main
from neurosal.engine import Probe, Simulator, encoder_for
from neurosal.experiments import simulate
from neurosal.networks import build, list_networks
from neurosal.networks.recipes import load_network
from neurosal.neurons import dstd_walk, rc_membrane_exact

#: every shipped recipe with the codings it supports
CODINGS_OF = {"charge-mlp": ("latency",), "charge-vgg": ("latency",), "resnet": ("rate", "spike"),
              "sanet": ("rate", "spike"), "mlp": ("rate", "spike", "latency")}


def _cases():
    out = []
    for name in list_networks():
        kind = load_network(name).kind
        for c in CODINGS_OF[kind]:
            out.append((name, c))
    return out


def test_every_recipe_is_covered():
    kinds = {load_network(n).kind for n in list_networks()}
    assert kinds <= set(CODINGS_OF), kinds - set(CODINGS_OF)


def _cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name,coding_", _cases())
def test_simulate_records_every_recipe_and_coding(tmp_path, name, coding_):
    """Each component's spikes (node ids over the flattened channel x height x width index,
    the shape in the attributes) or traces; libsonata reads what our reader reads."""
    out = tmp_path / "r.h5"
    record = ("spikes", "current", "gate") if coding_ == "rate" else ("spikes", "gate")
    net = build(name, device="moderate", coding=coding_, seed=0, steps=3, input_shape=(1, 8, 8), classes=10)
    comps = net.components()
    record = tuple(v for v in record if any(v in c.variables for c in comps.values()))
    summary = simulate(name, "moderate", coding=coding_, steps=3, samples=3, record_samples=2, record=record,
                       out=out, progress=False, batch=3)
    assert summary["samples"] == 3 and 0 <= summary["accuracy"] <= 1
    rec = recording.open(out)
    md = rec.metadata
    spiking = [n for n, c in comps.items() if "spikes" in c.variables and (coding_ != "rate")]
    if coding_ != "rate":
        assert set(rec.populations) == {"input", *spiking}
    with h5py.File(out, "r") as f:
        for pop in rec.populations:
            g = f["spikes"][pop]
            n = math.prod(comps[pop].shape) if pop != "input" else 64
            ids = g["node_ids"][()]           # sample s holds node ids s * n .. s * n + n - 1
            assert ids.size == 0 or int(ids.max()) < 2 * n, pop
            assert rec.n_neurons(pop) == n
            if pop != "input" and len(comps[pop].shape) > 1:
                assert list(g.attrs["shape"]) == list(comps[pop].shape), pop
            ts = g["timestamps"][()]
            assert np.all(np.diff(ts) >= 0)
    if "engine" in md:
        assert md["engine"]["steps"] == (1 if net.records_input else 1 if coding_ == "rate" else 3)
    for r in rec.reports:
        comp, var = r.rsplit(".", 1)
        assert var in record and var in comps[comp].variables, r
        times, data = rec.report(r)
        assert data.shape[0] == len(times) and data.shape[1] == 2 * comps[comp].neurons
    if "gate" in record:
        gates = [r for r in rec.reports if r.endswith(".gate")]
        assert gates, "an attention network records its gates"
        for r in gates:
            _, data = rec.report(r)
            assert np.all((data > 0) & (data < 1)) and data.std() > 0, r     # sigmoid gates, not constant
        assert set(md["summary"]["coprocessor"]) == {r[:-len(".gate")] for r in gates}
    libsonata = pytest.importorskip("libsonata")
    if rec.populations:
        sr = libsonata.SpikeReader(str(out))
        for pop in rec.populations:
            assert len(sr[pop].get()) == rec.summary()["populations"][pop]["spikes"], pop
    if rec.reports:
        er = libsonata.ElementReportReader(str(out))
        for r in rec.reports:
            assert np.allclose(np.asarray(er[r].get().data), rec.report(r)[1]), r


def test_charge_spike_times_sit_in_their_windows():
    """Input spikes at t = 1 - x in window 0; layer i's spikes in window i + 1, at
    clip(1 - v(1)); the readout's times are 1 - scores / logit_scale."""
    net = build("charge-mlp-784-400-400-10", device="moderate", coding="latency", seed=0,
                input_shape=(1, 8, 8), classes=10).eval()
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(3))
    probes = [Probe("input"), Probe("layers.0"), Probe("layers.1"), Probe("layers.2")]
    with torch.no_grad():
        res = Simulator(net, chunk=1).run(x.reshape(1, 5, 64), steps=1, probes=probes, spikes_in=False)
    p = res.probes
    assert torch.equal(p["input/spike_times"], 1.0 - x)
    t_out = p["layers.2/spike_times"]
    assert torch.allclose(t_out, (1.0 - res.scores / net.card.logit_scale).clamp(0, 1))
    for i in range(2):
        t = p[f"layers.{i}/spike_times"]
        assert t.shape == (5, 400) and float(t.min()) >= 0 and float(t.max()) <= 1
    # the events count the spikes (t < 1) of every layer
    for i in range(3):
        assert res.events[f"layers.{i}"]["spikes"] == int((p[f"layers.{i}/spike_times"] < 1).sum())


def test_charge_recording_timestamps_follow_the_windows(tmp_path):
    out = tmp_path / "c.h5"
    simulate("charge-mlp-784-400-400-10", "moderate", coding="latency", samples=4, record_samples=4,
             out=out, progress=False)
    rec = recording.open(out)
    assert rec.metadata["engine"]["windows"] == 4
    dt = rec.metadata["dt_ms"]
    for w, pop in enumerate(["input", "layers.0", "layers.1", "layers.2"]):
        for s in range(4):
            t, i = rec.spike_trains(pop, s)
            assert np.all((t >= w * dt) & (t < (w + 1) * dt)), (pop, s)


def test_exact_solver_is_the_limit_of_dstd():
    """The DSTD grid converges to the exact solution as O(M^-2) (one layer), and a network whose
    arrays read without converters (no ADC rounding per grid step) runs exactly in the limit."""
    g = torch.Generator().manual_seed(0)
    t = torch.rand(16, 64, generator=g)
    w = 0.3 * torch.randn(64, 40, generator=g)
    ref = rc_membrane_exact(t, w, 3.0, -3.0, 0.0)
    errs = [float((dstd_walk(t, w, 3.0, -3.0, 0.0, 1.0, m, None, None)[0] - ref).abs().max()) for m in (8, 16, 32, 64)]
    for a, b in zip(errs, errs[1:]):
        assert 3.0 < a / b < 5.5, errs                        # halving the step quarters the error
    card = load_network("charge-mlp-784-400-400-10")
    net = build(card, device="ideal", coding="latency", seed=1, input_shape=(1, 8, 8), classes=10).eval()
    for layer in net.layers:
        layer.crossbar.adc_bits = layer.crossbar.dac_bits = None
    x = torch.rand(16, 64, generator=g)
    net.set_solver("exact")
    with torch.no_grad():
        exact = net(x)
        # by hand: the layers' exact membranes, one phase after the other
        tt = 1.0 - x
        for i, layer in enumerate(net.layers):
            v = rc_membrane_exact(tt, layer.weight.t(), card.charge.e_plus, card.charge.e_minus, card.charge.leak)
            tt = (1.0 - v).clamp(0, 1)
        assert torch.allclose(exact, card.logit_scale * v)
        net.set_solver("dstd")
        gaps = []
        for m in (4, 64):
            net.card = dataclasses.replace(card, dstd_steps=m)
            gaps.append(float((net(x) - exact).abs().mean()))
    assert gaps[1] < gaps[0] / 4 and gaps[1] < 2e-3, gaps


def test_exact_solver_counts_what_the_array_does():
    net = build("charge-mlp-784-400-400-10", device="moderate", coding="latency", seed=0,
                input_shape=(1, 8, 8), classes=10).eval()
    net.set_solver("exact")
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(2))
    x[:, :10] = 0.0                                      # x = 0 spikes at t = 1: never inside the phase
    with torch.no_grad():
        res = Simulator(net, chunk=1).run(x.reshape(1, 6, 64), steps=1, spikes_in=False)
    ev = res.events["layers.0"]
    assert ev["input_events"] == int((x > 0).sum()) and ev["synaptic_events"] == ev["input_events"] * 400
    assert ev["adc_conversions"] == 0


def test_solver_errors():
    net = build("charge-mlp-784-400-400-10", device="ideal", coding="latency", input_shape=(1, 8, 8), classes=10)
    with pytest.raises(ValueError, match="unknown charge-domain solver 'euler'; allowed: dstd, exact"):
        net.set_solver("euler")
    net.set_solver("exact")
    net.train()
    with pytest.raises(ValueError, match="the exact charge-domain solver has no gradient"):
        net(torch.rand(2, 64))
    vgg = build("vgg7-charge", device="ideal", coding="latency", input_shape=(1, 8, 8), classes=10).eval()
    vgg.set_solver("exact")
    with pytest.raises(ValueError, match="convolutional charge layers run with solver 'dstd'"):
        with torch.no_grad():
            vgg(torch.rand(2, 64))
    with pytest.raises(ValueError, match="--solver applies to charge-domain networks; resnet8 is a resnet network"):
        simulate("resnet8", "ideal", coding="rate", samples=2, solver="exact", progress=False)


@pytest.mark.parametrize("name", ["sanet-resnet8", "resnet8"])
def test_chunks_change_nothing_for_a_resnet(name):
    """LIF states carry over between chunks: scores, probes and events equal for any chunk."""
    x = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    res = []
    for chunk in (3, 8):
        net = build(name, device="moderate", coding="spike", seed=2, steps=8, input_shape=(1, 8, 8),
                    classes=10).eval()
        with torch.no_grad():
            res.append(Simulator(net, chunk=chunk).run(encoder_for("rate", x, 8, seed=1), steps=8,
                                                       probes=[Probe("stem", ("spikes", "v"))], spikes_in=True))
    a, b = res
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.equal(a.probes["stem/spikes"], b.probes["stem/spikes"])
    assert torch.allclose(a.probes["stem/v"], b.probes["stem/v"], atol=1e-5)
    assert a.probes["stem/spikes"].shape == (8, 4, 16 * 8 * 8)
    assert {k: v["spikes"] for k, v in a.events.items()} == {k: v["spikes"] for k, v in b.events.items()}


def test_engine_forward_is_the_training_forward():
    """What is trained is what is simulated: the network's own forward and a Simulator run give
    the same scores, and the spike-coded training forward backpropagates through the engine's
    LIF populations (BPTT) to the first array."""
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net = build("sanet-resnet8", device="ideal", coding="rate", seed=2, input_shape=(1, 8, 8), classes=10).eval()
    with torch.no_grad():
        assert torch.equal(net(x), Simulator(net, chunk=1).run(x.unsqueeze(0), steps=1, spikes_in=False).scores)
    net = build("sanet-resnet8", device="moderate", coding="spike", seed=2, steps=4, input_shape=(1, 8, 8),
                classes=10).train()
    net(x).sum().backward()
    g = net.stem.weight.grad
    assert g is not None and float(g.abs().sum()) > 0


def test_unknown_probe_and_variable_errors(tmp_path, capsys):
    code, _, err = _cli(["simulate", "--network", "sanet-resnet8", "--device", "ideal", "--samples", "2",
                         "--probe", "stem,stage9", "--out", tmp_path / "a.h5"], capsys)
    assert code == 2 and "--probe: stage9 names no component of sanet-resnet8; components: input, stem, " \
                          "stages.0.0.conv1" in err and "attn.1" in err and "Traceback" not in err
    code, _, err = _cli(["simulate", "--network", "resnet8", "--device", "ideal", "--samples", "2",
                         "--record", "gate", "--out", tmp_path / "b.h5"], capsys)
    assert code == 2 and "--record: gate is not recorded in resnet8" in err and "it records" in err
    assert list(tmp_path.iterdir()) == []
    net = build("sanet-resnet8", device="ideal", coding="spike", steps=2, input_shape=(1, 8, 8), classes=10)
    with pytest.raises(ValueError, match="probe 'attn.1': variable\\(s\\) v not recorded there; attn.1 records gate"):
        Simulator(net).run(torch.zeros(2, 1, 1, 8, 8), probes=[Probe("attn.1", ("v",))])


def test_probe_records_only_what_is_named(tmp_path):
    out = tmp_path / "p.h5"
    simulate("sanet-resnet8", "moderate", coding="spike", steps=3, samples=2, record=("spikes", "gate"),
             probe=["stem", "attn.2"], out=out, progress=False)
    rec = recording.open(out)
    assert rec.populations == ["stem"] and rec.reports == ["attn.2.gate"]
    assert rec.n_neurons("stem") == 16 * 8 * 8


def test_inspect_shows_shapes_engine_and_coprocessor(tmp_path, capsys):
    out = tmp_path / "s.h5"
    simulate("sanet-resnet8", "moderate", coding="spike", steps=3, samples=2, record=("spikes", "gate"),
             out=out, progress=False)
    code, text, _ = _cli(["inspect", out, "--raster", "-o", tmp_path / "r.png"], capsys)
    assert code == 0
    lines = text.splitlines()
    assert any(line.split()[:2] == ["stem", "1024"] and line.endswith("16x8x8") for line in lines), text
    assert "engine: 3 step(s) of 1.0 ms, 13 components" in text and "co-processor (whole run): attn.1" in text
    pops = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0] in
            ("input", "stem", "stages.0.0.conv1", "stages.2.0.short.0")]
    assert pops == ["input", "stem", "stages.0.0.conv1", "stages.2.0.short.0"]       # network order
    assert (tmp_path / "r.png").stat().st_size > 10_000


@pytest.mark.parametrize("name,coding_", [("sanet-resnet8", "spike"), ("sanet-resnet8", "rate"),
                                           ("resnet8", "spike")])
def test_component_shapes_are_what_is_recorded(name, coding_):
    """components() is what the writer puts in the shape attributes: on an odd input (7 x 7, where
    a stride-2 convolution gives 4 not 3) each probed population's width is the product of its
    shape, for every component with a per-neuron variable."""
    net = build(name, device="ideal", coding=coding_, seed=0, steps=2, input_shape=(1, 7, 7), classes=10).eval()
    comps = net.components()
    probes = [Probe(n, (c.variables[0],)) for n, c in comps.items() if n != "input"]
    x = torch.rand(2, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    spike = coding_ == "spike"
    inputs = encoder_for("rate", x.flatten(1), 2, seed=1) if spike else x.unsqueeze(0)
    with torch.no_grad():
        res = Simulator(net, chunk=2).run(inputs, steps=2 if spike else 1, probes=probes, spikes_in=spike)
    assert any(c.shape[-1] == 4 for c in comps.values())          # the odd size reached a stride
    for p in probes:
        got = res.probes[f"{p.layer}/{p.variables[0]}"]
        assert got.shape[-1] == math.prod(comps[p.layer].shape), (p.layer, got.shape, comps[p.layer].shape)
