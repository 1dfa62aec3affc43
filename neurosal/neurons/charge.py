r"""The charge-domain integrate-and-fire neuron with reversal potentials (Sakemi et al.).

Sakemi et al. (arXiv 2412.09010): the cell current that charges the membrane capacitor
depends on the membrane potential. In normalized units (membrane potential in units of
the threshold, time in units of one phase), with input :math:`j` switched on at its spike
time :math:`t_j` (:math:`S_j(t) = H(t - t_j)`):

.. math::

    \frac{dv}{dt} = -\alpha v + \sum_j S_j(t)\Big[w^+_{ij}\big(1 - \tfrac{v}{E^+}\big)
                    + w^-_{ij}\big(1 - \tfrac{v}{E^-}\big)\Big]
                  = -f(t)\,v + g(t),

:math:`g = \sum_j w_{ij} S_j`, :math:`f = \alpha + \sum_j \beta_{ij} w_{ij} S_j`,
:math:`\beta = 1/E^+` for :math:`w \ge 0` and :math:`1/E^-` for :math:`w < 0`
(:math:`E^- < 0`, so :math:`\beta w \ge 0`). Between input events :math:`f, g` are
constant and the solution is exact:

.. math:: v(t + \Delta) = v(t)\,e^{-f\Delta} + g\,\Delta\,\varphi(f\Delta),
          \qquad \varphi(z) = (1 - e^{-z})/z = -\mathrm{expm1}(-z)/z,

which is :math:`g/f + (v - g/f)e^{-f\Delta}` written so that :math:`f \to 0`
(:math:`|E| \to \infty`, no leak) gives ideal charge summation :math:`v + g\Delta`.
The membrane potential stays within :math:`[E^-, E^+]` (for :math:`v(0)` inside).

Physical mapping (1T1R cell, Sakemi et al.): :math:`E^+ = (V_{dd} - V_0)/V_{th}`,
:math:`E^- = (V_{gnd} - V_0)/V_{th}`, :math:`w = T_{phase}\,E\,\sigma/(C_m V_{th})`.

Firing schemes:

* **RC-spike**: accumulate for one phase :math:`t \in [0, 1]`, then a ramp fires at
  :math:`t_{out} = \mathrm{clip}(1 - v(1), 0, 1)`.
* **TTFS**: fire once when :math:`v` crosses :math:`V_{th}`; inside an interval with
  :math:`g/f > V_{th}` the crossing time is
  :math:`t = t_0 + \ln\frac{g/f - v_0}{g/f - V_{th}} / f` (for :math:`f = 0`:
  :math:`t_0 + (V_{th} - v_0)/g`).

**DSTD** (differentiable spike-time discretization): spike times are put on a grid
:math:`T_m = m\Delta\tau - \text{offset}` (clipped to the phase, so with an offset the
first and last intervals are shorter) by the hat kernel of that grid,
:math:`s_{jm} = \max(0, 1 - |T_m - t_j|/h)` with :math:`h` the length of the interval
holding :math:`t_j` on the side of :math:`T_m`, accumulated :math:`S_{jm} = \sum_{q \le m}
s_{jq}`, and the exact recursion runs on the grid (two matmuls per grid step). Gradients
reach spike times and weights through the hat weights, with no surrogate. Ideal summation
is exact for any offset; the error is :math:`O(\Delta\tau^2/|E|)`, for random offsets too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .state import NeuronState

__all__ = ["beta_of", "charge_step", "ttfs_layer", "rc_spike_layer", "dstd_ttfs_layer", "dstd_rc_spike_layer",
           "dstd_rc_membrane", "dstd_walk", "rc_membrane_exact", "ChargeParameters", "charge_ttfs_step", "ChargeNeurons"]


def _phi(z: torch.Tensor) -> torch.Tensor:
    """(1 - e^{-z}) / z, equal to 1 at z = 0, stable for small z."""
    small = z.abs() < 1e-6
    zs = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1 - z / 2 + z * z / 6, -torch.expm1(-zs) / zs)


def beta_of(w: torch.Tensor, e_plus: float, e_minus: float) -> torch.Tensor:
    r""":math:`\beta_{ij} w_{ij} \ge 0`: ``w/E+`` for excitatory and ``w/E-`` for inhibitory weights."""
    if not (e_plus > 0):
        raise ValueError(f"e_plus must be > 0 (or inf), got {e_plus}")
    if not (e_minus < 0):
        raise ValueError(f"e_minus must be < 0 (or -inf), got {e_minus}")
    bp = 0.0 if math.isinf(e_plus) else 1.0 / e_plus
    bm = 0.0 if math.isinf(e_minus) else 1.0 / e_minus
    return torch.where(w >= 0, w * bp, w * bm)


def charge_step(v: torch.Tensor, g: torch.Tensor, f: torch.Tensor, dt) -> torch.Tensor:
    r"""Exact update of :math:`dv/dt = -f v + g` over ``dt`` with constant ``f >= 0``, ``g``."""
    z = f * dt
    return v * torch.exp(-z) + g * dt * _phi(z)


def _check(t_in: torch.Tensor, w: torch.Tensor):
    if t_in.dim() != 2 or w.dim() != 2 or t_in.shape[1] != w.shape[0]:
        raise ValueError(f"t_in must be [batch, n_in] and w [n_in, n_out]; got {tuple(t_in.shape)} and "
                         f"{tuple(w.shape)}")


def _crossing_time(v: torch.Tensor, g: torch.Tensor, f: torch.Tensor, v_th: float) -> torch.Tensor:
    r"""Time until :math:`v` reaches :math:`V_{th}` under :math:`dv/dt = -f v + g` (``inf`` if it
    never does): with :math:`D = (V_{th} - v)/(g - f V_{th})` and :math:`x = f D`,

    .. math:: t = \ln\frac{g/f - v}{g/f - V_{th}}\Big/f = D\,\frac{\ln(1 + x)}{x},

    which is exact for every :math:`f \ge 0` and, unlike the ratio of the first form, keeps
    its precision in float32 as :math:`f \to 0` (:math:`|E| \to \infty`: :math:`t \to D`)."""
    den = g - f * v_th
    can = (v < v_th) & (den > 0)
    one = torch.ones_like(v)
    d = torch.where(can, (v_th - v) / torch.where(can, den, one), one)
    x = f * d
    small = x.abs() < 1e-4
    ratio = torch.where(small, 1 - x / 2 + x * x / 3, torch.log1p(x) / torch.where(small, one, x))
    return torch.where(can, d * ratio, torch.full_like(v, math.inf))


def _exact_walk(t_in, w, e_plus, e_minus, alpha, t_end, v_th=None):
    """Event-driven exact integration; returns v(t_end) and, with v_th, the first crossing time."""
    _check(t_in, w)
    bw = beta_of(w, e_plus, e_minus)
    order = torch.argsort(t_in, dim=1)
    ts = torch.gather(t_in, 1, order)                      # sorted input times [B, n_in]
    B, n_in = t_in.shape
    n_out = w.shape[1]
    dev = w.device
    v = torch.zeros(B, n_out, dtype=w.dtype, device=dev)
    g = torch.zeros(B, n_out, dtype=w.dtype, device=dev)
    f = torch.full((B, n_out), float(alpha), dtype=w.dtype, device=dev)
    t_prev = torch.zeros(B, 1, dtype=w.dtype, device=dev)
    t_fire = torch.full((B, n_out), math.inf, dtype=w.dtype, device=dev)
    for k in range(n_in + 1):
        t_next = ts[:, k:k + 1].clamp(max=t_end) if k < n_in else torch.full((B, 1), float(t_end), dtype=w.dtype, device=dev)
        t_next = torch.maximum(t_next, t_prev)
        dt = t_next - t_prev
        if v_th is not None:                                # a crossing inside [t_prev, t_next)?
            t_cross = t_prev + _crossing_time(v, g, f, v_th)
            hit = torch.isinf(t_fire) & (t_cross <= t_next)
            t_fire = torch.where(hit, t_cross, t_fire)
        v = charge_step(v, g, f, dt)
        t_prev = t_next
        if k < n_in:
            j = order[:, k]                                 # input arriving now
            active = torch.isfinite(ts[:, k]) & (ts[:, k] <= t_end)
            g = g + active[:, None] * w[j]
            f = f + active[:, None] * bw[j]
    return v, t_fire


def ttfs_layer(t_in: torch.Tensor, w: torch.Tensor, *, e_plus: float = math.inf, e_minus: float = -math.inf,
               v_th: float = 1.0, t_max: float = 2.0, alpha: float = 0.0) -> torch.Tensor:
    """Exact event-driven TTFS layer: first threshold-crossing time of each output neuron.

    ``t_in`` [batch, n_in] input spike times (``inf`` = no spike), ``w`` [n_in, n_out].
    Returns [batch, n_out] output times, ``inf`` where a neuron does not fire before ``t_max``.
    """
    _, t_fire = _exact_walk(t_in, w, e_plus, e_minus, alpha, t_max, v_th=v_th)
    return t_fire


def rc_spike_layer(t_in: torch.Tensor, w: torch.Tensor, *, e_plus: float = math.inf, e_minus: float = -math.inf,
                   alpha: float = 0.0) -> torch.Tensor:
    """Exact RC-spike layer: integrate inputs over one phase, fire at ``clip(1 - v(1), 0, 1)``."""
    v1, _ = _exact_walk(t_in, w, e_plus, e_minus, alpha, 1.0)
    return (1.0 - v1).clamp(0.0, 1.0)


def rc_membrane_exact(t_in: torch.Tensor, w: torch.Tensor, e_plus: float, e_minus: float,
                      alpha: float = 0.0) -> torch.Tensor:
    """The exact end-of-phase membrane :math:`v(1)` of an RC-spike layer (event-driven, no
    grid): the reference DSTD converges to, for inference. ``t_in`` ``[batch, n_in]``, ``w``
    ``[n_in, n_out]`` (the programmed weights: the cell currents flow continuously while the
    phase lasts, so there are no discrete array reads to add read noise or ADC rounding)."""
    v1, _ = _exact_walk(t_in, w, e_plus, e_minus, alpha, 1.0)
    return v1


def _dstd_grid(t_in, t_end, steps, offset, generator):
    r"""The DSTD grid and the input level of the input spikes on each of its intervals.

    Grid points :math:`T_m = m\Delta\tau - \text{offset}` inside the phase, plus its ends 0 and
    ``t_end``: with an offset the first and last intervals are shorter than :math:`\Delta\tau`.
    Each spike spreads onto the two points around it by the hat (piecewise-linear) basis *of
    this grid*; accumulated over the points, the level of spike :math:`t` on interval
    :math:`[P_m, P_{m+1}]` is :math:`\mathrm{clip}((P_{m+1} - t)/(P_{m+1} - P_m), 0, 1)`,
    exactly the part of the interval after the spike (formed so, in one step, rather than as a
    cumulative sum of hat weights that rounds ``1`` to ``1 - 2^{-24}``): ideal charge summation
    (:math:`|E| \to \infty`) is exact for any offset, and the error is :math:`O(\Delta\tau^2)` for
    finite :math:`|E|`. Returns the points (Python floats, ``K + 1`` of them for ``K``
    intervals) and ``S`` ``[B, K, ...]`` (``t_in`` ``[B, ...]``): the input level on each
    interval. Spikes before 0 count as at 0; at or after ``t_end`` (or ``inf``) they do nothing.
    """
    dtau = t_end / steps
    if offset is None:
        off = 0.0
    elif offset == "random":
        # the offset is drawn on the host (a CPU generator): the grid is host data, no read-back
        off = float(torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")) \
            * dtau
    else:
        off = float(offset)
    pts = [0.0]
    for m in range(1, steps + 1):
        p = m * dtau - off
        if p - pts[-1] > 1e-6 * dtau and t_end - p > 1e-6 * dtau:
            pts.append(p)
    pts.append(float(t_end))
    K = len(pts) - 1
    shape = (1, K) + (1,) * (t_in.dim() - 1)
    ends = torch.tensor(pts[1:], dtype=t_in.dtype, device=t_in.device).reshape(shape)
    inv = torch.tensor([1.0 / (pts[m + 1] - pts[m]) for m in range(K)], dtype=t_in.dtype,
                       device=t_in.device).reshape(shape)
    tt = torch.where(torch.isfinite(t_in), t_in, torch.full_like(t_in, 1e9)).clamp_min(0).unsqueeze(1)
    S = ((ends - tt) * inv).clamp(0, 1)                    # [B, K, ...]: level on interval m
    return pts, S


class _GridSum(torch.autograd.Function):
    """:func:`_grid_sum` with its backward written out: a handful of whole-tensor operations
    each way instead of autograd's record of every elementwise step."""

    @staticmethod
    def forward(ctx, G, Fm, d):
        # (few temporaries, in place where possible: on a CPU a fresh tensor costs page faults)
        z = Fm * d
        phi = _phi(z)
        after = z.cumsum(1)
        after.neg_().add_(z.sum(1, keepdim=True))                # sum_{j>m} z_j
        decay = after.neg_().exp_()
        gd = G * d
        contrib = gd * phi
        contrib.mul_(decay)
        ctx.save_for_backward(gd, z, phi, decay, contrib, d)
        return contrib.sum(1)

    @staticmethod
    def backward(ctx, up):
        gd, z, phi, decay, contrib, d = ctx.saved_tensors
        ud = decay * up.unsqueeze(1)
        dG = phi * ud
        dG.mul_(d)
        # phi'(z) = (e^{-z} - phi) / z; near 0 its series -1/2 + z/3 - z^2/8 + z^3/30
        dphi = z.neg().exp_().sub_(phi).div_(z)
        ser = z / 30.0
        ser.neg_().add_(0.125).mul_(z).neg_().add_(1.0 / 3.0).mul_(z).sub_(0.5)
        dphi = torch.where(z.abs() < 1e-2, ser, dphi)
        # dv/dz_j = g_j d_j phi'(z_j) decay_j - (charge of the intervals before j, decayed to the end)
        prior = contrib.cumsum(1)
        prior.sub_(contrib)
        dz = dphi.mul_(gd).mul_(decay).sub_(prior)
        dz.mul_(up.unsqueeze(1)).mul_(d)
        return dG, dz, None


