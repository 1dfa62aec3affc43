r"""The digital co-processor that runs SAnet's attention blocks, and the blocks themselves.

:class:`CoProcessor` models a small digital engine: a number format (:class:`NumberFormat`,
fixed point with ``bits`` total and ``frac_bits`` fractional bits, or float32) applied to
every value it holds, and :class:`CoCounters` of its work:

* ``transfers_in`` — values read from the analog backbone (one ADC conversion each),
* ``transfers_out`` — values sent back to the analog side,
* ``macs`` — multiply-accumulates, ``ops`` — other arithmetic (adds, compares,
  nonlinearities, elementwise products),
* ``mem_reads`` / ``mem_writes`` — words read or written in its local memory (weights,
  activations).

Attention blocks (trained digitally, with autograd and a digital optimizer):

* :class:`SEBlock` — squeeze-and-excitation channel attention (Hu et al. 2018):
  :math:`s = \sigma(W_2\,\mathrm{relu}(W_1\,\mathrm{avgpool}(x)))`, :math:`y = x \odot s`.
* :class:`CBAMBlock` — channel then spatial attention (Woo et al. 2018): the channel MLP sees
  average- and max-pooled features; the spatial map is
  :math:`\sigma(\mathrm{conv}_{7\times 7}([\mathrm{mean}_c x, \max_c x]))`.

Fixed-point rounding uses a straight-through gradient, so the blocks train in the format
they run in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NumberFormat", "CoCounters", "CoProcessor", "SEBlock", "CBAMBlock", "ATTENTIONS", "make_attention"]

ATTENTIONS = ("se", "cbam")


@dataclass(frozen=True)
class NumberFormat:
    """``kind='fixed'``: two's complement with ``bits`` bits, ``frac_bits`` of them fractional
    (range :math:`[-2^{b-f-1}, 2^{b-f-1} - 2^{-f}]`, step :math:`2^{-f}`); ``'float'``: float32."""

    kind: str = "fixed"
    bits: int = 16
    frac_bits: int = 10

    def __post_init__(self):
        if self.kind not in ("fixed", "float"):
            raise ValueError(f"number format kind must be 'fixed' or 'float', got {self.kind!r}")
        if self.kind == "fixed" and not (2 <= self.bits <= 32 and 0 <= self.frac_bits < self.bits):
            raise ValueError(f"fixed point needs 2 <= bits <= 32 and 0 <= frac_bits < bits, "
                             f"got bits={self.bits}, frac_bits={self.frac_bits}")

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Round to the format (saturating); gradient passes straight through."""
        if self.kind == "float":
            return x
        step = 2.0 ** -self.frac_bits
        hi = (2 ** (self.bits - 1) - 1) * step
        lo = -(2 ** (self.bits - 1)) * step
        q = torch.clamp(torch.round(x / step) * step, lo, hi)
        return x + (q - x).detach()


