"""Charge-domain neuron with reversal potentials: exact solution against an ODE solver,
limits, bounds, TTFS crossing times, DSTD convergence and gradients.

Every test runs in float64 and in float32 (what training uses); tolerances scale with the
dtype's resolution (``tol``)."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from neurosal.neurons import (ChargeNeurons, ChargeParameters, LIFNeurons, LIFParameters, RateNeurons, beta_of,
                              dstd_rc_membrane,
                              charge_step, dstd_rc_spike_layer, dstd_ttfs_layer, lif_step, rc_spike_layer,
                              spike_fn, ttfs_layer)


@pytest.fixture(autouse=True, params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request):
    old = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(old)


@pytest.fixture
def tol(dtype):
    """A tolerance ``x`` in float64 terms, scaled to the dtype: float32 resolves ~1e-7 (relative),
    so a bound of 1e-9 in float64 becomes ~1e-5 in float32."""
    return (lambda x: x) if dtype == torch.float64 else (lambda x: max(x, 2e-5))


@pytest.fixture
def f64_only(dtype):
    if dtype != torch.float64:
        pytest.skip("needs float64 (numerical gradients / exact grid boundaries)")


def _rhs_factory(t_in, w, e_plus, e_minus, alpha):
    t_in = np.asarray(t_in)
    w = np.asarray(w)
    wp, wm = np.clip(w, 0, None), np.clip(w, None, 0)

    def rhs(t, v):
        s = (t_in <= t).astype(float)            # inputs switched on at their spike time
        cur = s @ (wp * (1 - v[None, :] / e_plus) + wm * (1 - v[None, :] / e_minus))
        return -alpha * v + cur
    return rhs


@pytest.mark.parametrize("e_plus,e_minus,alpha", [(2.0, -1.5, 0.0), (5.0, -5.0, 0.3), (1.2, -0.8, 1.0)])
def test_exact_solution_matches_solve_ivp(e_plus, e_minus, alpha, tol):
    g = torch.Generator().manual_seed(0)
    n_in, n_out = 12, 5
    t_in = torch.rand(1, n_in, generator=g)
    w = torch.randn(n_in, n_out, generator=g) * 0.6
    v1 = 1.0 - rc_spike_layer(t_in, w, e_plus=e_plus, e_minus=e_minus, alpha=alpha)
    # compare the unclipped membrane potential: integrate to t = 1 with the solver
    from neurosal.neurons.charge import _exact_walk
    v_exact, _ = _exact_walk(t_in, w, e_plus, e_minus, alpha, 1.0)
    rhs = _rhs_factory(t_in[0].numpy(), w.numpy(), e_plus, e_minus, alpha)
    events = np.sort(t_in[0].numpy())
    v = np.zeros(n_out)
    knots = np.concatenate([[0.0], events, [1.0]])
    for a, b in zip(knots[:-1], knots[1:]):            # integrate piecewise: rhs jumps at events
        if b > a:
            sol = solve_ivp(rhs, (a, b), v, rtol=1e-11, atol=1e-12, method="DOP853")
            v = sol.y[:, -1]
    np.testing.assert_allclose(v_exact[0].numpy(), v, rtol=tol(1e-8), atol=tol(1e-9))
    # RC-spike output is clip(1 - v(1), 0, 1); v1 above is 1 - that
    np.testing.assert_allclose(v1[0].numpy(), 1 - np.clip(1 - v, 0, 1), atol=tol(1e-9))


def test_infinite_reversal_potential_is_ideal_charge_summation():
    g = torch.Generator().manual_seed(1)
    t_in = torch.rand(4, 30, generator=g)
    w = torch.randn(30, 7, generator=g) * 0.05
    from neurosal.neurons.charge import _exact_walk
    v1, _ = _exact_walk(t_in, w, math.inf, -math.inf, 0.0, 1.0)
    torch.testing.assert_close(v1, (1 - t_in) @ w)
    # and the large-|E| limit converges to it
    v_big, _ = _exact_walk(t_in, w, 1e6, -1e6, 0.0, 1.0)
    torch.testing.assert_close(v_big, v1, rtol=1e-5, atol=1e-6)


def test_membrane_stays_between_reversal_potentials():
    g = torch.Generator().manual_seed(2)
    t_in = torch.rand(8, 50, generator=g)
    w = torch.randn(50, 10, generator=g) * 20
    from neurosal.neurons.charge import _exact_walk
    v1, _ = _exact_walk(t_in, w, 1.5, -0.7, 0.0, 1.0)
    assert (v1 <= 1.5 + 1e-9).all() and (v1 >= -0.7 - 1e-9).all()
    # with every input on, v relaxes to g/f = sum(w)/sum(beta w), a weighted mean of E+ and E-
    bw = beta_of(w, 1.5, -0.7)
    torch.testing.assert_close(v1[0], w.sum(0) / bw.sum(0), rtol=1e-6, atol=1e-6)
    # same-sign strong inputs drive it to the rail itself
    vp, _ = _exact_walk(t_in, w.abs(), 1.5, -0.7, 0.0, 1.0)
    vm, _ = _exact_walk(t_in, -w.abs(), 1.5, -0.7, 0.0, 1.0)
    torch.testing.assert_close(vp, torch.full_like(vp, 1.5))
    torch.testing.assert_close(vm, torch.full_like(vm, -0.7))


def test_charge_step_small_f_limit():
    v = torch.tensor([0.3])
    g = torch.tensor([2.0])
    for f in (0.0, 1e-9, 1e-4):
        out = charge_step(v, g, torch.tensor([f]), 0.5)
        z = f * 0.5     # reference written without cancellation (math.expm1)
        exact = v * math.exp(-z) + g * 0.5 * (-math.expm1(-z) / z if z > 0 else 1.0)
        torch.testing.assert_close(out, torch.as_tensor(exact, dtype=out.dtype), rtol=1e-9, atol=1e-12)


def test_phi_is_exact_across_its_series_switch(dtype):
    """phi(z) = (1 - e^-z)/z, computed by a series below |z| = 1e-6 and by expm1 above: both sides
    of the switch agree with the exact value to the dtype's resolution."""
    from neurosal.neurons.charge import _phi
    zs = [1e-9, 3e-7, 9.9e-7, 1.01e-6, 1e-4, 0.5, 3.0]
    got = _phi(torch.tensor(zs))
    want = torch.tensor([-math.expm1(-z) / z for z in zs])
    torch.testing.assert_close(got, want, rtol=(1e-14 if dtype == torch.float64 else 1e-6), atol=0)


