"""Device library: response families against their closed forms, nonideality statistics,
the NeuroSim NL->A table, seeding, and card validation."""

import math

import numpy as np
import pytest
import torch

from neurosal.cards import CardError
from neurosal.devices import Device, a_to_nl, list_devices, load_device, nl_to_a
from conftest import BASE_CARD


def test_shipped_cards_load_and_curves_span_range():
    names = list_devices()
    for required in ("ideal", "mild", "moderate", "severe", "ag-a-si", "taox-hfox", "pcmo", "alox-hfo2",
                     "epiram", "extreme-nonlinear"):
        assert required in names
    for n in names:
        d = Device(n)
        up, down = d.curve()
        c = d.card
        assert up[0] == pytest.approx(c.g_min, rel=1e-6, abs=0)
        if c.model != "soft-bounds":        # soft bounds approach their bounds only asymptotically
            assert up[-1] == pytest.approx(c.g_max, rel=1e-6, abs=0)
            assert down[-1] == pytest.approx(c.g_min, rel=1e-5, abs=0)
        assert np.all(np.diff(up) > 0) and np.all(np.diff(down) < 0)
        assert c.source, f"card {n} cites no source"


def test_ag_a_si_card_matches_published_characterization():
    c = load_device("ag-a-si")
    assert c.levels == 97 and c.nl_up == 2.4 and c.nl_down == -4.88
    assert c.on_off == pytest.approx(12.5, rel=1e-3) and c.noise.c2c == 0.035


@pytest.mark.parametrize("nl,a", [(0.01, 126.269), (0.1, 12.6258), (1.51, 0.8195), (2.4, 0.499),
                                  (3.01, 0.3853), (4.51, 0.2266), (4.88, 0.200), (6.01, 0.1351),
                                  (7.51, 0.0702)])
def test_nl_to_a_reproduces_neurosim_table(nl, a):
    # points of DNN+NeuroSim's Nonlinearity-NormA table (and DESIGN's 2.4 -> 0.499, 4.88 -> 0.200)
    assert nl_to_a(nl) == pytest.approx(a, rel=0.01)
    assert nl_to_a(-nl) == nl_to_a(nl)
    assert a_to_nl(nl_to_a(nl)) == pytest.approx(nl, rel=1e-6)


@pytest.mark.parametrize("a,pmax", [(0.1, 32), (0.25, 63), (0.5, 96), (1.25, 127)])
def test_exponential_first_to_last_step_ratio(card_file, a, pmax):
    # G(p) = B(1 - exp(-p/A)) + Gmin: step k is proportional to exp(-k/A), so the first/last
    # step ratio is exp((Pmax-1)/A) exactly, i.e. exp(Pmax/A) in the continuum limit
    # (ratio of the slopes at p=0 and p=Pmax).
    p = card_file(f'name="e"\nmodel="exponential"\nlevels={pmax + 1}\ng_min=1e-7\ng_max=1e-5\n'
                  f'a_up={a}\na_down={a}\n')
    up, down = Device(p).curve()
    A = a * pmax
    assert (up[1] - up[0]) / (up[-1] - up[-2]) == pytest.approx(math.exp((pmax - 1) / A), rel=1e-4)
    # depression mirrors it: first depression step largest
    assert (down[0] - down[1]) / (down[-2] - down[-1]) == pytest.approx(math.exp((pmax - 1) / A), rel=1e-4)
    # slope ratio dG/dp(0) / dG/dp(Pmax) = exp(Pmax/A) (finite-difference on a fine grid)
    dev = Device(p)
    g = torch.tensor([1e-7, 1e-5 - 1e-18], dtype=torch.float64)
    st_up = dev.respond(g[:1], torch.tensor([1e-4]), g_min=1e-7, g_max=1e-5, pmax=pmax, p_up=a, p_down=a)
    s0 = (st_up - g[:1]).item()
    # slope at the top: from the position Pmax - eps
    u_at = -math.expm1(-(1 - 1e-4 / pmax) / a) / -math.expm1(-1 / a)
    g_eps = torch.tensor([1e-7 + u_at * (1e-5 - 1e-7)], dtype=torch.float64)
    s1 = (dev.respond(g_eps, torch.tensor([1e-4]), g_min=1e-7, g_max=1e-5, pmax=pmax, p_up=a, p_down=a)
          - g_eps).item()
    assert s0 / s1 == pytest.approx(math.exp(pmax / A), rel=1e-2)


