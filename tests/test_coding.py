"""Encoders and decoders: spike statistics, exact latency times, seeding, decoders."""

import math

import pytest
import torch

from neurosal import coding


def test_rate_code_statistics_and_seed():
    """Bernoulli counts: mean T p x within 5 standard errors (SE from the binomial variance)."""
    x = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0]]).repeat(400, 1)
    T, p_max = 50, 0.8
    s = coding.rate(x, T, p_max=p_max, generator=torch.Generator().manual_seed(1))
    assert s.shape == (T, 400, 5) and set(s.unique().tolist()) <= {0.0, 1.0}
    counts = s.sum(0)
    for j, xv in enumerate(x[0].tolist()):
        p = p_max * xv
        mean = counts[:, j].mean().item()
        se = math.sqrt(T * p * (1 - p) / 400)
        assert abs(mean - T * p) <= 5 * se + 1e-12
    s2 = coding.rate(x, T, p_max=p_max, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, s2)                                  # same seed, same spikes
    s3 = coding.rate(x, T, p_max=p_max, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(s, s3)


def test_latency_code_is_exact():
    x = torch.tensor([[1.0, 0.75, 0.5, 0.01, 0.0]])
    T = 8
    s = coding.latency(x, T)
    assert s.sum(0).tolist() == [[1, 1, 1, 1, 0]]              # one spike each; x = 0 is silent
    steps = torch.argmax(s[:, 0], 0)[:4].tolist()
    assert steps == [0, 2, 4, 7]                               # floor((1 - x) T)
    assert coding.first_spike_times(s, dt=1 / T)[0, :4].tolist() == [0.0, 0.25, 0.5, 7 / 8]


def test_direct_and_encode_by_name():
    x = torch.rand(3, 4)
    d = coding.encode("direct", x, 5)
    assert d.shape == (5, 3, 4) and torch.equal(d[2], x)
    with pytest.raises(ValueError, match="unknown encoder 'poisson'.*rate, latency, direct"):
        coding.encode("poisson", x, 5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        coding.rate(x * 2, 5)


def test_decoders():
    z = torch.zeros(6, 1, 3)
    z[[1, 4], 0, 0] = 1
    z[3, 0, 1] = 1
    v = torch.zeros(6, 1, 3)
    v[2, 0, 2] = 0.9
    assert coding.spike_count(z).tolist() == [[2, 1, 0]]
    assert coding.first_spike(z).tolist() == [[5, 3, 0]]        # T - first step; silent = 0
    assert coding.max_membrane(v).tolist() == [[0, 0, pytest.approx(0.9)]]
    t = coding.first_spike_times(z)
    assert t[0, 0] == 1 and t[0, 1] == 3 and math.isinf(t[0, 2])