def test_ttfs_crossing_time_against_fine_integration():
    g = torch.Generator().manual_seed(3)
    t_in = torch.rand(2, 10, generator=g) * 0.5
    w = torch.rand(10, 6, generator=g) * 0.8
    e_plus, e_minus = 3.0, -2.0
    t_out = ttfs_layer(t_in, w, e_plus=e_plus, e_minus=e_minus, t_max=2.0)
    # fine forward-Euler reference with step h: crossing time error O(h)
    h = 1e-5
    rhs = _rhs_factory(t_in[0].numpy(), w.numpy(), e_plus, e_minus, 0.0)
    v = np.zeros(6)
    t_ref = np.full(6, np.inf)
    t = 0.0
    while t < 2.0 and np.isinf(t_ref).any():
        dv = rhs(t, v)
        v_new = v + h * dv
        crossed = (v < 1) & (v_new >= 1) & np.isinf(t_ref)
        t_ref[crossed] = t + h * (1 - v[crossed]) / (v_new[crossed] - v[crossed])
        v, t = v_new, t + h
    fired = np.isfinite(t_ref)
    assert fired.sum() >= 3
    np.testing.assert_array_equal(np.isfinite(t_out[0].numpy()), fired)
    np.testing.assert_allclose(t_out[0].numpy()[fired], t_ref[fired], atol=5e-5)


