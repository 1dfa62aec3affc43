"""The axes of the SALMON study (issue 26): column converter gain/offset errors, a backbone
without a digital batch-norm unit (frozen at calibration), and the attention blocks' own
digital optimizer; plus the torch twin the study compares against."""

import math

import pytest
import torch

from neurosal.crossbar import Crossbar
from neurosal.engine import calibration_batch, initialize_gains
from neurosal.networks import FrozenBatchNorm2d, build, load_network
from neurosal.training import train

KW = dict(rule="bp", epochs=1, batch=16, limit_train=64, limit_test=48, progress=False, seed=1)


# ------------------------------------------------------------------ column gain / offset errors
def _reads(xb, n=400, seed=0):
    """n vectors with entries in [0, 1] and one entry exactly 1 (per-vector scale 1, so the
    ADC's full scale is adc_range for every vector)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, xb.rows, generator=g) * 0.5
    x[torch.arange(n), torch.randint(0, xb.rows, (n,), generator=g)] = 1.0
    return x


def test_column_errors_are_a_per_column_gain_and_offset_of_the_drawn_size():
    """On an ideal device with a fine ADC, y = a_j y0 + o_j FS per column: a least-squares fit
    of every column against the error-free read recovers gain and offset; over 400 columns
    their spread is the card's sigma within 5 standard errors (SE of a sample std of n
    normals: sigma / sqrt(2n))."""
    sg, so, adc_range = 0.1, 0.02, 12.0
    xb = Crossbar(96, 400, "ideal", adc_bits=20, adc_range=adc_range, seed=3, column_gain=sg, column_offset=so)
    ref = Crossbar(96, 400, "ideal", adc_bits=20, adc_range=adc_range, seed=3)
    counts = torch.randint(-300, 301, (96, 400), generator=torch.Generator().manual_seed(2)).float()
    xb.apply_push_pull(counts)
    ref.apply_push_pull(counts)
    x = _reads(xb)
    y, y0 = xb.forward(x), ref.forward(x)
    A = torch.stack([y0, torch.ones_like(y0)], -1).double()          # [n, cols, 2]
    sol = torch.linalg.lstsq(A.transpose(0, 1), y.double().t().unsqueeze(-1)).solution.squeeze(-1)
    gain, off = sol[:, 0], sol[:, 1] / adc_range
    assert torch.allclose(gain, xb._col_gain.view(-1).double(), atol=1e-4)
    assert torch.allclose(off, xb._col_offset.view(-1).double(), atol=1e-5)
    for v, mu, s in ((gain, 1.0, sg), (off, 0.0, so)):
        n = v.numel()
        assert abs(float(v.mean()) - mu) < 5 * s / math.sqrt(n)
        assert abs(float(v.std()) - s) < 5 * s / math.sqrt(2 * n)
    corr = torch.corrcoef(torch.stack([gain, off]))[0, 1]
    assert abs(float(corr)) < 5 / math.sqrt(gain.numel())             # gain and offset drawn independently
    # the transposed (error) reads use other converters: unchanged
    d = torch.randn(8, 400, generator=torch.Generator().manual_seed(1))
    assert torch.equal(xb.backward(d), ref.backward(d))


def test_column_errors_are_per_tile_fabrication_constants_and_need_an_adc():
    a = Crossbar(300, 20, "ideal", adc_bits=8, column_gain=0.2, column_offset=0.05, seed=5)
    b = Crossbar(300, 20, "ideal", adc_bits=8, column_gain=0.2, column_offset=0.05, seed=5)
    c = Crossbar(300, 20, "ideal", adc_bits=8, column_gain=0.2, column_offset=0.05, seed=6)
    assert a._col_gain.shape == (3, 1, 20)                           # one converter per tile and column
    assert torch.equal(a._col_gain, b._col_gain) and not torch.equal(a._col_gain, c._col_gain)
    assert float(a._col_gain.min()) >= 0
    a.to(dtype=torch.float64)
    assert a._col_gain.dtype == a._col_offset.dtype == torch.float64
    with pytest.raises(ValueError, match="need a finite ADC"):
        Crossbar(8, 4, "ideal", column_gain=0.1)
    with pytest.raises(ValueError, match=r"column_offset must be a standard deviation in \[0, 1\]"):
        Crossbar(8, 4, "ideal", adc_bits=8, column_offset=-0.1)


def test_recipe_column_errors_reach_every_array_of_a_resnet():
    import dataclasses
    card = load_network("resnet8")
    card = dataclasses.replace(card, periphery=dataclasses.replace(card.periphery, column_gain=0.1, column_offset=0.01))
    net = build(card, device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
    xbs = [m.crossbar for m in net.modules() if hasattr(m, "crossbar")]
    assert xbs and all(x.column_gain == 0.1 and x.column_offset == 0.01 and x._col_gain is not None for x in xbs)


# ------------------------------------------------------------------ frozen batch norm
def test_frozen_batch_norm_is_set_once_from_the_fresh_chip_and_never_trained():
    """After the calibration read every frozen norm maps its calibration inputs to mean 0 and
    variance 1 per channel; it has no parameters, and training leaves its statistics as they
    were (a digital batch norm's move)."""
    import dataclasses
    from neurosal.datasets import load
    card = dataclasses.replace(load_network("resnet8"), batch_norm="frozen")
    data = load("digits", seed=1)
    net = build(card, device="ideal", coding="rate", input_shape=data.shape, classes=10, seed=1)   # no read noise
    norms = [m for m in net.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 9 and not any(True for m in norms for _ in m.parameters())
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(m, o.detach())) for m in norms]
    rep = initialize_gains(net, card, data.x_train, coding="rate", steps=1, seed=1)
    for h in hooks:
        h.remove()
    assert rep == {"batch_norm": 9}
    for m in norms:
        o = seen[m]
        n = o.numel() // o.shape[1]
        v = m.running_var * (n - 1) / n                                   # running_var is the unbiased one
        assert o.mean((0, 2, 3)).abs().max() < 1e-4
        assert torch.allclose(o.var((0, 2, 3), unbiased=False), v / (v + m.eps), atol=1e-4)
    x = calibration_batch(data.x_train, 1).reshape(-1, *data.shape)
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    with torch.no_grad():
        net.train()
        y_train = net(x)
        net.eval()
        y_eval = net(x)
    assert torch.allclose(y_train, y_eval, atol=1e-5)               # no batch statistics in training mode
    with torch.no_grad():
        net.train()
        net(x)
    for m, (mu, var) in zip(norms, before):
        assert torch.equal(m.running_mean, mu) and torch.equal(m.running_var, var)
    # trained on a noisy chip for 1 and for 3 epochs from the same calibration: the same statistics
    runs = [train(card, "moderate", return_net=True, **dict(KW, epochs=e))[1] for e in (1, 3)]
    a, b = ([m for m in n.modules() if isinstance(m, FrozenBatchNorm2d)] for n in runs)
    assert all(torch.equal(p.running_mean, q.running_mean) and torch.equal(p.running_var, q.running_var)
               for p, q in zip(a, b))
    assert not torch.equal(a[0].running_mean, torch.zeros_like(a[0].running_mean))     # calibrated


