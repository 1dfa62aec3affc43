r"""Spike coding: encoders turn data in [0, 1] into inputs for ``T`` steps, decoders turn a
run's outputs into class scores.

Encoders (input ``x`` of shape ``[batch, n]``, values in [0, 1]; output ``[T, batch, n]``):

* :func:`rate` — Bernoulli spikes, :math:`P(s_{t} = 1) = x\cdot p_{max}` independently per
  step, so the expected count is :math:`T\,p_{max}\,x`.
* :func:`latency` — time to first spike :math:`t = 1 - x` of a window of ``T`` steps: one
  spike at step :math:`\lfloor (1 - x) T \rfloor`, none for :math:`x = 0` (it would fall at
  the end of the window).
* :func:`direct` — the analog value itself at every step (first layer driven through its DAC).

Decoders (outputs ``[T, batch, n]``): :func:`spike_count`, :func:`first_spike` (earlier is
larger), :func:`max_membrane`. All randomness comes from an explicit ``torch.Generator``:
the same seed gives the same spikes.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["ENCODERS", "rate", "latency", "direct", "encode", "spike_count", "first_spike", "max_membrane",
           "first_spike_times"]

ENCODERS = ("rate", "latency", "direct")


def _check_x(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"encoders take [batch, features], got shape {tuple(x.shape)}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
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