def test_dstd_rc_spike_exact_for_infinite_e_and_converges_as_m_squared():
    g = torch.Generator().manual_seed(4)
    t_in = torch.rand(16, 40, generator=g)
    w = torch.randn(40, 20, generator=g) * 0.1
    exact_inf = rc_spike_layer(t_in, w)
    torch.testing.assert_close(dstd_rc_spike_layer(t_in, w, steps=4), exact_inf)   # hat kernel is exact here
    e_plus, e_minus = 1.5, -1.5
    exact = rc_spike_layer(t_in, w, e_plus=e_plus, e_minus=e_minus)
    errs = []
    Ms = [4, 8, 16, 32, 64]
    for M in Ms:
        errs.append((dstd_rc_spike_layer(t_in, w, e_plus=e_plus, e_minus=e_minus, steps=M) - exact).abs().max().item())
    slope = np.polyfit(np.log(Ms), np.log(errs), 1)[0]
    assert errs[-1] < errs[0] / 50
    assert -2.4 < slope < -1.6, (errs, slope)


def test_dstd_ttfs_converges_to_exact():
    g = torch.Generator().manual_seed(5)
    t_in = torch.rand(8, 20, generator=g) * 0.6
    w = torch.rand(20, 10, generator=g) * 0.6
    exact = ttfs_layer(t_in, w, e_plus=2.0, e_minus=-2.0, t_max=2.0)
    fired = torch.isfinite(exact)
    assert fired.float().mean() > 0.5
    errs = []
    for M in (8, 32, 128):
        approx = dstd_ttfs_layer(t_in, w, e_plus=2.0, e_minus=-2.0, t_max=2.0, steps=M)
        both = fired & torch.isfinite(approx)
        errs.append((approx[both] - exact[both]).abs().max().item())
    assert errs[2] < errs[0] / 10 and errs[2] < 2e-3


def test_dstd_gradients_match_finite_differences(f64_only):
    g = torch.Generator().manual_seed(6)
    t_in = (torch.rand(2, 6, generator=g) * 0.8 + 0.05).requires_grad_()
    w = (torch.randn(6, 3, generator=g) * 0.4).requires_grad_()
    f = lambda t, ww: dstd_rc_spike_layer(t, ww, e_plus=2.0, e_minus=-2.0, steps=5)  # noqa: E731
    assert torch.autograd.gradcheck(f, (t_in, w), eps=1e-6, atol=1e-5)
    ft = lambda t, ww: dstd_ttfs_layer(t, ww, e_plus=2.0, e_minus=-2.0, t_max=3.0, steps=6)  # noqa: E731
    w2 = (torch.rand(6, 3, generator=g) * 0.8 + 0.2).requires_grad_()
    out = ft(t_in, w2)
    assert torch.isfinite(out).all()
    assert torch.autograd.gradcheck(ft, (t_in, w2), eps=1e-6, atol=1e-5)


def test_beta_sign_and_bad_potentials():
    w = torch.tensor([[0.5, -0.5]])
    b = beta_of(w, 2.0, -4.0)
    torch.testing.assert_close(b, torch.tensor([[0.25, 0.125]]))
    with pytest.raises(ValueError, match="e_minus must be < 0"):
        beta_of(w, 2.0, 1.0)


def test_dstd_random_offset_exact_for_ideal_summation(tol):
    """|E| = inf: the clipped first and last intervals carry their true length, so DSTD is exact
    for every offset. One input at t = 0 with w = 1 gives v(1) = 1 (a saturated pixel of the
    latency code): first-order grids gave 0.9375 at half a step and 0.958 on average."""
    from neurosal.neurons.charge import dstd_walk as _dstd_walk
    t = torch.zeros(1, 1)
    w = torch.ones(1, 1)
    for off in (None, 0.125, 0.0625, 1e-9, 0.25 - 1e-9):
        v, _ = _dstd_walk(t, w, math.inf, -math.inf, 0.0, 1.0, 4, off, None)
        assert v.item() == pytest.approx(1.0, abs=tol(1e-12)), off
    g = torch.Generator().manual_seed(8)
    t_in = torch.rand(8, 30, generator=g)
    t_in[:, :3] = 0.0                                           # saturated pixels
    t_in[:, 3] = math.inf                                      # silent inputs
    w = torch.randn(30, 6, generator=g)
    exact = rc_spike_layer(t_in, w)
    for _ in range(20):
        out = dstd_rc_spike_layer(t_in, w, steps=4, offset="random", generator=g)
        torch.testing.assert_close(out, exact, rtol=0, atol=tol(1e-12))


