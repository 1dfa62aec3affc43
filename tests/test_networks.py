"""Network recipes: validation names file and field; checkpoints restore the same chip."""

import pytest
import torch

from neurosal.cards import CardError
from neurosal.networks import build, list_networks, load_checkpoint, load_network, save_checkpoint
from neurosal.engine import Simulator, encoder_for


def test_shipped_recipe():
    assert "mlp-64-100-10" in list_networks()
    c = load_network("mlp-64-100-10")
    assert c.sizes == (64, 100, 10) and c.lif.surrogate == "super"
    net = build(c, device="severe", coding="latency")
    assert [layer.neurons.kind for layer in net.layers] == ["charge", "charge"]
    assert net.layers[0].crossbar.device.card.name == "severe"


@pytest.mark.parametrize("text,field,allowed", [
    ('name="m"\nsizes=[64]\n', "sizes", "at least an input and an output"),
    ('name="m"\nsizes=[64, 10.5]\n', "sizes[1]", "whole numbers"),
    ('name="m"\nsizes=[64, 10]\nneuron="izhikevich"\n', "neuron", "one of 'lif', 'charge'"),
    ('name="m"\nsizes=[64, 10]\n[lif]\ntau_mem=-1\n', "lif.tau_mem", "(0, 10] s"),
    ('name="m"\nsizes=[64, 10]\ninit_gain=inf\n', "init_gain", "must be finite"),
    ('name="m"\nsizes=[64, 10]\n[charge]\ne_plus=nan\n', "charge.e_plus", "NaN is not allowed"),
    ('name="m"\nsizes=[64, 10]\n[periphery]\nadc_bits=40\n', "periphery.adc_bits", "[1, 24]"),
    ('name="m"\nsizes=[64, 10]\nlayers=3\n', "layers", "allowed fields here"),
])
def test_bad_recipe_names_file_and_field(card_file, text, field, allowed):
    p = card_file(text, name="net.toml")
    with pytest.raises(CardError) as e:
        load_network(p)
    assert str(p) in str(e.value) and f"field '{field}'" in str(e.value) and allowed in str(e.value)


def test_checkpoint_restores_the_same_chip(tmp_path):
    a = build("mlp-64-100-10", device="severe", coding="spike", seed=3)
    for layer in a.layers:                                  # move the chip away from its fresh state
        n = torch.full((layer.n_in, layer.n_out), 3.0)
        layer.crossbar.apply_pulses(n, -n)
    save_checkpoint(a, tmp_path / "ck.pt")
    b = build("mlp-64-100-10", device="severe", coding="spike", seed=99)
    load_checkpoint(b, tmp_path / "ck.pt")
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.crossbar.weights(), lb.crossbar.weights())
    x = torch.rand(4, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ra = Simulator(a).run(encoder_for("rate", x, 20, seed=1), steps=20)
        rb = Simulator(b).run(encoder_for("rate", x, 20, seed=1), steps=20)
    assert torch.equal(ra.spike_counts, rb.spike_counts)    # same read-noise stream too
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable neurosal checkpoint"):
        load_checkpoint(b, tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(b, tmp_path / "none.pt")



def test_loading_a_crafted_checkpoint_runs_no_code(tmp_path, exploit):
    """Checkpoints hold tensors and plain data only (torch.load weights_only=True): a file
    whose unpickling would run a command is refused and the command does not run."""
    payload, marker = exploit
    bad = tmp_path / "bad.pt"
    torch.save({"format": "neurosal-checkpoint-1", "meta": payload}, bad)
    net = build("mlp-64-100-10", device="ideal", coding="rate")
    with pytest.raises(ValueError, match="not a readable neurosal checkpoint"):
        load_checkpoint(net, bad)
    assert not marker.exists()
    good = tmp_path / "good.pt"                       # a real checkpoint still loads
    save_checkpoint(net, good)
    load_checkpoint(build("mlp-64-100-10", device="ideal", coding="rate", seed=3), good)
