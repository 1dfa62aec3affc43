"""The state of a neuron layer between steps, and the protocol every neuron layer follows.

A neuron layer is an ``nn.Module`` that declares what it is:

* ``kind`` — a name for reports (``'lif'``, ``'rate'``, ``'charge'``);
* ``input`` — what it consumes: ``'current'`` (the synapse's output currents ``[K, batch, n]``)
  or ``'charge'`` (the reads of *new* input spikes and their reversal-potential twin, a pair
  ``(dg, df)``: the engine reads both through the layer's synapse);
* ``spiking`` — whether its output is spikes (0/1, counted) or an analog value (rate neurons);

and one lifecycle: ``init_state(batch, n, dtype, device) -> NeuronState``, then
``forward(input, state, keep_v) -> (output [K, batch, n], v [K, batch, n] or None, state)``.

May import: nothing of neurosal.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["NeuronState"]


class NeuronState(NamedTuple):
    """State of a neuron layer between steps (fields unused by a kind are ``None``)."""

    v: torch.Tensor
    g: Optional[torch.Tensor] = None        # charge neurons: latched input current
    f: Optional[torch.Tensor] = None        # charge neurons: latched conductance term
    fired: Optional[torch.Tensor] = None    # charge neurons: has fired (TTFS, once)