def _grid_sum(G: torch.Tensor, Fm: torch.Tensor, pts) -> torch.Tensor:
    r""":math:`v(t_{end})` of the exact recursion :math:`v_{m+1} = v_m e^{-z_m} + g_m\Delta_m
    \varphi(z_m)` (:func:`charge_step`, :math:`z_m = f_m \Delta_m`) from :math:`v_0 = 0` over
    the ``K`` grid intervals of ``G``, ``Fm`` ``[B, K, ...]``, in closed form: every interval's
    charge decays through the intervals after it,
    :math:`v_K = \sum_m g_m \Delta_m \varphi(z_m)\, e^{-\sum_{j > m} z_j}`. The same value
    as the step loop (to float rounding; exactly :math:`\sum g_m \Delta_m` when every
    :math:`f = 0`), computed in a few whole-tensor operations instead of ``K`` rounds of small ones."""
    K = G.shape[1]
    d = torch.tensor([pts[m + 1] - pts[m] for m in range(K)], dtype=G.dtype, device=G.device)
    d = d.reshape((1, K) + (1,) * (G.dim() - 2))
    return _GridSum.apply(G, Fm, d)


def dstd_walk(t_in, w, e_plus, e_minus, alpha, t_end, steps, offset, generator, v_th=None, read=None):
    _check(t_in, w)
    bw = beta_of(w, e_plus, e_minus)
    pts, St = _dstd_grid(t_in, t_end, steps, offset, generator)     # [B, K, n_in]
    B, n_out = t_in.shape[0], w.shape[1]
    # all grid intervals at once: two matmuls [B*K, n_in] @ [n_in, n_out] instead of 2K small ones
    if read is None:
        G = St @ w                                           # g on every grid interval
    else:                                                    # through a crossbar's periphery
        G = read(St.reshape(-1, St.shape[-1])).reshape(B, St.shape[1], n_out)
    Fm = alpha + St @ bw                                     # f on every grid interval
    t_fire = torch.full((B, n_out), math.inf, dtype=w.dtype, device=w.device)
    if v_th is None:                                         # only v(t_end) is wanted
        return _grid_sum(G, Fm, pts), t_fire
    v = torch.zeros(B, n_out, dtype=w.dtype, device=w.device)
    for m_ in range(len(pts) - 1):
        t0, t1 = pts[m_], pts[m_ + 1]
        g, f = G[:, m_], Fm[:, m_]
        if v_th is not None:
            t_cross = t0 + _crossing_time(v, g, f, v_th)
            hit = torch.isinf(t_fire) & (t_cross <= t1)
            t_fire = torch.where(hit, t_cross, t_fire)
        v = charge_step(v, g, f, t1 - t0)
    return v, t_fire