@dataclass
class CoCounters:
    transfers_in: int = 0
    transfers_out: int = 0
    macs: int = 0
    ops: int = 0
    mem_reads: int = 0
    mem_writes: int = 0

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class CoProcessor:
    """A digital co-processor: number format and event counters (shared by its blocks).

    ``counters`` holds the total; ``blocks`` the same counts per attention block (by its
    ``tag``), so a cost report can say what each block costs. Work done while training goes
    through autograd too: when a block's output receives its gradient, the backward pass is
    counted as twice the forward MACs, operations and memory traffic (input and weight
    gradients), and the gradient values cross the interface the other way.
    """

    def __init__(self, fmt: NumberFormat = NumberFormat()):
        self.fmt = fmt
        self.counters = CoCounters()
        self.blocks: dict[str, CoCounters] = {}
        self._active: Optional[CoCounters] = None

    def _add(self, **kw) -> None:
        for c in (self.counters, self._active):
            if c is not None:
                for k, v in kw.items():
                    setattr(c, k, getattr(c, k) + int(v))

    def run_block(self, tag: str, fn, x: torch.Tensor) -> torch.Tensor:
        """Run ``fn(x)`` as block ``tag``: its work is counted under ``blocks[tag]`` too, and
        its backward pass when the gradient arrives."""
        blk = self.blocks.setdefault(tag, CoCounters())
        before = blk.as_dict()
        self._active = blk
        try:
            y = fn(x)
        finally:
            self._active = None
        fwd = {k: v - before[k] for k, v in blk.as_dict().items()}
        if y.requires_grad:
            def on_grad(g, tag=tag, fwd=fwd):
                self._active = self.blocks[tag]
                try:
                    self._add(macs=2 * fwd["macs"], ops=2 * fwd["ops"], mem_reads=2 * fwd["mem_reads"],
                              mem_writes=2 * fwd["mem_writes"], transfers_in=fwd["transfers_out"],
                              transfers_out=fwd["transfers_in"])
                finally:
                    self._active = None
                return g
            y.register_hook(on_grad)
        return y

    def receive(self, x: torch.Tensor) -> torch.Tensor:
        """Values arriving from the analog array (each one ADC conversion), stored locally."""
        n = x.numel()
        self._add(transfers_in=n, mem_writes=n)
        return self.fmt.quantize(x)

    def send(self, x: torch.Tensor) -> torch.Tensor:
        """Values leaving for the analog side (read from local memory)."""
        n = x.numel()
        self._add(transfers_out=n, mem_reads=n)
        return x

    def linear(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """``layer(x)`` on the co-processor: MACs, weight and activation reads, output writes."""
        b = x.numel() // layer.in_features
        self._add(macs=b * layer.in_features * layer.out_features,
                  mem_reads=layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0) + x.numel(),
                  mem_writes=b * layer.out_features)
        return self.fmt.quantize(layer(x))

    def conv(self, x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
        y = layer(x)
        k = layer.weight[0].numel()
        self._add(macs=y.numel() * k, mem_reads=layer.weight.numel() + x.numel(), mem_writes=y.numel())
        return self.fmt.quantize(y)

    def elementwise(self, y: torch.Tensor, ops_per_value: int = 1) -> torch.Tensor:
        """Account an elementwise result (adds, products, nonlinearities, pooling compares)."""
        self._add(ops=ops_per_value * y.numel(), mem_writes=y.numel())
        return self.fmt.quantize(y)


class _Block(nn.Module):
    """An attention block on the co-processor: its work is counted under its ``tag``."""

    tag = "block"
    #: set by the engine when the block's gate is probed: the next forward keeps its gate
    #: values in ``gate`` (``[N, C]``: the channel gate in (0, 1))
    keep_gate = False
    gate = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.coproc.run_block(self.tag, self._forward, x)


class SEBlock(_Block):
    """Squeeze-and-excitation channel attention on the co-processor (reduction ``r``)."""

    def __init__(self, channels: int, coproc: CoProcessor, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.coproc = coproc
        self.tag = "se"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        cp = self.coproc
        xd = cp.receive(x)                                          # the feature map crosses over
        s = cp.elementwise(xd.mean((2, 3)), ops_per_value=x.shape[2] * x.shape[3])      # squeeze
        s = cp.elementwise(F.relu(cp.linear(s, self.fc1)))
        s = cp.elementwise(torch.sigmoid(cp.linear(s, self.fc2)))
        if self.keep_gate:
            self.gate = s.detach()
        y = cp.elementwise(xd * s[:, :, None, None])                # excite
        return cp.send(y)


class CBAMBlock(_Block):
    """CBAM: channel attention (avg + max pooled, shared MLP) then spatial attention (7x7)."""

    def __init__(self, channels: int, coproc: CoProcessor, reduction: int = 4, kernel: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        self.coproc = coproc
        self.tag = "cbam"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        cp = self.coproc
        hw = x.shape[2] * x.shape[3]
        xd = cp.receive(x)
        avg = cp.elementwise(xd.mean((2, 3)), ops_per_value=hw)
        mx = cp.elementwise(xd.amax((2, 3)), ops_per_value=hw)
        mlp = lambda v: cp.linear(cp.elementwise(F.relu(cp.linear(v, self.fc1))), self.fc2)   # noqa: E731
        ca = cp.elementwise(torch.sigmoid(mlp(avg) + mlp(mx)), ops_per_value=2)
        if self.keep_gate:
            self.gate = ca.detach()
        y = cp.elementwise(xd * ca[:, :, None, None])
        c = x.shape[1]
        desc = torch.cat([cp.elementwise(y.mean(1, keepdim=True), ops_per_value=c),
                          cp.elementwise(y.amax(1, keepdim=True), ops_per_value=c)], 1)
        sa = cp.elementwise(torch.sigmoid(cp.conv(desc, self.spatial)))
        return cp.send(cp.elementwise(y * sa))


def make_attention(kind: Optional[str], channels: int, coproc: CoProcessor) -> Optional[nn.Module]:
    if kind is None or kind == "none":
        return None
    if kind == "se":
        return SEBlock(channels, coproc)
    if kind == "cbam":
        return CBAMBlock(channels, coproc)
    raise ValueError(f"unknown attention {kind!r}; allowed: none, {', '.join(ATTENTIONS)}")