def test_dstd_with_leak_converges_to_the_exact_leaky_neuron(tol):
    """A leak alpha > 0 enters every grid interval's f: DSTD converges to the exact event-driven
    membrane of the same leaky neuron (and misses it by far more without the leak)."""
    from neurosal.neurons.charge import dstd_walk as _dstd_walk, _exact_walk
    g = torch.Generator().manual_seed(9)
    t_in = torch.rand(8, 20, generator=g)
    w = torch.randn(20, 6, generator=g) * 0.3
    exact, _ = _exact_walk(t_in, w, 2.0, -2.0, 0.7, 1.0)
    approx, _ = _dstd_walk(t_in, w, 2.0, -2.0, 0.7, 1.0, 64, "random", g)
    no_leak, _ = _exact_walk(t_in, w, 2.0, -2.0, 0.0, 1.0)
    err = (approx - exact).abs().max().item()
    assert err < 2e-4 and (no_leak - exact).abs().max().item() > 100 * err


def test_dstd_random_offset_converges_at_second_order(tol):
    """Finite |E| with random offsets (the training mode): the worst error over offsets and its
    mean over offsets both fall like dtau^2, i.e. at least 100x from M = 4 to M = 64 (a grid
    with first-order end intervals gave ~20x). The mean is not zero at finite |E|: averaging a
    step input over its interval leaves a systematic O(dtau^2) part."""
    g = torch.Generator().manual_seed(7)
    t_in = torch.rand(16, 40, generator=g)
    w = torch.randn(40, 20, generator=g) * 0.1
    exact = rc_spike_layer(t_in, w, e_plus=1.5, e_minus=-1.5)
    worst, mean = [], []
    for M in (4, 64):
        gen = torch.Generator().manual_seed(M)
        errs = torch.stack([dstd_rc_spike_layer(t_in, w, e_plus=1.5, e_minus=-1.5, steps=M, offset="random",
                                                generator=gen) - exact for _ in range(32)])
        worst.append(errs.abs().max().item())
        mean.append(errs.mean(0).abs().max().item())
    assert worst[1] < worst[0] / 100 and mean[1] < mean[0] / 100, (worst, mean)
    assert worst[0] < 0.02


def test_crossing_time_is_exact_on_both_sides_of_its_series_switch(f64_only):
    """t = D log1p(x)/x, by a series below |x| = 1e-4: against the closed form
    ln((g/f - v)/(g/f - V_th))/f on both sides of the switch, and (V_th - v)/g at f = 0."""
    from decimal import Decimal, getcontext
    from neurosal.neurons.charge import _crossing_time
    getcontext().prec = 40                                   # the closed form, without cancellation
    v, g = torch.tensor([0.2]), torch.tensor([3.0])
    for f in (0.0, 1e-6, 2.9e-4, 3.1e-4, 0.05, 1.0):
        t = _crossing_time(v, g, torch.tensor([f]), 1.0).item()
        if f == 0:
            want = 0.8 / 3.0
        else:
            F, G = Decimal(f), Decimal(3)
            want = float(((G / F - Decimal("0.2")) / (G / F - 1)).ln() / F)
        assert t == pytest.approx(want, rel=1e-12, abs=0), f
    assert math.isinf(_crossing_time(v, torch.tensor([0.5]), torch.tensor([1.0]), 1.0).item())   # g/f < V_th


