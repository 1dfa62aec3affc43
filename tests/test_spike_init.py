"""Spike-coded recipes train out of the box: the data-driven initialization keeps activity alive
through depth (layer gains for LIF chains, batch-norm statistics for SAnet/ResNet), its reads
are counted, it persists in checkpoints, and silent or saturated layers are named."""

import pytest
import torch
import torch.nn.functional as F

from neurosal.engine import (Simulator, activity_warnings, calibrate_gains, encoder_for, firing_rates, initialize_gains,
                             population_counts)
from neurosal.networks import build, load_checkpoint, load_network, save_checkpoint


def _mnist_like(n: int, seed: int) -> torch.Tensor:
    """MNIST-shaped strokes: smooth blobs covering about a fifth of the 28x28 frame (MNIST: 19 %
    of the pixels are ink), intensities up to 1, as [n, 784]."""
    g = torch.Generator().manual_seed(seed)
    noise = F.avg_pool2d(torch.rand(n, 1, 32, 32, generator=g), 5, stride=1)        # [n, 1, 28, 28]
    thr = noise.flatten(1).quantile(0.8, dim=1).view(-1, 1, 1, 1)
    ink = ((noise - thr) / (noise.amax((2, 3), keepdim=True) - thr)).clamp(0, 1)
    return ink.pow(0.5).flatten(1)


def _rates(net, x, steps=32, seed=5):
    c0 = population_counts(net)
    with torch.no_grad():
        res = Simulator(net, chunk=steps).run(encoder_for("rate", x, steps, seed=seed), steps=steps)
    return firing_rates(c0, population_counts(net)), res


@pytest.mark.parametrize("device", ["ideal", "moderate"])
def test_activity_reaches_the_readout_of_the_shipped_spike_mlp(device):
    """mlp-784-400-400-10, spike coded, on MNIST-shaped input: uncalibrated, the second hidden
    layer is silent (the failure this fixes); after the recipe's initialization every hidden
    layer fires near the recipe's rate on samples it was not calibrated on, and the readout's
    membrane differs between samples and classes."""
    card = load_network("mlp-784-400-400-10")
    x_cal, x = _mnist_like(256, 0), _mnist_like(128, 1)
    raw = build(card, device=device, coding="spike", seed=0)
    r0, _ = _rates(raw, x)
    assert r0["fc2"] < 1e-3
    net = build(card, device=device, coding="spike", seed=0)
    rep = initialize_gains(net, card, x_cal, coding="spike", steps=32, seed=0)
    assert set(rep) == {"fc1", "fc2"}
    r, res = _rates(net, x)
    assert set(r) == {"fc1", "fc2"}                                    # the leaky readout cannot fire
    for name in ("fc1", "fc2"):
        assert 0.5 * card.spike_rate < r[name] < 2 * card.spike_rate, (name, r[name])
    v = res.max_v
    assert float(v.std(0).min()) > 1e-3 and float(v.std(1).min()) > 1e-3


def test_calibrated_gain_is_digital_counted_and_on_target():
    """The gain is the periphery's digital multiplier: conductances stay as they were, the
    weight mirror follows, each spiking layer costs one read of the calibration batch (all
    layers read in each pass), and the rates reached are the target within tolerance."""
    net = build("mlp-784-400-400-10", device="moderate", coding="spike", seed=1)
    g0 = [layer.synapse.crossbar.state.g.clone() for layer in net.layers]
    s0 = [layer.synapse.weight_scale for layer in net.layers]
    reads0 = [layer.synapse.crossbar.counters.forward_reads for layer in net.layers]
    x = _mnist_like(64, 2)
    rep = calibrate_gains(net, x, steps=16, rate=0.08, tol=0.05)
    for layer, g, s, r0 in zip(net.layers, g0, s0, reads0):
        syn = layer.synapse
        assert torch.equal(syn.crossbar.state.g, g)
        assert torch.allclose(syn.weight, syn.crossbar.weights().t() * syn.weight_scale)
        gain = rep.get(layer.name, {"gain": 1.0})["gain"]
        assert syn.weight_scale == pytest.approx(s * gain, rel=1e-12)
        assert syn.crossbar.counters.forward_reads - r0 == 2 * 16 * 64
    for name in ("fc1", "fc2"):
        assert abs(rep[name]["rate"] - 0.08) <= 0.05 * 0.08
        assert rep[name]["gain"] > 1.0                      # the recipe's init under-drives both layers
    with pytest.raises(ValueError, match="target firing rate"):
        calibrate_gains(net, x, steps=16, rate=1.5)