def dstd_rc_membrane(t_in: torch.Tensor, read_g, read_f, *, alpha: float = 0.0, steps: int = 4,
                     offset: Optional[str | float] = None, generator: Optional[torch.Generator] = None,
                     t_end: float = 1.0) -> torch.Tensor:
    r"""DSTD membrane :math:`v(t_{end})` of any charge-domain layer (dense, convolutional, ...).

    ``t_in`` ``[B, ...]`` input spike times; ``read_g(S)`` and ``read_f(S)`` map a batch of
    grid inputs ``S`` ``[B*K, ...]`` to :math:`g = S W` and :math:`\sum S \beta W` (e.g. a
    convolution through a crossbar and its beta-weighted twin). The exact recursion runs on
    the grid, elementwise over the outputs.
    """
    pts, S = _dstd_grid(t_in, t_end, steps, offset, generator)               # S [B, K, ...]
    B, K = t_in.shape[0], S.shape[1]
    Sk = S.reshape(B * K, *t_in.shape[1:])
    G = read_g(Sk)
    G = G.reshape(B, K, *G.shape[1:])
    Fm = alpha + read_f(Sk).reshape(G.shape)
    return _grid_sum(G, Fm, pts)


def dstd_rc_spike_layer(t_in: torch.Tensor, w: torch.Tensor, *, e_plus: float = math.inf,
                        e_minus: float = -math.inf, alpha: float = 0.0, steps: int = 4,
                        offset: Optional[str | float] = None,
                        generator: Optional[torch.Generator] = None, read=None) -> torch.Tensor:
    r"""DSTD RC-spike layer on ``steps`` grid points (``offset='random'`` in training).

    ``read``: optional function ``S [n, n_in] -> S @ w`` through a crossbar (periphery, read
    noise); the conductance term :math:`S\,\beta w` is formed from ``w`` itself.
    """
    v1, _ = dstd_walk(t_in, w, e_plus, e_minus, alpha, 1.0, steps, offset, generator, read=read)
    return (1.0 - v1).clamp(0.0, 1.0)