def test_ttfs_crossing_time_is_exact_for_large_reversal_potentials(dtype):
    """One input at t = 0 with w = 0.5 reaches threshold 1 at t = 2 under ideal summation; at
    E = 1e8 the exact crossing differs from 2 by ~1e-8. The crossing time must stay right in
    float32, where (v_inf - v)/(v_inf - v_th) rounds to 1 (it fired at t = 0)."""
    t_in = torch.zeros(1, 1)
    w = torch.full((1, 1), 0.5)
    for e in (1e8, 1e4, math.inf):
        t = ttfs_layer(t_in, w, e_plus=e, e_minus=-e, t_max=3.0)
        want = 2.0 if math.isinf(e) else -e * math.log1p(-1.0 / e) / 0.5       # ln(E/(E-1)) / (w/E)
        assert t.item() == pytest.approx(want, rel=1e-6), e
        td = dstd_ttfs_layer(t_in, w, e_plus=e, e_minus=-e, t_max=3.0, steps=8)
        assert td.item() == pytest.approx(want, rel=1e-6), e


# ------------------------------------------------------------------------------ LIF (norse)
def test_lif_step_is_norse_step():
    """For norse's working surrogates our step is norse's LIF-box step: same v, z and grads."""
    from norse.torch.functional.lif_box import LIFBoxFeedForwardState, lif_box_feed_forward_step
    g = torch.Generator().manual_seed(0)
    p = LIFParameters(tau_mem=5e-3, v_th=0.7, method="triangle", alpha=0.5)
    i = torch.randn(64, generator=g, requires_grad=True)
    v0 = torch.rand(64, generator=g)
    z, v = lif_step(i, v0, p, 1e-3)
    z2, st = lif_box_feed_forward_step(i, LIFBoxFeedForwardState(v=v0), p.norse(), 1e-3)
    assert torch.equal(z, z2) and torch.equal(v, st.v)


@pytest.mark.parametrize("dt", [1e-3, 2.5e-4])
def test_lif_euler_solution_below_threshold(dt):
    """Constant input, no spikes: v_k = I (1 - (1 - dt/tau)^k), norse's forward Euler exactly,
    in the fused inference path and the autograd path alike."""
    p = LIFParameters(tau_mem=10e-3, v_th=100.0)
    n = LIFNeurons(p, dt=dt)
    cur = torch.full((50, 1, 3), 0.8)
    k = torch.arange(1, 51).view(-1, 1, 1)
    want = 0.8 * (1 - (1 - dt / 10e-3) ** k)
    for c in (cur, cur.clone().requires_grad_()):
        z, v, _ = n(c, n.init_state(1, 3))
        assert z.sum() == 0
        assert torch.allclose(v, want.to(v.dtype), rtol=1e-5, atol=1e-12)


def test_lif_fires_and_resets_at_the_analytic_period():
    """Constant suprathreshold input: period = first k with I(1-(1-a)^k) >= v_th, then reset."""
    p = LIFParameters(tau_mem=10e-3, v_th=1.0)
    n = LIFNeurons(p, dt=1e-3)
    I = 2.0
    z, v, _ = n(torch.full((100, 1, 1), I), n.init_state(1, 1))
    k = math.ceil(math.log(1 - 1.0 / I) / math.log(0.9))      # steps to threshold from v = 0
    steps = torch.nonzero(z.view(-1)).view(-1)
    assert steps[0].item() == k - 1
    assert torch.all(torch.diff(steps) == k)
    assert torch.all(v <= p.v_th)                            # reset keeps v below threshold


def test_norse_superspike_ignores_alpha_ours_does_not():
    """Pins the norse 1.1.0 bug we work around: its 'super' gradient is 1/(|x|+1)^2 whatever
    alpha is; neurosal's is 1/(alpha|x|+1)^2 (Zenke & Ganguli)."""
    from norse.torch.functional.threshold import threshold
    x = torch.tensor([-0.3, 0.05, 0.2], requires_grad=True)
    for alpha in (1.0, 10.0):
        threshold(x, "super", alpha).sum().backward()
        assert torch.allclose(x.grad, 1 / (x.detach().abs() + 1) ** 2)
        x.grad = None
    for alpha in (1.0, 10.0):
        spike_fn(x, "super", alpha).sum().backward()
        assert torch.allclose(x.grad, 1 / (alpha * x.detach().abs() + 1) ** 2)
        x.grad = None
    assert torch.equal(spike_fn(x, "super", 3.0), (x > 0).double())


