r"""Fused kernels of the hot path, and the counter-based random numbers they draw.

**Counter-based random numbers.** A draw is a pure function of a *key* and a *counter*: the
``i``-th number of a draw with key :math:`(k_1, k_2)` is

.. math:: z_i = \mathrm{mix}(\mathrm{mix}((i + k_1)\gamma) \oplus k_2)

with :math:`\gamma` = ``0x9E3779B97F4A7C15`` and ``mix`` the SplitMix64 finalizer (Steele,
Lea & Flood, OOPSLA 2014; the inner term is SplitMix64's own stream, which passes BigCrush; the
outer mix with the second key word decorrelates two draws whose inner windows overlap). Each
read or write draws its key (two 62-bit words) from the array's seeded torch generator, so a
run repeats from its seed and a checkpoint resumes the stream. Uniforms take the top 24 bits
(:math:`[0, 1)` on a grid of :math:`2^{-24}`, as ``torch.rand`` in float32); normals are
Box–Muller of two 24-bit uniforms (the tails end at :math:`5.9\sigma`, where the probability
left out is :math:`4 \cdot 10^{-9}`).

Because a number depends on its counter only, the counter can be *where* it is used (a cell's
flat index, an output's position): a sparse path that draws for the pulsed cells only and a
dense path that draws for all cells give the same numbers at the same cells, in any order,
on any number of threads.

**Fused kernels.** :func:`fused` wraps an elementwise chain (the draws included) so that on a
CPU it runs under ``torch.compile`` (Inductor writes one vectorized C++ loop for the chain
instead of one pass over memory per operation), with dynamic shapes (one compilation for all
sizes; compiled code is cached on disk by torch). Environment variable ``NEUROSAL_COMPILE``:
``auto`` (default: compile on a CPU for tensors of at least :data:`COMPILE_MIN` elements),
``0`` (never: plain torch), ``1`` (compile at every size). If compiling fails (no C++
compiler on the machine), neurosal warns once and runs the same functions in plain torch:
the same numbers up to float rounding (transcendental functions may differ in the last bit).

May import: nothing of neurosal.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch

__all__ = ["new_key", "uniform_at", "normal_at", "fused", "compile_mode", "COMPILE_MIN", "stochastic_round"]

_GAMMA = 0x9E3779B97F4A7C15 - (1 << 64)          # as a signed int64
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)
_INV24 = 1.0 / (1 << 24)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` by ``s`` bits (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer (Stafford's mix 13) on int64 (wrapping multiplication)."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def _bits(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    # (counter + k1) * gamma, not k1 + counter * gamma: the key enters first, so that a compiler
    # sees a value, not an index expression it would fold with unbounded integers
    return _mix(_mix((counter + key[0]) * _GAMMA) ^ key[1])


def new_key(generator, device) -> torch.Tensor:
    """A fresh key for one draw: two 62-bit words from ``generator`` (int64 ``[2]`` on ``device``,
    no host sync)."""
    return torch.randint(0, 1 << 62, (2,), generator=generator, dtype=torch.int64, device=device)


def uniform_at(key: torch.Tensor, counter: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Uniform numbers in [0, 1) (24 bits), one per entry of the int64 ``counter``."""
    return _srl(_bits(key, counter), 40).to(dtype) * _INV24


def normal_at(key: torch.Tensor, counter: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers, one per entry of the int64 ``counter`` (Box–Muller)."""
    z = _bits(key, counter)
    u1 = (_srl(z, 40).to(dtype) + 0.5) * _INV24
    u2 = (z & 0xFFFFFF).to(dtype) * _INV24
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


#: ``NEUROSAL_COMPILE=auto`` compiles calls whose first tensor has at least this many entries
#: (smaller ones cost less in plain torch than the compiled call's guards)
COMPILE_MIN = 1 << 11

_broken = False


def compile_mode() -> str:
    """``'auto'``, ``'0'`` or ``'1'`` (environment variable ``NEUROSAL_COMPILE``)."""
    m = os.environ.get("NEUROSAL_COMPILE", "auto").strip().lower()
    if m not in ("auto", "0", "1"):
        raise ValueError(f"NEUROSAL_COMPILE={m!r}: allowed auto, 0, 1")
    return m


def fused(fn):
    """Run ``fn`` (tensors in, tensors out, no Python side effects) under ``torch.compile`` on a
    CPU (see the module docstring); plain torch elsewhere and for small inputs. Its Python
    numbers become constants of the compiled graph (one compilation per distinct value): pass
    what changes from call to call (a time, a learning rate) as a 0-d tensor."""
    compiled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal compiled
        global _broken
        t = next((a for a in args if isinstance(a, torch.Tensor)), None)
        mode = compile_mode()
        if (_broken or mode == "0" or t is None or t.device.type != "cpu" or t.requires_grad
                or (mode == "auto" and t.numel() < COMPILE_MIN)):
            return fn(*args, **kwargs)
        if compiled is None:
            compiled = torch.compile(fn, dynamic=True)
        # Python numbers are constants of the graph (the card's figures, bit counts; the device
        # families branch on them); what changes from call to call comes as a tensor
        cfg = torch._dynamo.config
        prev = cfg.specialize_float
        cfg.specialize_float = True
        try:
            return compiled(*args, **kwargs)
        except Exception as e:      # noqa: BLE001 - no compiler here: plain torch from now on
            _broken = True
            warnings.warn(f"neurosal: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); the fused kernels "
                          "run in plain torch from now on (same numbers, slower). NEUROSAL_COMPILE=0 silences this.",
                          RuntimeWarning, stacklevel=2)
            return fn(*args, **kwargs)
        finally:
            cfg.specialize_float = prev

    call.eager = fn
    return call


def _stochastic_round(v: torch.Tensor, scale, key: torch.Tensor) -> torch.Tensor:
    w = v * scale
    c = torch.arange(w.numel(), dtype=torch.int64, device=w.device).view(w.shape)
    return torch.floor(w + uniform_at(key, c, w.dtype)).contiguous()      # row-major whatever v's strides


_stochastic_round_fused = fused(_stochastic_round)


def stochastic_round(v: torch.Tensor, scale: float, generator) -> torch.Tensor:
    """``floor(v * scale + U)``, ``U`` uniform in [0, 1) (the counter-based number of each entry's
    row-major position; one key from ``generator``): an unbiased integer rounding,
    ``E[n] = v * scale``, in one fused pass."""
    return _stochastic_round_fused(v, torch.tensor(scale, dtype=v.dtype, device=v.device), new_key(generator, v.device))
