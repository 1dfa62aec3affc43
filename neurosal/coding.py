r"""Spike coding: encoders turn data in [0, 1] into inputs for ``T`` steps, decoders turn a
run's outputs into class scores.

Encoders (input ``x`` of shape ``[batch, n]``, values in [0, 1]; output ``[T, batch, n]``):

* :func:`rate` — Bernoulli spikes, :math:`P(s_{t} = 1) = x\cdot p_{max}` independently per
  step, so the expected count is :math:`T\,p_{max}\,x`.
* :func:`latency` — time to first spike :math:`t = 1 - x` of a window of ``T`` steps: one
  spike at step :math:`\lfloor (1 - x) T \rfloor`, none for :math:`x = 0` (it would fall at
  the end of the window).
* :func:`direct` — the analog value itself at every step (first layer driven through its DAC).
* :func:`rate_events` — the same Bernoulli process as :func:`rate`, generated directly as
  address events (:class:`SpikeEvents`, AER) by geometric inter-spike gaps: the cost grows
  with the number of spikes, not with ``T x batch x n`` (a different random stream from
  :func:`rate`, the same distribution).

:class:`SpikeEvents` is the address-event form of spikes (step, sample, neuron of every
spike, sorted): what a neuromorphic chip receives on its input bus. The simulator reads
it without scanning silent rows.

Decoders (outputs ``[T, batch, n]``): :func:`spike_count`, :func:`first_spike` (earlier is
larger), :func:`max_membrane`. All randomness comes from an explicit ``torch.Generator``:
the same seed gives the same spikes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["ENCODERS", "rate", "rate_events", "latency", "direct", "encode", "spike_count", "first_spike",
           "max_membrane", "first_spike_times", "SpikeEvents"]

ENCODERS = ("rate", "latency", "direct", "rate-events")


def _check_x(x: torch.Tensor) -> torch.Tensor:
    """Encoder input: [batch, features] in [0, 1]. The range is checked on the CPU; on an
    accelerator the check would make the host wait at every batch, so it is the caller's (the
    datasets are in [0, 1] by construction)."""
    if x.dim() != 2:
        raise ValueError(f"encoders take [batch, features], got shape {tuple(x.shape)}")
    if x.device.type == "cpu" and x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"encoder input must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def rate(x: torch.Tensor, steps: int, *, p_max: float = 1.0,
         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Bernoulli rate code: ``[T, batch, n]`` spikes with probability ``p_max·x`` per step."""
    x = _check_x(x)
    if not 0 < p_max <= 1:
        raise ValueError(f"p_max must be in (0, 1], got {p_max}")
    u = torch.rand((steps, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    return (u < x * p_max).to(x.dtype)


@dataclass
class SpikeEvents:
    """Spikes as address events (AER): step ``t``, sample ``b`` and neuron ``i`` of each spike,
    sorted by ``(t, b, i)``, for a run of ``steps`` steps over ``batch`` samples of ``n`` neurons."""

    t: torch.Tensor
    b: torch.Tensor
    i: torch.Tensor
    steps: int
    batch: int
    n: int
    spikes = True            # binary by construction (the simulator need not check)

    def __post_init__(self):
        if not (self.t.shape == self.b.shape == self.i.shape and self.t.dim() == 1):
            raise ValueError("SpikeEvents: t, b and i must be 1-D tensors of equal length")
        if len(self.t) and (int(self.t.min()) < 0 or int(self.t.max()) >= self.steps or int(self.b.max()) >= self.batch
                            or int(self.i.max()) >= self.n or int(self.b.min()) < 0 or int(self.i.min()) < 0):
            raise ValueError(f"SpikeEvents: an event lies outside steps {self.steps}, batch {self.batch}, "
                             f"neurons {self.n}")

    @property
    def shape(self) -> tuple:
        return (self.steps, self.batch, self.n)

    def __len__(self) -> int:
        return int(self.t.numel())

    @classmethod
    def from_dense(cls, s: torch.Tensor) -> "SpikeEvents":
        """From a ``[T, batch, n]`` 0/1 tensor."""
        if s.dim() != 3:
            raise ValueError(f"SpikeEvents.from_dense takes [T, batch, n], got {tuple(s.shape)}")
        idx = s.nonzero()
        return cls(idx[:, 0], idx[:, 1], idx[:, 2], *s.shape)

    def to_dense(self, dtype=torch.float32) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=dtype, device=self.t.device)
        out[self.t, self.b, self.i] = 1
        return out

    def window(self, t0: int, t1: int) -> "SpikeEvents":
        """Events of steps ``[t0, t1)``, with steps counted from ``t0``."""
        lo, hi = torch.searchsorted(self.t, torch.tensor([t0, t1], device=self.t.device)).tolist()
        return SpikeEvents(self.t[lo:hi] - t0, self.b[lo:hi], self.i[lo:hi], t1 - t0, self.batch, self.n)

    def select(self, samples) -> "SpikeEvents":
        """Events of the given samples only, renumbered ``0..len(samples)-1`` in that order."""
        samples = torch.as_tensor(list(samples), dtype=torch.long, device=self.b.device)
        remap = torch.full((self.batch,), -1, dtype=torch.long, device=self.b.device)
        remap[samples] = torch.arange(len(samples), device=self.b.device)
        nb = remap[self.b]
        keep = nb >= 0
        t, b, i = self.t[keep], nb[keep], self.i[keep]
        order = torch.argsort((t * len(samples) + b) * self.n + i)
        return SpikeEvents(t[order], b[order], i[order], self.steps, len(samples), self.n)


def rate_events(x: torch.Tensor, steps: int, *, p_max: float = 1.0,
                generator: Optional[torch.Generator] = None) -> SpikeEvents:
    r"""Bernoulli rate code generated as address events.

    Each input spikes independently with probability :math:`p = p_{max} x` per step; the
    gaps between its spikes are then geometric, :math:`G = \lfloor \ln U / \ln(1-p) \rfloor`,
    so drawing gaps until the window ends produces exactly a Bernoulli process with
    ``O(spikes + inputs)`` random numbers instead of ``O(T x inputs)``.
    """
    x = _check_x(x)
    if not 0 < p_max <= 1:
        raise ValueError(f"p_max must be in (0, 1], got {p_max}")
    B, n = x.shape
    p = (x * p_max).reshape(-1).to(torch.float64)
    elem = torch.nonzero(p > 0).view(-1)
    logq = torch.log1p(-p[elem].clamp(max=1 - 1e-16))           # ln(1 - p) < 0
    always = p[elem] >= 1
    pos = torch.full(elem.shape, -1, dtype=torch.long)
    out_e, out_t = [], []
    while elem.numel():
        u = torch.rand(elem.shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
        gap = torch.where(always, torch.zeros_like(pos), torch.floor(torch.log(u) / logq).clamp(max=steps).long())
        pos = pos + gap + 1
        alive = pos < steps
        out_e.append(elem[alive])
        out_t.append(pos[alive])
        elem, pos, logq, always = elem[alive], pos[alive], logq[alive], always[alive]
    e = torch.cat(out_e) if out_e else torch.zeros(0, dtype=torch.long)
    t = torch.cat(out_t) if out_t else torch.zeros(0, dtype=torch.long)
    order = torch.argsort(t * (B * n) + e)
    e, t = e[order], t[order]
    return SpikeEvents(t, torch.div(e, n, rounding_mode="floor"), e % n, steps, B, n)


def latency(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Latency (TTFS) code: one spike at step ``floor((1 - x)·T)``; ``x = 0`` stays silent."""
    x = _check_x(x)
    k = torch.floor((1 - x) * steps).long()                  # in [0, T]; T = no spike
    t = torch.arange(steps, device=x.device).view(-1, 1, 1)
    return (t == k.unsqueeze(0)).to(x.dtype)


def direct(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Direct (analog) input: ``x`` repeated at every step (a view, no copy)."""
    return _check_x(x).unsqueeze(0).expand(steps, *x.shape)


def encode(kind: str, x: torch.Tensor, steps: int, *, generator: Optional[torch.Generator] = None,
           p_max: float = 1.0) -> torch.Tensor:
    """Encoder by name (one of :data:`ENCODERS`)."""
    if kind == "rate":
        return rate(x, steps, p_max=p_max, generator=generator)
    if kind == "latency":
        return latency(x, steps)
    if kind == "direct":
        return direct(x, steps)
    if kind == "rate-events":
        return rate_events(x, steps, p_max=p_max, generator=generator)
    raise ValueError(f"unknown encoder {kind!r}; allowed: {', '.join(ENCODERS)}")


def _check_out(z: torch.Tensor) -> torch.Tensor:
    if z.dim() != 3:
        raise ValueError(f"decoders take [T, batch, n], got shape {tuple(z.shape)}")
    return z


def spike_count(z: torch.Tensor) -> torch.Tensor:
    """Number of spikes per neuron over the run, ``[batch, n]``."""
    return _check_out(z).sum(0)


def first_spike_times(z: torch.Tensor, dt: float = 1.0) -> torch.Tensor:
    """Time of each neuron's first spike (``step·dt``), ``inf`` where it never fires."""
    z = _check_out(z)
    T = z.shape[0]
    steps = torch.arange(T, dtype=z.dtype, device=z.device).view(-1, 1, 1)
    first = torch.where(z > 0, steps, torch.full_like(steps, float("inf")).expand_as(z)).amin(0)
    return first * dt


def first_spike(z: torch.Tensor) -> torch.Tensor:
    """Score ``T - first spike step`` (0 for silent neurons): the earliest spike wins."""
    T = _check_out(z).shape[0]
    t = first_spike_times(z)
    return torch.where(torch.isfinite(t), T - t, torch.zeros_like(t))


def max_membrane(v: torch.Tensor) -> torch.Tensor:
    """Largest membrane potential of each neuron over the run, ``[batch, n]``."""
    return _check_out(v).amax(0)