def test_n_pulses_at_once_equals_n_single_pulses():
    for name in ("ideal", "ag-a-si", "extreme-nonlinear"):
        import dataclasses
        from neurosal.devices import Noise
        d = Device(dataclasses.replace(load_device(name), noise=Noise()))
        a = d.init_state((4,), u0=0.3, dtype=torch.float64)
        b = d.init_state((4,), u0=0.3, dtype=torch.float64)
        n = torch.tensor([5.0, -3.0, 0.0, 12.0], dtype=torch.float64)
        d.pulse(a, n)
        for k in range(12):
            step = torch.where(n.abs() > k, n.sign(), torch.zeros_like(n))
            d.pulse(b, step)
        torch.testing.assert_close(a.g, b.g, rtol=1e-9, atol=1e-18)


def test_soft_bounds_closed_form(card_file):
    p = card_file('name="sb"\nmodel="soft-bounds"\nlevels=101\ng_min=0.0\ng_max=1e-5\n')
    d = Device(p)
    st = d.init_state((1,), u0=0.2, dtype=torch.float64)
    d.pulse(st, torch.tensor([7.0], dtype=torch.float64))
    delta = 2 / 100
    u = 1 - (1 - 0.2) * (1 - delta) ** 7
    assert st.g.item() == pytest.approx(u * 1e-5, rel=1e-12, abs=0)
    d.pulse(st, torch.tensor([-4.0], dtype=torch.float64))
    assert st.g.item() == pytest.approx(u * (1 - delta) ** 4 * 1e-5, rel=1e-12, abs=0)


def test_power_model_iterates_fusi_abbott_step(card_file):
    p = card_file('name="pw"\nmodel="power"\nlevels=51\ng_min=0.0\ng_max=1.0\ngamma_up=2.0\ngamma_down=0.5\n')
    d = Device(p)
    st = d.init_state((1,), u0=0.1, dtype=torch.float64)
    d.pulse(st, torch.tensor([3.0], dtype=torch.float64))
    u = 0.1
    for _ in range(3):
        u += (2 ** 2 / 50) * (1 - u) ** 2
    assert st.g.item() == pytest.approx(u, rel=1e-12)
    d.pulse(st, torch.tensor([-2.0], dtype=torch.float64))
    for _ in range(2):
        u -= (2 ** 0.5 / 50) * u ** 0.5
    assert st.g.item() == pytest.approx(u, rel=1e-12)


def test_table_model_reproduces_measured_points(card_file):
    up = [1e-6, 3e-6, 4.5e-6, 5.5e-6, 6e-6]
    down = [6e-6, 4e-6, 2.5e-6, 1.5e-6, 1e-6]
    p = card_file(f'name="t"\nmodel="table"\nlevels=5\ng_min=1e-6\ng_max=6e-6\n'
                  f'potentiation={up}\ndepression={down}\n')
    d = Device(p)
    u, dn = d.curve(4)
    np.testing.assert_allclose(u, up, rtol=1e-12)
    np.testing.assert_allclose(dn, down, rtol=1e-12)


