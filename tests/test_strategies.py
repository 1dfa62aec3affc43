"""SAnet attention strategies: attach at chosen stages, attach for the first K epochs, gate by
need; their digital share from the ledger; and a checkpoint round trip."""

import pytest
import torch

from neurosal.experiments import measure
from neurosal.training import attention_deviation, train
from neurosal.networks import build, load_checkpoint, load_network, recipe_for

KW = dict(rule="bp", epochs=2, batch=16, limit_train=64, limit_test=48, progress=False, seed=1)


def _strip(r):
    return {k: r[k] for k in ("history", "pulses", "verify_reads", "layers")}


def test_detached_from_the_start_equals_a_network_without_blocks():
    a = train("sanet-resnet8", "severe", attach_epochs=0, **KW)
    b = train("sanet-resnet8", "severe", attach="none", **KW)
    assert _strip(a) == _strip(b)
    assert a["attention"]["attached"] == [] and a["digital_share"]["inference"] == b["digital_share"]["inference"]


def test_digital_share_matches_the_ledger_per_block():
    """The share the result reports is the ledger's: co-processor energy of the attached blocks
    (per unit 'attn.N') plus the other digital work, over the total; a detached block costs nothing."""
    for kw, live in ((dict(attach="1,3"), {1, 3}), (dict(attach_epochs=1), set())):
        r, net, data = train("sanet-resnet8", "moderate", return_net=True, **KW, **kw)
        assert r["attention"]["attached"] == sorted(live)
        ci = r["cost"]["inference"]
        assert r["digital_share"]["inference"] == pytest.approx(
            ci["digital_energy_j"] / (ci["analog_energy_j"] + ci["digital_energy_j"]), rel=1e-12)
        ct = r["cost"]["training"]
        assert r["digital_share"]["training"] == pytest.approx(ct["digital_energy_j"] / ct["energy_j"], rel=1e-12)
        m = measure("sanet-resnet8", "moderate", net=net, data=data, rule=None, batch=len(data.y_test))
        inf = m["inference"]
        blocks = {la["name"]: la for la in inf.per_layer() if la["name"].startswith("attn.")}
        assert {int(k.split(".")[1]) for k, v in blocks.items() if v["energy_j"] > 0} == live
        # the blocks' energy is co-processor work: the digital part of the inference without it is the rest
        per = ci["digital_energy_j"] / ci["samples"]
        assert inf.digital_energy_j / inf.samples == pytest.approx(per, rel=1e-9)
        cop = sum(v["phases"]["forward"]["components"].get("coprocessor", 0.0) for v in blocks.values())
        assert (cop > 0) == bool(live)


def test_gate_by_need_keeps_blocks_where_the_device_deviates():
    card = load_network("sanet-resnet8")
    x = torch.rand(32, 64)
    ideal = build(card, device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
    severe = build(card, device="severe", coding="rate", input_shape=(1, 8, 8), classes=10)
    d_ideal = attention_deviation(ideal, card, x)
    d_severe = attention_deviation(severe, card, x)
    assert all(v < 0.05 for v in d_ideal.values()), d_ideal        # 8-bit ADC only
    assert all(v > 0.2 for v in d_severe.values()), d_severe
    assert ideal.attached == {1, 2, 3}                               # the probe leaves the blocks as they were
    r = train("sanet-resnet8", "ideal", attach_gate=0.05, **KW)
    assert r["attention"]["attached"] == [] and r["digital_share"]["inference"] < 0.01
    r = train("sanet-resnet8", "severe", attach_gate=0.05, **KW)
    assert r["attention"]["attached"] == [1, 2, 3]


def test_strategies_survive_a_checkpoint_round_trip(tmp_path):
    ck = tmp_path / "s.pt"
    r = train("sanet-resnet8", "moderate", attach="2,3", attach_epochs=1, out=ck, **KW)
    card = recipe_for("sanet-resnet8", ck)
    assert tuple(card.attach) == (2, 3)
    net = build(card, device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    assert net.attached == {2, 3}
    load_checkpoint(net, ck)
    assert net.attached == set() and r["attention"]["attached"] == []
    with pytest.raises(ValueError, match="differs from the one given in attach"):
        load_checkpoint(build("sanet-resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8),
                              classes=10), ck)


@pytest.mark.parametrize("kw,msg", [(dict(attach="1,4"), "attach: stages \\[4\\] not allowed"),
                                    (dict(attach="x"), "attach 'x': not allowed"),
                                    (dict(attach_epochs=-1), "attach.epochs -1: not allowed"),
                                    (dict(attach_gate=float("inf")), "attach.gate inf: not allowed")])
def test_bad_strategy_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        train("sanet-resnet8", "ideal", **{**KW, **kw})
    if "attach" in kw:
        with pytest.raises(ValueError, match="options of SAnet / ResNet recipes"):
            train("mlp-64-100-10", "ideal", attach="1", progress=False)


@pytest.mark.parametrize("position", ["stage", "residual"])
def test_an_open_gate_is_the_identity_and_a_detached_block_the_backbone(position):
    from neurosal.networks import SAnet
    kw = dict(input_shape=(1, 8, 8), classes=10, attention="se", device="ideal", seed=2, position=position)
    net, plain = SAnet(8, 4, **kw), SAnet(8, 4, **{**kw, "attention": None})
    net.eval(), plain.eval()
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        closed = net(x)
        for blk in net.attn.values():
            blk.fc2.bias.fill_(60.0)                      # sigmoid(60) = 1 - 1e-26: the gate is open
        # equal up to the co-processor's fixed-point format (10 fractional bits: steps of 2^-10)
        assert torch.allclose(net(x), plain(x), atol=2.0 ** -10)
        net.detach()
        assert torch.equal(net(x), plain(x))
        net.attach()
        assert not torch.allclose(closed, plain(x), atol=1e-3)


def test_the_residual_position_gates_the_branch_not_the_stage():
    from neurosal.networks import SAnet
    kw = dict(input_shape=(1, 8, 8), classes=10, attention="se", device="ideal", seed=2)
    a, b = SAnet(8, 4, position="stage", **kw), SAnet(8, 4, position="residual", **kw)   # same chip, same blocks
    assert all(torch.equal(p, q) for p, q in zip(a.attn.parameters(), b.attn.parameters()))
    a.eval(), b.eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
    with pytest.raises(ValueError, match="not on the residual branch"):
        train(load_network("sanet-resnet8").__class__(**{**load_network("sanet-resnet8").__dict__,
                                                         "attention_position": "residual"}),
              "ideal", rule="dfa", limit_train=16, limit_test=8, progress=False)
