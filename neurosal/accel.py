"""Where a simulation runs: the torch device (``--accelerator``), CPU threads, and random
streams that follow a network from device to device.

``--device`` names a *device card* (the memory device on the chip); the hardware that runs
the simulation is the *accelerator*: ``auto`` (a GPU when there is one, else the CPU),
``cpu``, ``cuda`` or ``cuda:N``, ``mps``.

Random streams. Every random draw of the chip (read noise, cycle-to-cycle noise, stochastic
rounding, encoders) comes from a generator on the device that holds the data. The
fabricated chip (device-to-device draws, stuck cells, initial weights) is always drawn on the
CPU and then moved, so the same seed gives the same chip on every accelerator. The noise
streams of the CPU and of a GPU are different generators: a run repeats exactly on the same
accelerator with the same seed, and agrees only in distribution across accelerators.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch

__all__ = ["resolve", "set_threads", "default_threads", "Generators", "AcceleratorError"]


class AcceleratorError(ValueError):
    """An accelerator that does not exist here (e.g. ``cuda`` on a machine without a GPU)."""


def resolve(accelerator: Optional[str | torch.device] = "auto") -> torch.device:
    """The torch device for ``accelerator``: ``auto`` (CUDA if available, else MPS, else CPU),
    ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`."""
    if accelerator is None or accelerator == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(accelerator)
    except (RuntimeError, TypeError):
        raise AcceleratorError(f"unknown accelerator {accelerator!r}; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AcceleratorError(f"accelerator {accelerator!r}: this machine has no CUDA GPU that torch can use "
                                   "(use --accelerator cpu or auto)")
        n = torch.cuda.device_count()
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        if not 0 <= idx < n:
            raise AcceleratorError(f"accelerator {accelerator!r}: there {'is' if n == 1 else 'are'} {n} CUDA "
                                   f"device{'s' if n != 1 else ''} (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", idx)
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise AcceleratorError("accelerator 'mps': this machine has no Apple GPU that torch can use")
        return dev
    raise AcceleratorError(f"unsupported accelerator {accelerator!r}; allowed: auto, cpu, cuda, cuda:N, mps")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                          # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """CPU threads for one process: the cores this process may use less those already busy
    (1-minute load average), at least one. torch's own default (every core) collapses when
    another process competes for the cores: its threads wait on each other at every
    parallel region (measured ~40x slower on 2 cores with one competing job)."""
    cores = _usable_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:                                 # pragma: no cover
        busy = 0
    return max(1, min(cores, cores - busy))


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's intra-op threads to ``n`` (``None``: :func:`default_threads`); returns it."""
    if n is None:
        n = default_threads()
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def _derived_seed(seed: int, salt: bytes = b"") -> int:
    h = hashlib.blake2b(int(seed).to_bytes(16, "little", signed=True) + salt, digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class Generators:
    """One random generator per torch device, all from one seed: the CPU generator is seeded
    with ``seed`` itself (the streams neurosal always had), another device's with ``seed``
    too, created when data first lives there. ``get(device)`` returns the generator for data
    on ``device``; a stream continues where it left off when the data comes back."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._gens: dict[str, torch.Generator] = {}

    @staticmethod
    def _key(device) -> str:
        d = torch.device(device)
        if d.type == "cuda" and d.index is None:
            d = torch.device("cuda", torch.cuda.current_device())
        return str(d)

    def get(self, device=None) -> Optional[torch.Generator]:
        key = self._key(device if device is not None else "cpu")
        g = self._gens.get(key)
        if g is None:
            d = torch.device(key)
            if d.type == "meta":          # shapes without values (the device tests): no stream
                return None
            g = torch.Generator(device=d).manual_seed(self.seed)
            self._gens[key] = g
        return g

    def state_dict(self) -> dict:
        """Plain data: the seed and each generator's state (uint8 tensors on the CPU)."""
        return {"seed": self.seed, "states": {k: g.get_state().cpu() for k, g in self._gens.items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the streams. A state saved on a device type this machine lacks (a GPU
        checkpoint loaded on a CPU) cannot be restored as such; that device's stream is
        replaced by one seeded from the saved state, so a resumed run does not repeat it."""
        self.seed = int(sd.get("seed", self.seed))
        self._gens = {}
        for key, state in sd.get("states", {}).items():
            try:
                g = torch.Generator(device=torch.device(key))
                g.set_state(state)
            except (RuntimeError, ValueError):
                salt = bytes(state.to(torch.uint8).view(-1)[:4096].tolist())
                for other in ("cpu",) + ((self._key("cuda"),) if torch.cuda.is_available() else ()):
                    if other not in self._gens and other not in sd.get("states", {}):
                        self._gens[other] = torch.Generator(device=other).manual_seed(
                            _derived_seed(self.seed, salt + key.encode()))
                continue
            self._gens[key] = g


def all_finite(tensors) -> bool:
    """Whether every entry of every tensor is finite, with one read-back for all of them (sums:
    finite only if every term is; an overflowing sum is re-checked entry by entry). Tensors on
    the meta device hold no values: True."""
    tensors = [t for t in tensors if t is not None]
    if not tensors or tensors[0].device.type == "meta":
        return True
    dev = tensors[0].device
    sums = torch.stack([t.sum().to(dev, torch.float64) for t in tensors])
    if bool(torch.isfinite(sums).all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def tally(t: torch.Tensor):
    """A count held in a 0-d tensor, to add to a running total: a Python int on the CPU (free to
    read there), the int64 tensor itself on an accelerator (read when the total is read, so that
    counting never makes the host wait)."""
    if t.device.type == "cpu":
        return int(t)
    return t.to(torch.int64)


_POOL = None
_CHUNKS = 4                  # fixed: the result does not depend on how many threads draw it
_PARALLEL_MIN = 1 << 18      # smaller draws: torch.randn directly (threads cost more than they save)


def randn(shape, *, generator: Optional[torch.Generator], dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal draws, as ``torch.randn(shape, generator=generator)``, faster for big
    draws on a CPU: torch's CPU generator (Mersenne twister) draws one number after another on
    one core, about a third of a noisy training step. A big draw is split into 4 fixed chunks,
    each from its own Mersenne twister seeded from ``generator`` (4 draws from it), drawn on
    as many worker threads as torch's thread count allows (``--threads``). The same generator state gives the same numbers whatever the thread count;
    the stream differs from ``torch.randn``'s (tested for mean, variance, normality and the
    absence of correlation between chunks and between successive draws). Other devices and
    small draws: ``torch.randn`` itself."""
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=device)
    device = torch.device(device) if device is not None else generator.device
    n = 1
    for s in shape:
        n *= int(s)
    if device.type != "cpu" or n < _PARALLEL_MIN:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    out = torch.empty(n, dtype=dtype, device=device)
    seeds = torch.randint(0, 1 << 62, (_CHUNKS,), generator=generator, device=device).tolist()
    bounds = [n * i // _CHUNKS for i in range(_CHUNKS + 1)]

    def draw(i: int) -> None:
        g = torch.Generator(device=device).manual_seed(seeds[i])
        out[bounds[i]:bounds[i + 1]].normal_(generator=g)
    workers = min(_CHUNKS, torch.get_num_threads())         # --threads bounds this too
    if workers == 1:
        for i in range(_CHUNKS):
            draw(i)
    else:
        global _POOL
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_CHUNKS, thread_name_prefix="neurosal-randn")
        # at most `workers` chunks in flight: the rest wait for one to finish
        pending = [_POOL.submit(draw, i) for i in range(workers)]
        for i in range(workers, _CHUNKS):
            pending.pop(0).result()
            pending.append(_POOL.submit(draw, i))
        for f in pending:
            f.result()
    return out.view(tuple(shape))