def test_c2c_spread_matches_sigma():
    # after n pulses from mid-range on a linear device the spread is sigma*range*sqrt(n);
    # the sample std of N draws has relative standard error ~ 1/sqrt(2(N-1)): 5 SE tolerance.
    import dataclasses
    from neurosal.devices import Noise
    card = dataclasses.replace(load_device("ideal"), noise=Noise(c2c=0.01))
    d = Device(card)
    N = 20000
    st = d.init_state((N,), u0=0.5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    n = 4
    d.pulse(st, torch.full((N,), float(n), dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    rng = card.g_range
    mean_expected = card.g_min + (0.5 + n / card.pmax) * rng
    sd = st.g.std().item()
    expected = 0.01 * rng * math.sqrt(n)
    assert sd == pytest.approx(expected, rel=5 / math.sqrt(2 * (N - 1)))
    assert st.g.mean().item() == pytest.approx(mean_expected, abs=5 * expected / math.sqrt(N))


def test_only_pulsed_cells_get_noise():
    d = Device("ag-a-si")
    st = d.init_state((1000,), u0=0.5)
    g0 = st.g.clone()
    n = torch.zeros(1000)
    n[:10] = 1
    d.pulse(st, n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(st.g[10:], g0[10:])
    assert not torch.equal(st.g[:10], g0[:10])


def test_stuck_at_fractions_and_stuck_cells_ignore_pulses():
    d = Device("severe")        # 1 % at Gmin, 1 % at Gmax
    N = 200_000
    st = d.init_state((N,), u0=0.5, generator=torch.Generator().manual_seed(3))
    frac = st.stuck.double().mean().item()
    p = 0.02
    assert frac == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / N))
    at_max = (st.stuck & (st.g == torch.as_tensor(st.g_max).expand_as(st.g))).double().mean().item()
    assert at_max == pytest.approx(0.01, abs=5 * math.sqrt(0.01 * 0.99 / N))
    g0 = st.g[st.stuck].clone()
    d.pulse(st, torch.full((N,), 3.0), generator=torch.Generator().manual_seed(4))
    assert torch.equal(st.g[st.stuck], g0)


def test_d2d_variation_statistics():
    d = Device("severe")        # bounds sigma 10 %
    st = d.init_state((100_000,), generator=torch.Generator().manual_seed(5))
    gm = st.g_max / d.card.g_max
    assert gm.mean().item() == pytest.approx(1.0, abs=5 * 0.1 / math.sqrt(1e5))
    assert gm.std().item() == pytest.approx(0.1, rel=5 / math.sqrt(2e5))


def test_same_seed_same_chip_different_seed_differs():
    d = Device("moderate")
    a = d.init_state((64, 64), generator=torch.Generator().manual_seed(11))
    b = d.init_state((64, 64), generator=torch.Generator().manual_seed(11))
    c = d.init_state((64, 64), generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.g, b.g) and torch.equal(a.g_max, b.g_max) and torch.equal(a.stuck, b.stuck)
    assert not torch.equal(a.g_max, c.g_max)


def test_drift_power_law():
    d = Device("severe")
    st = d.init_state((1000,), u0=0.6, generator=torch.Generator().manual_seed(0))
    t = 1000.0
    g = d.drifted(st, t)
    expected = st.g * (t / d.card.drift.t0) ** (-torch.as_tensor(st.nu, dtype=torch.float64))
    expected = torch.where(st.stuck, st.g, expected.to(st.g.dtype))
    torch.testing.assert_close(g, expected)
    assert (g[~st.stuck] < st.g[~st.stuck]).all()
    # nothing drifts within t0 of programming
    torch.testing.assert_close(d.drifted(st, 0.5), st.g)


def test_read_noise_sigma():
    d = Device("severe")
    st = d.init_state((50_000,), u0=0.5)
    reads = d.read(st, generator=torch.Generator().manual_seed(9)) - st.g
    rng = (torch.as_tensor(st.g_max) - torch.as_tensor(st.g_min))
    z = (reads / rng).double()
    assert z.std().item() == pytest.approx(0.01, rel=5 / math.sqrt(1e5))


# ---------------------------------------------------------------- bad cards
@pytest.mark.parametrize("extra,field,words", [
    ("colour = 'red'\n", "colour", "unknown field"),
    ("[noise]\nc2c = 1.5\n", "noise.c2c", "out of range"),
    ("[noise]\nshot = 0.1\n", "noise.shot", "unknown field"),
    # values that validate as numbers but would turn into NaN during a run
    ("[drift]\nnu = 0.1\nt0 = inf\n", "drift.t0", "must be finite"),
    ("[pulse]\nwidth_up = nan\n", "pulse.width_up", "NaN is not allowed"),
])
def test_bad_card_errors_name_file_and_field(card_file, extra, field, words):
    p = card_file(BASE_CARD + extra)
    with pytest.raises(CardError) as e:
        load_device(p)
    msg = str(e.value)
    assert str(p) in msg and f"'{field}'" in msg and words in msg


@pytest.mark.parametrize("text,field,words", [
    ('name="x"\nmodel="linear"\nlevels=11\ng_min=0.0\ng_max=1e-300\n', "g_max", "out of range"),
    ('name="x"\nmodel="exponential"\nlevels=11\ng_min=1e-7\ng_max=1e-5\na_up=1e-300\na_down=0.5\n',
     "a_up", "out of range"),
    ('name="x"\nmodel="linear"\nlevels=11\ng_min=1e-5\ng_max=1.000001e-5\n', "g_max", "on/off"),
])
def test_cards_that_would_turn_into_nan_are_rejected_at_load(card_file, text, field, words):
    """Each of these loaded before and produced NaN conductances in float32 at the first pulse."""
    with pytest.raises(CardError) as e:
        load_device(card_file(text))
    assert f"'{field}'" in str(e.value) and words in str(e.value)


def test_every_loadable_card_has_a_finite_float32_curve(card_file):
    """The backstop: a card is loaded only if its nominal curve is finite and monotone in
    float32; a table whose steps vanish in float32 is refused and named."""
    up = [1e-6, 1e-6 * (1 + 1e-9), 1e-5]
    down = [1e-5, 1e-6 * (1 + 2e-9), 1e-6]
    with pytest.raises(CardError, match=r"'model'.*not finite and monotone in float32"):
        load_device(card_file(f'name="t"\nmodel="table"\nlevels=3\ng_min=1e-6\ng_max=1e-5\n'
                              f'potentiation={up}\ndepression={down}\n'))
    for name in list_devices():
        load_device(name)


def test_bad_card_gmin_ge_gmax(card_file):
    p = card_file(BASE_CARD.replace("g_max = 1e-5", "g_max = 1e-6"))
    with pytest.raises(CardError, match=r"g_max.*Gmin >= Gmax"):
        load_device(p)


def test_bad_card_unknown_model(card_file):
    p = card_file(BASE_CARD.replace('"linear"', '"quantum"'))
    with pytest.raises(CardError, match=r"'model'.*unknown value 'quantum'.*allowed: one of 'linear'"):
        load_device(p)


def test_bad_card_levels_range_and_type(card_file):
    with pytest.raises(CardError, match=r"'levels'.*out of range"):
        load_device(card_file(BASE_CARD.replace("levels = 11", "levels = 1")))
    with pytest.raises(CardError, match=r"'levels'.*integer"):
        load_device(card_file(BASE_CARD.replace("levels = 11", "levels = 10.5")))


def test_bad_card_wrong_model_parameter_and_missing(card_file):
    with pytest.raises(CardError, match=r"'a_up'.*not a parameter of model 'linear'"):
        load_device(card_file(BASE_CARD + "a_up = 0.5\n"))
    with pytest.raises(CardError, match=r"'g_min'.*required"):
        load_device(card_file(BASE_CARD.replace("g_min = 1e-6\n", "")))
    with pytest.raises(CardError, match="not valid TOML"):
        load_device(card_file("name = \n"))
    with pytest.raises(CardError, match="no shipped device card"):
        load_device("no-such-device")


_FAMILIES = {
    "soft-bounds": 'name="sb"\nmodel="soft-bounds"\nlevels=101\ng_min=1e-7\ng_max=1e-5\n',
    "power": 'name="pw"\nmodel="power"\nlevels=51\ng_min=1e-7\ng_max=1e-5\ngamma_up=2.0\ngamma_down=0.5\n',
    "table": ('name="t"\nmodel="table"\nlevels=5\ng_min=1e-6\ng_max=6e-6\n'
              'potentiation=[1e-6, 3e-6, 4.5e-6, 5.5e-6, 6e-6]\ndepression=[6e-6, 4e-6, 2.5e-6, 1.5e-6, 1e-6]\n'),
    "linear-up": 'name="lu"\nmodel="exponential"\nlevels=65\ng_min=1e-7\ng_max=1e-5\nnl_up=0\nnl_down=-3\n',
}


@pytest.mark.parametrize("name", ["ideal", "ag-a-si", "extreme-nonlinear", "mild", "soft-bounds", "power", "table",
                                  "linear-up"])
def test_nominal_pulses_is_the_device_without_noise(name, card_file):
    """An open-loop controller's plan: n = the most pulses whose nominal travel stays within the
    request, and the travel they make is exactly what the noise-free device does with n pulses;
    one more pulse would overshoot. nominal_step is the travel of n = 1."""
    import dataclasses
    from neurosal.devices import Faults, Noise, Variation
    base = load_device(card_file(_FAMILIES[name]) if name in _FAMILIES else name)
    card = dataclasses.replace(base, noise=Noise(), variation=Variation(), faults=Faults())
    d = Device(card)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(400, generator=g, dtype=torch.float64)
    dv = torch.rand(400, generator=g, dtype=torch.float64) * 0.3
    for up in (True, False):
        t = torch.full_like(u, up, dtype=torch.bool)
        v = u if up else 1 - u
        n, v_new = d.nominal_pulses(v, dv, t, 1000)
        st = d.init_state((400,), u0=u, dtype=torch.float64)
        d.pulse(st, n if up else -n)
        u_dev = (st.g - card.g_min) / card.g_range
        torch.testing.assert_close(v_new, u_dev if up else 1 - u_dev, rtol=0, atol=1e-9)
        assert (v_new - v <= dv + 1e-4).all()            # the plan's slack: 1e-4 of a pulse
        more, _ = d.nominal_pulses(v, dv + 1.0, t, 1000)
        st1 = d.init_state((400,), u0=u, dtype=torch.float64)
        d.pulse(st1, (n + 1) if up else -(n + 1))
        u1 = (st1.g - card.g_min) / card.g_range
        over = ((u1 if up else 1 - u1) - v > dv + 1e-9) | (more == n)       # or at the bound already
        assert over.all()
        one, v1 = d.nominal_pulses(v, torch.ones_like(v), t, 1)
        torch.testing.assert_close(d.nominal_step(v, up), v1 - v, rtol=0, atol=1e-12)


def test_asymmetric_soft_bounds_closed_form(card_file):
    """up_down = alpha: up steps (2/Pmax)(1 + alpha)(1 - u), down steps (2/Pmax)(1 - alpha) u."""
    p = card_file('name="sb"\nmodel="soft-bounds"\nlevels=101\nup_down=0.4\ng_min=0.0\ng_max=1e-5\n')
    d = Device(p)
    st = d.init_state((1,), u0=0.3, dtype=torch.float64)
    d.pulse(st, torch.tensor([5.0], dtype=torch.float64))
    u = 1 - 0.7 * (1 - 0.02 * 1.4) ** 5
    assert st.g.item() == pytest.approx(u * 1e-5, rel=1e-12, abs=0)
    d.pulse(st, torch.tensor([-3.0], dtype=torch.float64))
    assert st.g.item() == pytest.approx(u * (1 - 0.02 * 0.6) ** 3 * 1e-5, rel=1e-12, abs=0)


def test_asymmetric_soft_bounds_step_too_large_is_refused(card_file):
    p = card_file('name="sb"\nmodel="soft-bounds"\nlevels=4\nup_down=0.9\ng_min=0.0\ng_max=1e-5\n')
    with pytest.raises(CardError, match="up_down"):
        load_device(p)


@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.3])
def test_symmetry_point_of_soft_bounds_is_analytic(card_file, alpha):
    r"""u* = delta_up / (delta_up + delta_down) = (1 + alpha)/2 (Gokmen & Haensch 2020); random +-1
    pulses leave the devices there: the simulated mean is within 5 standard errors (its spread /
    sqrt(cells)) plus the bias of a finite step (one step, 2/Pmax)."""
    p = card_file(f'name="sb"\nmodel="soft-bounds"\nlevels=201\nup_down={alpha}\ng_min=1e-7\ng_max=1e-5\n')
    sp = Device(p).symmetry_point(cells=2048, pulses=1500, seed=3)
    assert sp["u"] == pytest.approx((1 + alpha) / 2, abs=1e-9)
    assert sp["g"] == pytest.approx(1e-7 + sp["u"] * (1e-5 - 1e-7), rel=1e-9)
    sim = sp["simulated"]
    se = sim["u_std"] / math.sqrt(2 * 2048)
    assert abs(sim["u_mean"] - (1 + alpha) / 2) < 5 * se + 2 / 200
    # identical devices pushed and pulled: the pair weight drifts to 0 on average
    assert abs(sim["w_mean"]) < 5 * sim["w_std"] / math.sqrt(2048)


