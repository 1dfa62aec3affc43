r"""Rate neurons, the ``T = 1`` analog limit of spiking: a bounded activation.

May import: nothing of neurosal but :mod:`.state`.
"""

from __future__ import annotations

import torch
from torch import nn

from .state import NeuronState

__all__ = ["RateNeurons"]


class RateNeurons(nn.Module):
    r"""Rate neurons, the ``T = 1`` analog limit: :math:`y = \min(\max(I, 0), 1)`.

    The bounded activation stands for a firing rate in [0, 1] spikes per step; the output is
    an analog value that drives the next crossbar through its DAC. ``v`` is the input current.
    """

    kind = "rate"
    input = "current"
    spiking = False           # an analog value drives the next array through its DAC

    def init_state(self, batch: int, n: int, dtype=torch.float32, device=None) -> NeuronState:
        return NeuronState(v=torch.zeros(batch, n, dtype=dtype, device=device or "cpu"))

    def forward(self, current: torch.Tensor, state: NeuronState, keep_v: bool = True):
        return current.clamp(0.0, 1.0), current, NeuronState(v=current[-1])