def test_surrogate_by_name_and_bad_name():
    x = torch.linspace(-1, 1, 9, requires_grad=True)
    spike_fn(x, "tanh", 2.0).sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(2.0 * x.detach()) ** 2)
    with pytest.raises(ValueError, match="unknown surrogate 'nope'.*allowed"):
        LIFParameters(method="nope")
    with pytest.raises(ValueError, match="tau_mem"):
        LIFParameters(tau_mem=0)


def test_lif_chunks_equal_one_run():
    g = torch.Generator().manual_seed(2)
    n = LIFNeurons(LIFParameters(tau_mem=4e-3), dt=1e-3)
    cur = torch.rand(40, 3, 7, generator=g) * 2
    z, v, _ = n(cur, n.init_state(3, 7))
    st = n.init_state(3, 7)
    z1, v1, st = n(cur[:13], st)
    z2, v2, st = n(cur[13:], st)
    assert torch.equal(torch.cat([z1, z2]), z) and torch.equal(torch.cat([v1, v2]), v)


def test_rate_neurons_bounded():
    n = RateNeurons()
    y, v, _ = n(torch.tensor([[[-1.0, 0.3, 2.0]]]), n.init_state(1, 3))
    assert torch.equal(y, torch.tensor([[[0.0, 0.3, 1.0]]]))


# ------------------------------------------------------------------------------ charge neurons on the grid
def test_charge_neurons_ideal_summation_and_single_spike():
    """E = inf: an input latched at step 0 with weight w gives v = w (k+1) dtau; fires once."""
    T = 20
    n = ChargeNeurons(ChargeParameters(), steps=T)
    dg = torch.zeros(T, 1, 2)
    dg[0, 0] = torch.tensor([0.5, 3.0])
    z, v, _ = n((dg, torch.zeros_like(dg)), n.init_state(1, 2))
    k = torch.arange(1, T + 1, dtype=v.dtype)
    assert torch.allclose(v[:, 0, 0], 0.5 * k / T) and torch.allclose(v[:, 0, 1], 3.0 * k / T)
    assert z[:, 0, 0].sum() == 0                   # 0.5 never reaches threshold 1 in the window
    assert z[:, 0, 1].sum() == 1                   # fires once, then stays silent above threshold
    assert int(torch.nonzero(z[:, 0, 1])[0]) == math.ceil(T / 3.0) - 1


def test_charge_neurons_match_exact_ttfs_on_grid_inputs():
    """With input spikes on the grid, the engine fires in the step holding the exact crossing."""
    g = torch.Generator().manual_seed(4)
    T, n_in, n_out, e = 16, 30, 40, (2.5, -2.0)
    k_in = torch.randint(0, T, (3, n_in), generator=g)
    w = torch.randn(n_in, n_out, generator=g) * 0.6
    t_in = k_in.double() / T
    t_exact = ttfs_layer(t_in, w, e_plus=e[0], e_minus=e[1], t_max=1.0)
    s = torch.zeros(T, 3, n_in)
    s[k_in, torch.arange(3).view(-1, 1), torch.arange(n_in)] = 1
    dg = (s.reshape(-1, n_in) @ w).reshape(T, 3, n_out)
    df = (s.reshape(-1, n_in) @ beta_of(w, *e)).reshape(T, 3, n_out)
    neu = ChargeNeurons(ChargeParameters(e_plus=e[0], e_minus=e[1]), steps=T)
    z, v, _ = neu((dg, df), neu.init_state(3, n_out))
    fired = torch.isfinite(t_exact)
    assert torch.equal(z.sum(0) > 0, fired) and fired.any() and (~fired).any()
    step = torch.argmax(z, 0)
    assert torch.equal(step[fired], torch.floor(t_exact[fired] * T).long())
    assert torch.all(v <= e[0]) and torch.all(v >= e[1])


