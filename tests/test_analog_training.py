"""The field's analog training algorithms against hand computations on tiny arrays: pulse-train
coincidences (exact where every probability is 0 or 1, unbiased in expectation otherwise),
mixed-precision accumulation, Tiki-Taka transfers, choppers and AGAD's on-the-fly reference."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from neurosal.crossbar import AnalogLinear, Crossbar, PulseError, apply_pulse_trains, coincidences
from neurosal.devices import Faults, Noise, Variation, load_device
from neurosal.learning import AGAD, ChoppedTTv2, MixedPrecision, TTv2
from neurosal.training import train


def _nominal(name="ideal"):
    return dataclasses.replace(load_device(name), noise=Noise(), variation=Variation(), faults=Faults())


def test_coincidences_exact_when_probabilities_are_zero_or_one():
    """scale = BL and one nonzero input and error of magnitude 1: p = q = 1 there, 0 elsewhere,
    so the cell they share sees BL coincidences in the direction -sign(x d), the others none."""
    bl = 7
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    d = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    up, down, clipped = coincidences(x, d, scale=float(bl), bl=bl, generator=torch.Generator().manual_seed(0))
    want_up = torch.zeros(3, 2)
    want_up[0, 0] = bl                     # x = +1, d = -1: -x d > 0, potentiate
    want_down = torch.zeros(3, 2)
    want_down[1, 1] = bl                   # x = -1, d = -1: depress
    assert torch.equal(up, want_up) and torch.equal(down, want_down) and int(clipped) == 0


def test_pulse_train_expectation_is_the_outer_product():
    r"""E[n_up - n_down] = -scale x^T d per cell. Each count is a sum over N BL slots of
    independent coincidences of probability p_i q_j (after update management), so its variance
    is sum p q (1 - p q); the mean over R repeats is within 5 standard errors."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 5, generator=g, dtype=torch.float64) * 2 - 1
    d = torch.rand(3, 4, generator=g, dtype=torch.float64) * 2 - 1
    scale, bl, reps = 6.0, 31, 400
    net = torch.zeros(5, 4, dtype=torch.float64)
    tot = torch.zeros(5, 4, dtype=torch.float64)
    for _ in range(reps):
        up, down, clipped = coincidences(x, d, scale=scale, bl=bl, generator=g)
        net += up - down
        tot += up + down
        assert int(clipped) == 0
    want = -scale * x.t() @ d
    # variance of one repeat's count: sum over samples of BL p q (1 - p q) <= E[total]
    var = tot / reps
    se = (var / reps).sqrt()
    assert bool(((net / reps - want).abs() <= 5 * se + 1e-9).all())
    # every coincidence, of either sign: E[n_up + n_down] = scale |x|^T |d| (no clipping here)
    assert bool(((tot / reps - scale * x.abs().t() @ d.abs()).abs() <= 5 * se + 1e-9).all())


def test_pulse_train_probabilities_above_one_are_clipped_and_counted():
    x = torch.ones(2, 3)
    d = torch.ones(2, 2)
    up, down, clipped = coincidences(x, d, scale=100.0, bl=4, generator=torch.Generator().manual_seed(0))
    assert int(clipped) == 2 and float(down.max()) == 8 and float(up.max()) == 0


def test_pulse_train_update_of_a_linear_array_and_its_counts():
    """On a noise-free linear pair every coincidence moves w by one pulse pair (2/Pmax); the whole
    array takes BL slots per sample and phase; the periphery draws BL bits per row, column and
    sample."""
    card = _nominal("ideal")
    xb = Crossbar(3, 2, card, seed=0, dtype=torch.float64)
    xb.initialize(torch.zeros(3, 2, dtype=torch.float64))
    bl = 5
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w0 = xb.weights().clone()
    applied, _ = apply_pulse_trains(xb, x, d, scale=float(bl), bl=bl, generator=torch.Generator().manual_seed(0))
    dw = 2 / card.pmax
    want = torch.zeros(3, 2, dtype=torch.float64)
    want[0, 0], want[1, 1] = bl * dw, -bl * dw
    assert torch.allclose(xb.weights() - w0, want, atol=1e-12)
    assert int(applied) == 2 * 2 * bl                       # two cells, two devices each, BL pulses
    assert xb.counters.pulse_bits == 2 * bl * (3 + 2)
    assert xb.counters.write_cycles == 2 * (2 * bl)         # two phases, each BL slots per sample


def test_bp_pulse_train_trains_and_refuses_convolutions():
    r = train("mlp-64-100-10", "ideal", rule="bp", update="pulse-train", bl=31, epochs=1, lr=0.1, progress=False,
              limit_train=400, limit_test=200)
    assert r["test_accuracy"] > 0.5
    # the outer product never exists digitally: no MACs in the tiles' digital units
    assert all(c["pulse_bits"] > 0 and c["digital_macs"] == 0 for c in r["layers"].values())
    with pytest.raises(ValueError, match="fully connected"):
        train("sanet-resnet8", "ideal", rule="bp", update="pulse-train", epochs=1, limit_train=8, limit_test=8,
              progress=False)