def test_calibrated_gains_travel_in_checkpoints(tmp_path):
    """A checkpoint carries each array's gain: the loaded network computes what the calibrated
    one did, bit for bit; a damaged gain list is a named error."""
    card = load_network("mlp-784-400-400-10")
    net = build(card, device="ideal", coding="spike", seed=0)
    initialize_gains(net, card, _mnist_like(128, 0), coding="spike", steps=32, seed=0)
    p = tmp_path / "c.pt"
    save_checkpoint(net, p)
    other = build(card, device="ideal", coding="spike", seed=0)
    load_checkpoint(other, p)
    assert [la.synapse.weight_scale for la in other.layers] == [la.synapse.weight_scale for la in net.layers]
    x = _mnist_like(16, 3)
    assert torch.equal(_rates(net, x)[1].max_v, _rates(other, x)[1].max_v)
    ck = torch.load(p, weights_only=True)
    ck["gains"] = ck["gains"][:1]
    torch.save(ck, p)
    with pytest.raises(ValueError, match="gains"):
        load_checkpoint(build(card, device="ideal", coding="spike", seed=0), p)


def test_every_population_of_a_fresh_spike_sanet_fires():
    """sanet-resnet8, spike coded, fresh, in inference: with the batch norms' statistics set on a
    calibration batch every population fires (without, everything past the stem is silent)."""
    x = _mnist_like(96, 4).reshape(-1, 1, 28, 28)
    card = load_network("sanet-resnet8")

    def rates(net):
        net.eval()
        c0 = population_counts(net)
        with torch.no_grad():
            net(x[64:])
        return firing_rates(c0, population_counts(net))
    raw = rates(build(card, device="moderate", coding="spike", seed=0, input_shape=(1, 28, 28), classes=10))
    assert max(v for k, v in raw.items() if k != "stem") < 1e-3
    net = build(card, device="moderate", coding="spike", seed=0, input_shape=(1, 28, 28), classes=10)
    assert initialize_gains(net, card, x[:64].flatten(1), coding="spike", steps=8, seed=0) == {"batch_norm": 9}
    r = rates(net)
    assert len(r) == 9 and min(r.values()) > 0.02 and max(r.values()) < 0.5


def test_activity_warnings_name_the_layer():
    w = activity_warnings({"fc1": 0.05, "fc2": 0.0, "fc3": 0.97})
    assert len(w) == 2 and "fc2 is silent" in w[0] and "fc3 is saturated" in w[1]
    assert activity_warnings({"fc1": 0.05}) == []


def test_train_and_simulate_report_firing(capsys):
    """`train` and `simulate` say how much each layer fires and what the initialization set."""
    from neurosal.cli import main
    assert main(["train", "--network", "mlp-64-100-10", "--device", "moderate", "--rule", "bp", "--coding", "spike",
                 "--limit-train", "64", "--limit-test", "32", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "initialization (recipe spike_rate): fc1 gain x" in out and "firing (spikes per neuron and step" in out
    from neurosal.experiments.inference import simulate
    s = simulate("mlp-64-100-10", "moderate", coding="spike", samples=32, progress=False)
    assert 0.02 < s["layers"]["fc1"]["rate"] < 0.1 and s["gains"]["fc1"]["gain"] > 0 and s["warnings"] == []