def dstd_ttfs_layer(t_in: torch.Tensor, w: torch.Tensor, *, e_plus: float = math.inf, e_minus: float = -math.inf,
                    v_th: float = 1.0, t_max: float = 2.0, alpha: float = 0.0, steps: int = 8,
                    offset: Optional[str | float] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """DSTD TTFS layer: the exact recursion on the grid, crossing time analytic within a step."""
    _, t_fire = dstd_walk(t_in, w, e_plus, e_minus, alpha, t_max, steps, offset, generator, v_th=v_th)
    return t_fire


@dataclass(frozen=True)
class ChargeParameters:
    r"""Charge-domain TTFS neuron with reversal potentials (see the module docstring).

    ``e_plus > 0`` and ``e_minus < 0`` (``inf`` = ideal charge summation), ``alpha`` the
    leak (per unit of normalized time), ``v_th`` the threshold. The simulation window of
    ``T`` steps is one unit of normalized time (``dτ = 1/T``).
    """

    e_plus: float = math.inf
    e_minus: float = -math.inf
    v_th: float = 1.0
    alpha: float = 0.0

    def __post_init__(self):
        beta_of(torch.zeros(1, device="cpu"), self.e_plus, self.e_minus)      # validates the signs
        if not self.v_th > 0:
            raise ValueError(f"v_th must be > 0, got {self.v_th}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha (leak) must be >= 0, got {self.alpha}")


def charge_ttfs_step(inputs, state: NeuronState, p: ChargeParameters, dtau: float):
    r"""One grid step of the charge-domain TTFS neuron: ``((dg, df), state) -> (z, state)``.

    New input spikes latch: :math:`g \mathrel{+}= dg`, :math:`f \mathrel{+}= df` (``dg = s W``,
    ``df = s\,\beta W`` of the new spikes ``s``); the membrane follows the exact solution over
    ``dtau``. Inside a step :math:`v` moves monotonically toward :math:`g/f`, so it crossed
    :math:`V_{th}` iff it ends at or above it; a neuron fires once (``fired``).
    """
    dg, df = inputs
    g, f = state.g + dg, state.f + df
    v = charge_step(state.v, g, f, dtau)
    z = ((v >= p.v_th) & (state.fired == 0)).to(v.dtype)
    return z, NeuronState(v=v, g=g, f=f, fired=state.fired + z)


class ChargeNeurons(nn.Module):
    r"""Charge-domain TTFS neurons on the time grid of the simulator.

    An input spike at step ``k`` switches its row on for the rest of the window
    (:math:`S_j = H(t - t_j)`); the latched currents :math:`g, f` grow by the crossbar read
    of the *new* spikes only (one row activation per input spike: event-driven by
    construction). Between steps the membrane follows the exact solution; a neuron fires
    once, in the step where the analytic crossing time falls.
    Input ``[K, batch, n]``: new spikes ``ds`` read through the crossbar as
    ``(ds @ W, ds @ βW)``, passed as a pair ``(dg, df)``.
    """

    kind = "charge"
    input = "charge"          # consumes new input spikes as (dg, df) = (s W, s beta W)
    spiking = True

    def __init__(self, params: ChargeParameters = ChargeParameters(), steps: int = 32):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.p, self.dtau = params, 1.0 / steps

    def init_state(self, batch: int, n: int, dtype=torch.float32, device=None) -> NeuronState:
        z = torch.zeros(batch, n, dtype=dtype, device=device or "cpu")
        return NeuronState(v=z, g=z.clone(), f=torch.full_like(z, self.p.alpha), fired=torch.zeros_like(z))

    def forward(self, dgf, state: NeuronState, keep_v: bool = True):
        dg, df = dgf
        zs, vs = [], []
        for dg_k, df_k in zip(dg.unbind(0), df.unbind(0)):
            z, state = charge_ttfs_step((dg_k, df_k), state, self.p, self.dtau)
            zs.append(z)
            if keep_v:
                vs.append(state.v)
        return torch.stack(zs), (torch.stack(vs) if keep_v else None), state

    def extra_repr(self) -> str:
        return f"{self.p}, dtau={self.dtau}"
