"""The counter-based random numbers and the fused kernels of the hot path (neurosal.kernels):
distributions with tolerances from the sample size, independence, compiled = plain torch, and
the sparse and dense writes drawing the same noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from neurosal import kernels
from neurosal.crossbar import Crossbar

N = 1 << 18


def _key(a=12345, b=678910):
    return torch.tensor([a, b], dtype=torch.int64)


def test_uniform_numbers_are_uniform_on_a_24_bit_grid():
    u = kernels.uniform_at(_key(), torch.arange(N), torch.float64)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert torch.equal(u * (1 << 24), torch.round(u * (1 << 24)))             # on the 2^-24 grid
    se = math.sqrt(1 / 12 / N)
    assert abs(float(u.mean()) - 0.5) < 5 * se
    assert abs(float(u.var()) - 1 / 12) < 5 * math.sqrt(1 / 180 / N)           # var of U^2 estimate
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-4
    # all 16 bins of the top 4 bits and of the bits just below them are equally filled (chi^2)
    for shift in (20, 12):
        bins = torch.bincount(((u * (1 << 24)).long() >> shift) & 15, minlength=16).numpy()
        assert stats.chisquare(bins).pvalue > 1e-4


def test_normal_numbers_have_the_moments_and_shape_of_a_standard_normal():
    z = kernels.normal_at(_key(3, 4), torch.arange(N), torch.float64).numpy()
    assert abs(z.mean()) < 5 / math.sqrt(N)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / N)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / N)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / N)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert np.abs(z).max() < 6.0                                                # the 24-bit tail ends at 5.9
    # float32 (the production dtype) agrees with float64 to float32 rounding
    z32 = kernels.normal_at(_key(3, 4), torch.arange(N), torch.float32).numpy()
    assert np.abs(z32 - z).max() < 1e-4


@pytest.mark.parametrize("other", ["next counter", "next key", "second key word"])
def test_draws_are_uncorrelated(other):
    c = torch.arange(N)
    a = kernels.normal_at(_key(5, 6), c, torch.float64)
    if other == "next counter":
        b = kernels.normal_at(_key(5, 6), c + 1, torch.float64)
    elif other == "next key":          # overlapping inner windows: the outer mix decorrelates them
        b = kernels.normal_at(_key(6, 6), c, torch.float64)
    else:
        b = kernels.normal_at(_key(5, 7), c, torch.float64)
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert abs(r) < 5 / math.sqrt(N)
    assert not torch.equal(a, b)


def test_a_number_depends_on_its_counter_only():
    c = torch.arange(1000)
    full = kernels.normal_at(_key(), c)
    pick = torch.tensor([3, 500, 999, 17])
    assert torch.equal(kernels.normal_at(_key(), pick), full[pick])


def test_new_keys_come_from_the_generator():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    k1, k2 = kernels.new_key(g1, "cpu"), kernels.new_key(g2, "cpu")
    assert torch.equal(k1, k2) and k1.dtype == torch.int64 and k1.shape == (2,)
    assert not torch.equal(kernels.new_key(g1, "cpu"), k1)


def test_stochastic_rounding_is_unbiased_and_takes_the_neighbours():
    v = torch.linspace(-3.3, 2.7, 64).repeat(4096, 1)                      # [4096, 64]
    g = torch.Generator().manual_seed(0)
    n = kernels.stochastic_round(v, 1.5, g)
    w = v * 1.5
    assert bool(((n == torch.floor(w)) | (n == torch.floor(w) + 1)).all())
    frac = (w - torch.floor(w))[0]
    p_up = (n - torch.floor(w)).mean(0)
    se = torch.sqrt(frac * (1 - frac) / 4096).clamp_min(1e-3)
    assert bool(((p_up - frac).abs() < 5 * se).all())
    # a transposed view: the counter is the logical row-major position
    assert torch.equal(kernels.stochastic_round(v.t(), 1.5, torch.Generator().manual_seed(0)),
                       kernels.stochastic_round(v.t().contiguous(), 1.5, torch.Generator().manual_seed(0)))


def test_compiled_kernels_equal_plain_torch(monkeypatch):
    """NEUROSAL_COMPILE=1 compiles at every size: the compiled read epilogue, stochastic rounding
    and write response give plain torch's numbers (integers exactly, floats to rounding)."""
    from neurosal.crossbar import array
    from neurosal.devices import model
    monkeypatch.setenv("NEUROSAL_COMPILE", "1")
    g = torch.Generator().manual_seed(0)
    part, sig, key = torch.randn(3, 37, 50, generator=g), torch.rand(3, 37, 1, generator=g), _key()
    fs = torch.rand(1, 37, 1, generator=g) * 4 + 1
    t = torch.tensor
    for f, args in ((array._noise_adc_sum, (part, sig, key, 127, fs / 127, None)),
                    (array._noise_adc_sum, (part, sig, key, 7, t(3.0 / 7), t(7 / 3.0))),
                    (array._noise_sum, (part, sig, key)), (array._adc_sum, (part, 31, t(2.5 / 31), t(31 / 2.5)))):
        torch.testing.assert_close(f(*args), f.eager(*args), rtol=1e-6, atol=1e-6)
    v = torch.randn(40, 30, generator=g).t()
    s = torch.tensor(3.7)
    assert torch.equal(kernels._stochastic_round_fused(v, s, key), kernels._stochastic_round_fused.eager(v, s, key))
    u, cnt, idx = torch.rand(500, generator=g), torch.randint(0, 9, (500,)).float(), torch.arange(0, 1000, 2)
    torch.testing.assert_close(model._c2c_response(u, cnt, idx, key, 0.05, 1e-7, 9.9e-6),
                               model._c2c_response.eager(u, cnt, idx, key, 0.05, 1e-7, 9.9e-6))