@pytest.mark.parametrize("method", ["super", "triangle"])
def test_lif_fused_inference_equals_step_path(method):
    """The no-grad fused update is the same Euler step as the norse/autograd path."""
    g = torch.Generator().manual_seed(5)
    n = LIFNeurons(LIFParameters(tau_mem=5e-3, v_th=0.8, v_reset=0.1, method=method), dt=1e-3)
    cur = torch.rand(60, 4, 50, generator=g) * 2
    with torch.no_grad():
        z0, v0, _ = n(cur, n.init_state(4, 50))
    z1, v1, _ = n(cur.clone().requires_grad_(), n.init_state(4, 50))
    assert torch.equal(z0, z1.detach()) and torch.allclose(v0, v1.detach(), atol=1e-12)
    assert z0.sum() > 0


def test_general_dstd_membrane_equals_dense_layer():
    """The shape-agnostic DSTD walk (used by convolutional charge layers) is the dense layer's."""
    g = torch.Generator().manual_seed(7)
    t_in = torch.rand(4, 30, generator=g)
    w = torch.randn(30, 12, generator=g) * 0.3
    bw = beta_of(w, 2.5, -2.0)
    for offset in (None, 0.05):
        v = dstd_rc_membrane(t_in, lambda S: S @ w, lambda S: S @ bw, steps=6, offset=offset)
        ref = dstd_rc_spike_layer(t_in, w, e_plus=2.5, e_minus=-2.0, steps=6, offset=offset)
        assert torch.allclose((1 - v).clamp(0, 1), ref, atol=1e-12)


@pytest.mark.parametrize("v_reset,v_leak", [(0.0, 0.0), (0.1, 0.05), (-0.2, 0.0)])
def test_lif_without_gradients_is_bit_for_bit_the_training_step(v_reset, v_leak):
    """The in-place update used without gradients (inference, simulate) is the very arithmetic
    of the training step: spikes, traces and final state equal bit for bit, for maps in
    channels-last layout too (kept for the next array's read)."""
    from neurosal.neurons import LIFNeurons, LIFParameters
    p = LIFParameters(tau_mem=2e-3, v_th=0.5, v_reset=v_reset, v_leak=v_leak, alpha=10.0)
    n = LIFNeurons(p, dt=1e-3, fused=False)
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(6 * 4, 3, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
    for cur in (torch.randn(12, 8, 50, generator=g), maps.reshape(6, 4, 3, 5, 5)):
        st = n.init_state(cur.shape[1], math.prod(cur.shape[2:]))
        st = st._replace(v=st.v.reshape(cur.shape[1:]))
        with torch.no_grad():
            z1, v1, s1 = n(cur, st)
        z2, v2, s2 = n(cur.clone().requires_grad_(), st)
        assert z1.stride() == cur.stride()
        assert torch.equal(z1, z2.detach()) and torch.equal(v1, v2.detach()) and torch.equal(s1.v, s2.v.detach())
        assert 0 < float(z1.mean()) < 0.5


@pytest.mark.parametrize("f_scale", [3.0, 1e-3, 0.0])
def test_dstd_grid_sum_is_the_step_loop_values_and_gradients(f_scale):
    """The closed-form DSTD sum (every interval's charge decayed through the later ones) and
    its hand-written backward equal the step-by-step recursion of charge_step and autograd's
    gradients through it, in float64, for conductances of order one, small (the series of
    phi') and zero (ideal summation)."""
    from neurosal.neurons.charge import _grid_sum, charge_step
    g = torch.Generator().manual_seed(0)
    pts = [0.0] + [m / 8 - 0.03 for m in range(1, 9)] + [1.0]
    G = torch.randn(3, 9, 5, generator=g, dtype=torch.float64).requires_grad_()
    Fm = (torch.rand(3, 9, 5, generator=g, dtype=torch.float64) * f_scale).requires_grad_()
    v = torch.zeros(3, 5, dtype=torch.float64)
    for m in range(9):
        v = charge_step(v, G[:, m], Fm[:, m], pts[m + 1] - pts[m])
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    ref = torch.autograd.grad((v * w).sum(), (G, Fm))
    out = _grid_sum(G, Fm, pts)
    got = torch.autograd.grad((out * w).sum(), (G, Fm))
    assert torch.allclose(out, v, atol=1e-14, rtol=0)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)
    assert torch.autograd.gradcheck(lambda G, F: _grid_sum(G, F, pts), (G, Fm))