def test_symmetry_point_of_the_exponential_balances_the_steps():
    d = Device("ag-a-si")
    sp = d.symmetry_point(cells=256, pulses=50)
    c = d.card
    g = torch.tensor([sp["g"]], dtype=torch.float64)
    up = d.step_size(g, +1)
    down = -d.step_size(g, -1)
    assert float(up) == pytest.approx(float(down), rel=1e-6)
    # NL 2.4 up / 4.88 down: the down curve is the more nonlinear, steps balance below mid-range
    assert 0.0 < (sp["g"] - c.g_min) / c.g_range < 0.5


def test_linear_symmetric_device_has_no_symmetry_point():
    sp = Device("ideal").symmetry_point(cells=64, pulses=10)
    assert sp["u"] is None and sp["g"] is None


def test_per_device_asymmetry_is_drawn_with_the_nonlinearity_sigma():
    """The shipped asymmetric card draws each device's up and down step factors (1 +- up_down)
    with a relative sigma of variation.nonlinearity = 0.1 (tolerance: 5 standard errors of a
    sample standard deviation, sigma / sqrt(2 n)), so each device has its own symmetry point."""
    d = Device("asymmetric-soft-bounds")
    n = 20000
    st = d.init_state((n,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for f, base in ((st.p_up, 1.6), (st.p_down, 0.4)):
        rel = f / base
        assert float(rel.mean()) == pytest.approx(1.0, abs=5 * 0.1 / math.sqrt(n))
        assert float(rel.std()) == pytest.approx(0.1, abs=5 * 0.1 / math.sqrt(2 * n))
    u_star = st.p_up / (st.p_up + st.p_down)
    assert float(u_star.std()) > 0.01
