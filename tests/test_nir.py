"""NIR out and in: time constants in seconds, weights as read from the chip, a written graph
that nir reads and type-checks, an import programmed by counted write-and-verify that spikes
like the exported network, and hand-built graphs with nir's own API."""

import json
import math

import nir
import numpy as np
import pytest
import torch

from neurosal.interop import nir as nnir
from neurosal.networks import build, load_network
from neurosal.engine import Probe, Simulator, encoder_for


def _net(device="ideal", **kw):
    return build("mlp-64-100-10", device=device, coding="spike", input_shape=(1, 8, 8), classes=10, **kw)


def _run(net, x, steps=32):
    r = Simulator(net, chunk=steps).run(encoder_for("rate", x, steps, seed=5), steps=steps,
                                        probes=[Probe("fc1", ("spikes",))])
    return r.probes["fc1/spikes"], r.scores


def test_export_writes_time_constants_in_seconds_and_the_chip_weights(tmp_path):
    net = _net("moderate")
    card = load_network("mlp-64-100-10")
    g = nnir.to_nir(net)
    assert [type(g.nodes[k]).__name__ for k in ("input", "fc1", "fc1.neurons", "fc2", "fc2.neurons", "output")] == \
        ["Input", "Affine", "LIF", "Affine", "LI", "Output"]
    lif = g.nodes["fc1.neurons"]
    # tau in seconds (5 ms), not tau / dt = 5 as norse 1.1.0's to_nir writes it; r = 1 for tau dv/dt = -v + I
    assert np.all(lif.tau == card.lif.tau_mem) and card.lif.tau_mem == 5e-3 and g.metadata["dt"] == 1e-3
    assert np.all(lif.r == 1.0) and np.all(lif.v_threshold == card.lif.v_th) and np.all(lif.v_reset == 0.0)
    layer = net.layers[0]
    w = (layer.crossbar.weights().t() * layer.synapse.weight_scale).double().numpy()
    assert np.array_equal(g.nodes["fc1"].weight, w)                   # no read noise: the conductances
    assert g.nodes["fc1"].metadata["device"] == "moderate"
    meta = json.loads(g.metadata["neurosal"])
    assert meta["devices"]["fc1"]["name"] == "moderate" and meta["coding"] == "spike"
    # written, read back, and type-checked by nir itself
    p = nnir.write(tmp_path / "n.nir", net)
    h = nir.read(p)
    nir.NIRGraph(nodes=h.nodes, edges=h.edges, type_check=True)
    assert np.array_equal(h.nodes["fc1"].weight, w) and np.all(h.nodes["fc1.neurons"].tau == 5e-3)


def test_import_round_trip_spikes_like_the_export_on_ideal(tmp_path):
    net = _net("ideal")
    p = nnir.write(tmp_path / "n.nir", net)
    net2, rep = nnir.from_nir(p, device="ideal")
    # programmed, not copied: pulses and verify reads are counted, every weight within one pulse step
    assert rep.pulses > 0 and rep.verify_reads > 0
    assert sum(l.crossbar.counters.pulses for l in net2.layers) == rep.pulses
    for a, b in zip(net.layers, net2.layers):
        step = b.synapse.weight_scale / b.crossbar.device.card.pmax
        assert float((a.synapse.weight - b.synapse.weight).detach().abs().max()) <= step * (1 + 1e-6)
        assert b.synapse.weight_scale == a.synapse.weight_scale and b.crossbar.adc_bits == a.crossbar.adc_bits
        assert b.neurons.p.tau_mem == a.neurons.p.tau_mem and b.neurons.p.v_th == a.neurons.p.v_th
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(0))
    sa, ya = _run(net, x)
    sb, yb = _run(net2, x)
    # golden, over input seeds 0-7: 99.90-99.98 % of the hidden spikes agree and the readout
    # maxima differ by at most 0.06 (a fresh network's near-tied classes may flip, so they are not compared)
    assert (sa == sb).float().mean() >= 0.995
    assert float((ya - yb).detach().abs().max()) < 0.1