def _tiny(card=None, rows=4, cols=3):
    layer = AnalogLinear(rows, cols, device=card or _nominal("ideal"), bias=False, weight_scale=1.0)
    return nn.Sequential(layer), layer


def test_mixed_precision_pulses_whole_steps_and_keeps_the_rest():
    net, layer = _tiny()
    rule = MixedPrecision(net, lr=1.0, max_pulses=16)
    chi = rule.chi[0]
    step = layer.dw_min                                    # one device step, effective units
    grad = torch.full((3, 4), -0.6 * step)                 # asks +0.6 step per call
    w0 = layer.crossbar.weights().clone()
    n1 = rule.accumulate(layer, chi, grad)
    assert int(n1.abs().sum()) == 0 and torch.allclose(chi, torch.full_like(chi, 0.6), atol=1e-5)
    n2 = rule.accumulate(layer, chi, grad)
    assert torch.equal(n2, torch.ones_like(n2)) and torch.allclose(chi, torch.full_like(chi, 0.2), atol=1e-5)
    assert torch.allclose(layer.crossbar.weights() - w0, torch.full_like(w0, 2 / 1000), atol=1e-6)


def _set_fast(rule, w):
    a = rule.fast[0]
    a.initialize(torch.as_tensor(w, dtype=a.dtype))
    return a


def test_ttv2_transfer_hand_computation():
    """Rows 0 and 1 of A are read (one-hot reads through the periphery), H += beta A / dw, one
    pulse to C where |H| >= 1, H keeps the rest; the next call reads rows 2 and 3."""
    net, layer = _tiny()
    rule = TTv2(net, lr=0.1, transfer_rows=2, transfer_lr=0.5)
    dw = 2 / 1000
    wa = torch.tensor([[0.005, -0.003, 0.001], [0.0, 0.0041, -0.0065], [0.01, 0.0, 0.0], [0.0, 0.0, -0.01]])
    a = _set_fast(rule, wa)
    c0 = layer.crossbar.weights().clone()
    rule._transfer(layer, a, rule.state[0])
    h_want = torch.zeros(4, 3)
    h_want[:2] = 0.5 * wa[:2] / dw                       # [[1.25, -0.75, 0.25], [0, 1.025, -1.625]]
    n = torch.trunc(h_want).clamp(-1, 1)
    assert torch.allclose(rule.state[0]["H"], h_want - n, atol=1e-4)
    assert torch.allclose(layer.crossbar.weights() - c0, n * dw, atol=1e-6)
    assert rule.state[0]["ptr"] == 2 and rule.stats()["transfer_reads"] == 2
    assert layer.crossbar.counters.forward_reads == 2      # A's reads are counted with its layer


def test_chopped_ttv2_undoes_the_chopper_on_write_and_read():
    net, layer = _tiny()
    rule = ChoppedTTv2(net, lr=1.0, transfer_rows=4, transfer_lr=1.0, chop_prob=1e-9)   # never flips
    st = rule.state[0]
    st["chop"][:] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    # the update -lr grad^T, in pulses: an integer (stochastic rounding leaves it exact)
    k = torch.tensor([[2.0, -1.0, 0.0], [1.0, 1.0, -3.0], [0.0, 0.0, 1.0], [4.0, 0.0, 0.0]])
    layer.weight.grad = (-k * layer.dw_min).t().contiguous()
    a = rule.fast[0]
    a0 = a.weights().clone()
    rule._update_fast(layer, a, st, None)
    dw = 2 / 1000
    chop = st["chop"][:, None]
    assert torch.allclose(a.weights() - a0, chop * k * dw, atol=1e-6)       # chopped on the write
    rule._transfer(layer, a, st)
    # read back with the same sign: H holds the unchopped update (k, in pulses of C)
    h_plus_n = st["H"] + torch.trunc(chop * (a.weights() / dw)).clamp(-1, 1)
    assert torch.allclose(h_plus_n, k, atol=1e-3)


def test_chopper_flips_with_its_probability():
    """c-ttv2: each read flips a row's chopper with probability chop_prob: over R reads of 64 rows
    the flip fraction is within 5 binomial standard errors of it."""
    net, layer = _tiny(rows=64, cols=2)
    rule = ChoppedTTv2(net, lr=0.1, transfer_rows=64, chop_prob=0.3)
    st = rule.state[0]
    a = rule.fast[0]
    flips, reps = 0, 50
    for _ in range(reps):
        before = st["chop"].clone()
        rule._transfer(layer, a, st)
        flips += int((st["chop"] != before).sum())
    n = reps * 64
    assert abs(flips / n - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)


