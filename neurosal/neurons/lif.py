r"""Leaky integrate-and-fire neurons through norse, with surrogate gradients by name.

.. math:: \tau_{mem}\,\dot v = v_{leak} - v + I, \qquad z = H(v - v_{th}),
          \qquad v \leftarrow v_{reset} \text{ where } z = 1,

``tau_mem`` in seconds, potentials in threshold units, ``I`` the crossbar output; forward
Euler with step ``dt`` (norse's LIF-box scheme). norse 1.1.0's SuperSpike ignores ``alpha``,
so ``super`` is neurosal's own (tested against the published width).

May import: norse; nothing of neurosal but :mod:`.state`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, lif_box_feed_forward_step
from norse.torch.functional.threshold import threshold
from torch import nn

from .state import NeuronState

__all__ = ["SURROGATES", "SuperSpike", "spike_fn", "LIFParameters", "lif_step", "LIFNeurons"]


#: Surrogate gradients by name. All but ``super`` are norse's (``norse.torch.functional.threshold``);
#: norse 1.1.0's SuperSpike ignores ``alpha`` (its gradient is always 1/(|x|+1)^2), so
#: ``super`` is neurosal's own :class:`SuperSpike` with the published width.
SURROGATES = ("super", "triangle", "tanh", "circ", "heavi_erfc", "heaviside")


class SuperSpike(torch.autograd.Function):
    r"""Heaviside forward, SuperSpike surrogate backward (Zenke & Ganguli 2018):
    :math:`\partial z/\partial x = 1/(\alpha|x| + 1)^2`."""

    @staticmethod
    def forward(ctx, x, alpha: float):
        ctx.save_for_backward(x)
        ctx.alpha = float(alpha)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, gz):
        (x,) = ctx.saved_tensors
        return gz / (ctx.alpha * x.abs() + 1.0).pow(2), None


def spike_fn(x: torch.Tensor, method: str = "super", alpha: float = 100.0) -> torch.Tensor:
    """Spike nonlinearity :math:`z = H(x)` with the surrogate gradient ``method``."""
    if method == "super":
        return SuperSpike.apply(x, alpha)
    if method not in SURROGATES:
        raise ValueError(f"unknown surrogate {method!r}; allowed: {', '.join(SURROGATES)}")
    return threshold(x, method, alpha)


@dataclass(frozen=True)
class LIFParameters:
    r"""Leaky integrate-and-fire neuron without synaptic current (norse's LIF-box model).

    .. math:: \tau_{mem}\,\dot v = v_{leak} - v + I, \qquad z = H(v - v_{th}),
              \qquad v \leftarrow v_{reset} \text{ where } z = 1.

    ``tau_mem`` in seconds, potentials in threshold units; ``I`` is the crossbar output
    (weight units, scaled by the layer gain). Forward Euler with step ``dt`` (norse's scheme).
    """

    tau_mem: float = 10e-3
    v_th: float = 1.0
    v_reset: float = 0.0
    v_leak: float = 0.0
    method: str = "super"
    alpha: float = 100.0

    def __post_init__(self):
        if not self.tau_mem > 0:
            raise ValueError(f"tau_mem must be > 0 s, got {self.tau_mem}")
        if not self.v_th > self.v_reset:
            raise ValueError(f"v_th ({self.v_th}) must be above v_reset ({self.v_reset})")
        if self.method not in SURROGATES:
            raise ValueError(f"unknown surrogate {self.method!r}; allowed: {', '.join(SURROGATES)}")
        if not self.alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {self.alpha}")

    def norse(self):
        """The same neuron as :class:`norse.torch.functional.lif_box.LIFBoxParameters`."""
        # 0-d CPU tensors: they combine with data on any device
        t = lambda v: torch.as_tensor(v, device="cpu")  # noqa: E731
        return LIFBoxParameters(tau_mem_inv=t(1.0 / self.tau_mem), v_leak=t(self.v_leak), v_th=t(self.v_th),
                                v_reset=t(self.v_reset), method=self.method, alpha=t(self.alpha))


def lif_step(i: torch.Tensor, v: torch.Tensor, p: LIFParameters, dt: float,
             norse_p=None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of :class:`LIFParameters`: ``(z, v_new)``.

    For every surrogate except ``super`` this *is* norse's ``lif_box_feed_forward_step``
    (``norse_p``: ``p.norse()``, cached by callers that step many times); for ``super`` the
    same arithmetic with neurosal's alpha-respecting SuperSpike.
    """
    if p.method != "super":
        z, st = lif_box_feed_forward_step(i, LIFBoxFeedForwardState(v=v), norse_p or p.norse(), dt)
        return z, st.v
    v_dec = v + (dt / p.tau_mem) * (i + p.v_leak - v)
    z = SuperSpike.apply(v_dec - p.v_th, p.alpha)
    return z, v_dec - z * (v_dec - p.v_reset)


class LIFNeurons(nn.Module):
    """A layer of LIF neurons driven by input currents, stepped ``K`` steps at a time.

    Lifecycle (one for every neuron layer): ``init_state(batch, n)`` then
    ``forward(I, state) -> (z, v, state)`` with ``I`` of shape ``[K, batch, n]``.
    """

    kind = "lif"
    input = "current"         # consumes input currents [K, batch, n]
    spiking = True

    def __init__(self, params: LIFParameters = LIFParameters(), dt: float = 1e-3, fused: bool = True):
        super().__init__()
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        self.p, self.dt = params, float(dt)
        #: without gradients, step with the fused in-place update (equal to float rounding);
        #: False: always the norse step, bit for bit what training computes
        self.fused = bool(fused)
        self._norse_p = params.norse() if params.method != "super" else None

    def init_state(self, batch: int, n: int, dtype=torch.float32, device=None) -> NeuronState:
        return NeuronState(v=torch.full((batch, n), self.p.v_leak, dtype=dtype, device=device or "cpu"))

    def forward(self, current: torch.Tensor, state: NeuronState, keep_v: bool = True):
        r"""Step through ``current`` [K, batch, n]: ``(z [K, ...], v [K, ...] or None, state)``.

        With gradients: norse's step (or the SuperSpike twin) per step. Without: the same
        Euler update fused to three in-place ops per step,
        :math:`v \leftarrow (1-a)v + a(I + v_{leak})`, :math:`z = v > v_{th}`,
        :math:`v \leftarrow v_{reset}` where :math:`z` (:math:`a = dt/\tau_{mem}`);
        equal to the norse step up to float rounding.
        """
        if self.fused and not (torch.is_grad_enabled() and (current.requires_grad or state.v.requires_grad)):
            return self._forward_fused(current, state, keep_v)
        v = state.v
        if not torch.is_grad_enabled():
            # the same steps into outputs laid out like ``current`` (channels-last maps stay
            # channels-last for the next array's read; no stack copies)
            z_out = torch.empty_like(current)
            v_out = torch.empty_like(current) if keep_v else None
            if self.p.method == "super":
                return self._forward_inplace(current, v, z_out, v_out)
            for k in range(current.shape[0]):
                z, v = lif_step(current[k], v, self.p, self.dt, self._norse_p)
                z_out[k] = z
                if keep_v:
                    v_out[k] = v
            return z_out, v_out, NeuronState(v=v)
        zs, vs = [], []
        for i in current.unbind(0):            # unbind: one backward node, not K zero-filled selects
            z, v = lif_step(i, v, self.p, self.dt, self._norse_p)
            zs.append(z)
            if keep_v:
                vs.append(v)
        return torch.stack(zs), (torch.stack(vs) if keep_v else None), NeuronState(v=v)

    @torch.no_grad()
    def _forward_inplace(self, current, v, z_out, v_out):
        r""":func:`lif_step` (``super``) without gradients, in place: bit for bit the same
        arithmetic, :math:`v_{dec} = v + a\,(I + v_{leak} - v)` in that order of operations,
        :math:`z = v_{dec} > v_{th}` (the sign of :math:`v_{dec} - v_{th}`, exact with gradual
        underflow) and the reset :math:`v_{dec} - z(v_{dec} - v_{reset})`."""
        p = self.p
        a = self.dt / p.tau_mem
        z = torch.empty(current.shape[1:], dtype=torch.bool, device=current.device)
        v = v.clone()
        for k in range(current.shape[0]):
            i = current[k]
            if v.shape != i.shape or v.stride() != i.stride():
                v = torch.empty_like(i).copy_(v)                # the layout of the currents
            dec = torch.add(i, p.v_leak) if p.v_leak != 0 else i.clone()
            dec.sub_(v).mul_(a).add_(v)              # v + a (I + v_leak - v): v + x == x + v exactly
            torch.gt(dec, p.v_th, out=z)
            if p.v_reset == 0:
                dec.masked_fill_(z, 0.0)             # v_dec - 1 * (v_dec - 0) = +0.0 exactly
            else:
                dec = torch.where(z, dec - (dec - p.v_reset), dec)
            v = dec
            z_out[k] = z
            if v_out is not None:
                v_out[k] = v
        return z_out, v_out, NeuronState(v=v)

    @torch.no_grad()
    def _forward_fused(self, current, state, keep_v):
        p = self.p
        a = self.dt / p.tau_mem
        drive = current * a if p.v_leak == 0 else (current + p.v_leak) * a
        v = state.v.clone()
        K = current.shape[0]
        z = torch.empty(current.shape, dtype=torch.bool, device=current.device)
        vs = torch.empty_like(current) if keep_v else None
        for k in range(K):
            torch.add(drive[k], v, alpha=1.0 - a, out=v)
            torch.gt(v, p.v_th, out=z[k])
            v.masked_fill_(z[k], p.v_reset)
            if keep_v:
                vs[k] = v
        return z.to(current.dtype), vs, NeuronState(v=v)

    def extra_repr(self) -> str:
        return f"{self.p}, dt={self.dt}" + ("" if self.fused else ", fused=False")