def test_a_graph_built_with_nirs_own_api_imports():
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(0, 0.3, (5, 4)), rng.normal(0, 0.1, 5)
    w2 = rng.normal(0, 0.3, (3, 5))
    g = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([4])),
        "a": nir.Affine(weight=w1, bias=b1),
        "n": nir.LIF(tau=np.full(5, 0.02), r=np.full(5, 2.0), v_leak=np.zeros(5), v_threshold=np.full(5, 0.8),
                     v_reset=np.zeros(5)),
        "b": nir.Linear(weight=w2),
        "m": nir.LI(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.zeros(3)),
        "out": nir.Output(output_type=np.array([3]))},
        edges=[("in", "a"), ("a", "n"), ("n", "b"), ("b", "m"), ("m", "out")])
    net, rep = nnir.from_nir(g, device="ideal", dt=1e-3)
    l1, l2 = net.layers
    step1 = l1.synapse.weight_scale / 1000
    assert l1.synapse.weight_scale == pytest.approx(2 * np.abs(w1).max() / 0.9)
    # r = 2 folded into weights and bias (I = r (W x + b))
    assert np.allclose(l1.synapse.weight.detach().numpy(), 2 * w1, atol=step1 * (1 + 1e-6))
    assert np.allclose(l1.synapse.bias.detach().numpy(), 2 * b1, atol=1e-6)
    assert l1.neurons.p.tau_mem == 0.02 and l1.neurons.p.v_th == 0.8 and math.isinf(l2.neurons.p.v_th)
    assert net.decoder == "max_membrane" and rep.layers["a"]["converged"] == 1.0


def test_if_nodes_run_as_lif_with_negligible_leak():
    """The stated rule: IF (dv/dt = r I) is a LIF with tau = 1e6 dt and input x tau; one constant
    input then charges the membrane by dt r I per step."""
    g = nir.NIRGraph(nodes={
        "in": nir.Input(input_type=np.array([1])), "a": nir.Linear(weight=np.array([[0.5]])),
        "n": nir.IF(r=np.array([2.0]), v_threshold=np.array([1e9]), v_reset=np.array([0.0])),
        "out": nir.Output(output_type=np.array([1]))}, edges=[("in", "a"), ("a", "n"), ("n", "out")])
    net, _ = nnir.from_nir(g, device="ideal", dt=1e-3)
    lif = net.layers[0].neurons
    assert lif.p.tau_mem == pytest.approx(1e3)
    w = float(net.layers[0].synapse.weight.detach())
    assert w == pytest.approx(0.5 * 2 * 1e3, rel=2e-3)              # the weight carries r and tau
    from neurosal.neurons import lif_step
    v = torch.zeros(1)
    for _ in range(10):
        _, v = lif_step(torch.tensor([w * 1.0]), v, lif.p, 1e-3)
    assert float(v) == pytest.approx(10 * 1e-3 * 2 * 0.5, rel=3e-3)


@pytest.mark.parametrize("kw,msg", [
    (dict(coding="rate"), "rate coding is a bounded analog activation"),
    (dict(coding="latency"), "charge-domain neurons"),
])
def test_what_nir_cannot_express_is_refused(kw, msg):
    net = build("mlp-64-100-10", device="ideal", input_shape=(1, 8, 8), classes=10, **kw)
    with pytest.raises(nnir.NIRError, match=msg):
        nnir.to_nir(net)
    with pytest.raises(nnir.NIRError, match="convolutional recipes"):
        nnir.to_nir(build("resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10))


def test_import_refusals():
    two = nir.NIRGraph(nodes={"in": nir.Input(input_type=np.array([2])),
                              "a": nir.Affine(weight=np.ones((2, 2)), bias=np.zeros(2)),
                              "n": nir.LIF(tau=np.array([0.01, 0.02]), r=np.ones(2), v_leak=np.zeros(2),
                                           v_threshold=np.ones(2), v_reset=np.zeros(2)),
                              "out": nir.Output(output_type=np.array([2]))},
                       edges=[("in", "a"), ("a", "n"), ("n", "out")])
    with pytest.raises(nnir.NIRError, match="tau differs between neurons"):
        nnir.from_nir(two)


def test_export_command(tmp_path, capsys):
    from neurosal.cli import main
    out = tmp_path / "n.nir"
    assert main(["export", "--network", "mlp-64-100-10", "--device", "moderate", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc1.neurons    LIF      [100]" in text and out.is_file()