@pytest.mark.parametrize("card,compile_", [("severe", "auto"), ("ag-a-si", "auto"), ("moderate", "auto"),
                                            ("severe", "1")])
def test_dense_and_sparse_push_pull_writes_are_the_same_write(card, compile_, monkeypatch):
    """Selecting the pulsed cells and writing every cell in one pass give the same conductances,
    programming times and counters, cycle-to-cycle noise included (each cell's number is drawn at
    its own index); compiled (``NEUROSAL_COMPILE=1``) as in plain torch."""
    monkeypatch.setenv("NEUROSAL_COMPILE", compile_)
    out = {}
    for frac in (1.0, 0.0):            # 1: always sparse; 0: always dense
        xb = Crossbar(96, 80, card, seed=3)
        xb.dense_fraction = frac
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            n = torch.randint(-3, 4, (96, 80), generator=g).float()
            n[torch.rand(96, 80, generator=g) < 0.5] = 0
            xb.advance(1.0)
            xb.apply_push_pull(n)
        out[frac] = (xb.state.g.clone(), None if xb.state.t_prog is None else xb.state.t_prog.clone(),
                     xb.counters.as_dict(), xb.weights().clone())
    s, d = out[1.0], out[0.0]
    torch.testing.assert_close(d[0], s[0], rtol=1e-5, atol=0)     # compiled: float32 rounding
    if s[1] is not None:
        assert torch.equal(d[1], s[1])
    assert d[2] == s[2] and s[2]["pulses"] > 0
    torch.testing.assert_close(d[3], s[3], rtol=1e-5, atol=1e-6)


def test_dense_write_refuses_bad_counts_and_leaves_the_chip_alone():
    from neurosal.devices import PulseError
    xb = Crossbar(20, 10, "severe", seed=0)
    xb.dense_fraction = 0.0
    g0 = xb.state.g.clone()
    n = torch.ones(20, 10)
    n[3, 4] = float("nan")
    with pytest.raises(PulseError, match="not finite"):
        xb.apply_push_pull(n)
    assert torch.equal(xb.state.g, g0) and xb.counters.pulses == 0


def test_read_noise_does_not_depend_on_how_the_vectors_are_split():
    """The read stream is numbered by vector, then tile, then column: reading 12 vectors at once
    or as 5 + 7 draws the same noise (multi-tile arrays included), and a checkpoint resumes it."""
    x = torch.rand(12, 300, generator=torch.Generator().manual_seed(0))
    a, b = Crossbar(300, 70, "severe", seed=4, adc_bits=None), Crossbar(300, 70, "severe", seed=4, adc_bits=None)
    assert a.n_row_tiles == 3
    ya = a.forward(x)
    yb = torch.cat([b.forward(x[:5]), b.forward(x[5:])])
    torch.testing.assert_close(yb, ya, rtol=1e-6, atol=1e-6)
    assert a.read_position == b.read_position == 12
    c = Crossbar(300, 70, "severe", seed=4)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(c.forward(x), a.forward(x), rtol=0, atol=0)
    # the noise has the analytic spread: variance 2 sigma_read^2 sum_i x_i^2 per column
    ideal = x @ a.weights()
    r = (ya - ideal) / (a.read_noise * math.sqrt(2.0) * x.norm(dim=1, keepdim=True))
    assert abs(float(r.var()) - 1) < 5 * math.sqrt(2 / r.numel())


@pytest.mark.parametrize("card", ["severe", "ag-a-si"])
def test_compiled_hybrid_plan_equals_plain_torch(card, monkeypatch):
    """The hybrid controller's plan and new thresholds, fused and compiled, are plain torch's."""
    from neurosal.devices import Device
    from neurosal.learning import controller
    monkeypatch.setenv("NEUROSAL_COMPILE", "1")
    dev = Device(card)
    g = torch.Generator().manual_seed(0)
    b = (torch.rand(5000, generator=g) - 0.5) * 0.3
    u_p, u_m = torch.rand(5000, generator=g), torch.rand(5000, generator=g)
    got = controller._plan_fused(dev, 16, b, u_p, u_m)
    want = controller._plan_and_thresholds(dev, 16, b, u_p, u_m)
    for a, w in zip(got, want):
        if a.dtype == torch.bool:
            assert torch.equal(a, w)
        else:
            torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-6)
    assert float(got[2].sum()) > 0