def test_agad_reference_is_the_previous_period_mean():
    """period 2 (chop_prob 0.5): no transfer until a row has a reference; after two reads the
    reference is their mean and the chopper has flipped; the next read transfers
    c (A - ref) beta / dw."""
    net, layer = _tiny()
    rule = AGAD(net, lr=0.1, transfer_rows=4, transfer_lr=1.0, chop_prob=0.5)
    st = rule.state[0]
    wa = torch.full((4, 3), 0.0066)              # an offset, no signal: must never reach C
    a = _set_fast(rule, wa)
    c0 = layer.crossbar.weights().clone()
    rule._transfer(layer, a, st)
    rule._transfer(layer, a, st)
    assert float(st["H"].abs().max()) == 0 and bool(st["has_ref"].all())
    assert torch.allclose(st["ref"], wa, atol=1e-6) and bool((st["chop"] == -1).all())
    assert torch.equal(layer.crossbar.weights(), c0)
    wa2 = wa - 0.003                             # A moved by -0.003 while the chopper was -1: a +gradient
    _set_fast(rule, wa2)
    rule._transfer(layer, a, st)
    h = -1.0 * (wa2 - wa) / (2 / 1000)           # +1.5 pulses of C
    n = torch.trunc(h).clamp(-1, 1)
    assert torch.allclose(st["H"], h - n, atol=1e-3)
    assert torch.allclose(layer.crossbar.weights() - c0, n * 2 / 1000, atol=1e-6)


def test_ttv2_cancels_nothing_but_agad_ignores_an_offset():
    """The offset of a fast array with no signal: TTv2 transfers it to C, AGAD does not."""
    moved = {}
    for cls in (TTv2, AGAD):
        net, layer = _tiny()
        rule = cls(net, lr=0.1, transfer_rows=4, transfer_lr=1.0, chop_prob=0.5)
        _set_fast(rule, torch.full((4, 3), 0.004))
        c0 = layer.crossbar.weights().clone()
        for _ in range(6):
            rule._transfer(layer, rule.fast[0], rule.state[0])
        moved[cls.name] = float((layer.crossbar.weights() - c0).abs().max())
    assert moved["ttv2"] > 0.005 and moved["agad"] == 0.0


@pytest.mark.parametrize("rule", ["mixed-precision", "ttv2", "c-ttv2", "agad"])
def test_rules_learn_digits_and_resume_bit_for_bit(tmp_path, rule):
    kw = dict(rule=rule, lr=0.1, limit_train=320, limit_test=200, progress=False, seed=2)
    full = train("mlp-64-100-10", "ag-a-si", epochs=2, **kw)
    ck = tmp_path / "a.pt"
    train("mlp-64-100-10", "ag-a-si", epochs=1, out=str(ck), **kw)
    resumed = train("mlp-64-100-10", "ag-a-si", epochs=2, resume=str(ck), **kw)
    assert resumed["test_accuracy"] == full["test_accuracy"] and resumed["pulses"] == full["pulses"]
    assert full["test_accuracy"] > 0.3


def test_nan_input_writes_nothing():
    """A NaN reaching the update (here through the input) is refused before either array changes."""
    from neurosal.networks import build
    net = build("mlp-64-100-10", device="moderate", coding="rate", seed=0, input_shape=(64,), classes=10)
    rule = TTv2(net, lr=0.1)
    layer = rule.layers[0]
    c0, a0 = layer.crossbar.state.g.clone(), rule.fast[0].state.g.clone()
    x = torch.rand(4, 64)
    x[0, 3] = float("nan")
    with pytest.raises(PulseError):
        rule.step(x, torch.tensor([0, 1, 2, 3]), coding="rate", steps=1, seed=0)
    assert torch.equal(layer.crossbar.state.g, c0) and torch.equal(rule.fast[0].state.g, a0)


def test_push_pull_write_equals_the_two_sided_call():
    """apply_push_pull(n) is apply_pulses(n, -n): the same conductances, counters and noise stream
    on a noisy, varied card (the same seed, the same chip)."""
    g = torch.Generator().manual_seed(4)
    n = torch.randint(-3, 4, (20, 12), generator=g).to(torch.float32)
    n[n.abs() < 2] = 0
    out = []
    for two_sided in (True, False):
        xb = Crossbar(20, 12, "moderate", seed=5)
        xb.initialize(torch.zeros(20, 12))
        applied = xb.apply_pulses(n, -n) if two_sided else xb.apply_push_pull(n)
        out.append((xb.state.g.clone(), xb.counters.as_dict(), int(applied), xb.generator.get_state()))
    assert torch.equal(out[0][0], out[1][0]) and out[0][1] == out[1][1] and out[0][2] == out[1][2]
    assert torch.equal(out[0][3], out[1][3])
    with pytest.raises(PulseError):
        Crossbar(2, 2, "moderate").apply_push_pull(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]))