# ------------------------------------------------------------------ the attention blocks' optimizer
def _attn(net):
    return {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith("attn.")}


def test_attention_sgd_at_the_rule_lr_is_the_rule_and_adam_trains_only_the_blocks():
    """SGD of the blocks' own at the rule's lr is the update the rule makes (bit for bit, bp and
    hybrid); with its own optimizer the rule leaves the blocks alone: Adam at a vanishing lr
    keeps them where they started while the backbone trains as before."""
    for rule in ("bp", "hybrid"):
        kw = dict(KW, rule=rule)
        a, na, _ = train("sanet-resnet8", "moderate", return_net=True, **kw)
        b, nb, _ = train("sanet-resnet8", "moderate", return_net=True, attention_optimizer="sgd", attention_lr=0.1,
                         **kw)
        assert a["history"] == b["history"] and a["pulses"] == b["pulses"]
        for k, v in _attn(na).items():
            assert torch.equal(v, _attn(nb)[k]), k
    fresh = _attn(build("sanet-resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10,
                        seed=1))
    c, nc, _ = train("sanet-resnet8", "moderate", return_net=True, attention_optimizer="adam", attention_lr=1e-12,
                     **KW)
    assert c["attention"]["optimizer"] == "adam" and c["attention"]["lr"] == 1e-12
    moved = _attn(na)
    for k, v in _attn(nc).items():
        assert torch.allclose(v, fresh[k], atol=1e-9), k
        assert not torch.allclose(moved[k], fresh[k], atol=1e-6) or moved[k].abs().sum() == 0, k


def test_attention_optimizer_options_are_checked():
    with pytest.raises(ValueError, match="attention_lr is the learning rate of attention_optimizer"):
        train("sanet-resnet8", "ideal", attention_lr=0.01, **KW)
    with pytest.raises(ValueError, match="options of SAnet / ResNet recipes"):
        train("mlp-64-100-10", "ideal", attention_optimizer="adam", **KW)
    with pytest.raises(ValueError, match="has no attention blocks"):
        train("resnet8", "ideal", attention_optimizer="adam", **KW)


def test_an_interrupted_run_with_adam_attention_resumes_bit_for_bit(tmp_path):
    kw = dict(KW, epochs=2, attention_optimizer="adam", attention_lr=0.01)
    whole = train("sanet-resnet8", "moderate", out=str(tmp_path / "w.pt"), **kw)
    train("sanet-resnet8", "moderate", out=str(tmp_path / "p.pt"), **dict(kw, epochs=1))
    resumed = train("sanet-resnet8", "moderate", resume=str(tmp_path / "p.pt"), out=str(tmp_path / "p.pt"), **kw)
    assert resumed["history"] == whole["history"] and resumed["pulses"] == whole["pulses"]


# ------------------------------------------------------------------ the torch twin
def test_the_torch_twin_has_the_backbone_shape_and_learns_digits():
    from neurosal.experiments.twin import TorchResNet, train_twin
    t = TorchResNet(8, 16, 1, 10)
    chip = build("resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
    n_chip = sum(m.crossbar.rows * m.crossbar.cols for m in chip.modules() if hasattr(m, "crossbar"))
    n_twin = sum(p.numel() for n, p in t.named_parameters() if "weight" in n and p.dim() > 1)
    assert n_chip == n_twin                                          # the same analog weights
    r = train_twin("resnet8", dataset="digits", epochs=3, batch=16, lr=0.1, progress=False)
    assert r["test_accuracy"] > 0.8 and len(r["history"]) == 3
    with pytest.raises(ValueError, match="defined for ResNet recipes"):
        train_twin("mlp-64-100-10", dataset="digits")
