r"""A network that is a chain of chip layers: each a synapse (a crossbar
:class:`~neurosal.crossbar.AnalogLinear`, or a digital ``nn.Linear``) and the neurons it drives,
run through time by the :class:`~neurosal.engine.simulator.Simulator`.

Codings (:meth:`Network.run`): ``rate`` — one step of direct analog input; ``spike`` —
Bernoulli spikes for ``steps``; ``latency`` — one spike per input at ``t = 1 - x``. The
training loss is taken on the decoded scores (rate coding, a leaky-integrator readout) or, for
a spiking readout, on spike counts plus the membrane maximum times ``LOGIT_SCALE``, which
carries a gradient while the output is still silent.

May import: :mod:`neurosal.coding`, :mod:`neurosal.engine.simulator`, :mod:`neurosal.engine.protocol`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .. import coding as coding_mod
from .protocol import ChipNetwork, CostUnit
from .simulator import DECODERS, Simulator, encoder_for

__all__ = ["Layer", "Network", "LOGIT_SCALE"]

#: logits per unit of membrane potential in spike codings (membranes live in threshold
#: units, O(1), too flat for a softmax)
LOGIT_SCALE = 10.0


class Layer(nn.Module):
    """One synapse (crossbar or digital linear map) and the neurons it drives."""

    def __init__(self, synapse: nn.Module, neurons: nn.Module, name: str):
        super().__init__()
        self.synapse, self.neurons, self.name = synapse, neurons, name
        # an analog synapse holds a crossbar; a digital one (a plain nn.Linear) holds none
        self._crossbar = getattr(synapse, "crossbar", None)
        self.neuron_updates = 0      # cumulative neuron state updates (steps x samples x neurons)
        self.spike_count = 0         # cumulative output spikes

    @property
    def n_in(self) -> int:
        return self.synapse.in_features

    @property
    def n_out(self) -> int:
        return self.synapse.out_features

    @property
    def crossbar(self):
        """The synapse's crossbar, or None for a digital synapse."""
        return self._crossbar


class Network(ChipNetwork, nn.Module):
    """A feed-forward chain of :class:`Layer` s with an input size and a readout decoder."""

    structure = "chain"

    def __init__(self, layers: Sequence[Layer], *, decoder: str = "count", name: str = "network",
                 meta: Optional[dict] = None):
        super().__init__()
        if not layers:
            raise ValueError("a network needs at least one layer")
        for a, b in zip(layers, layers[1:]):
            if a.n_out != b.n_in:
                raise ValueError(f"layer {a.name} has {a.n_out} outputs but {b.name} takes {b.n_in} inputs")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; allowed: {', '.join(DECODERS)}")
        self.layers = nn.ModuleList(layers)
        self.decoder, self.name, self.meta = decoder, name, dict(meta or {})

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    # -- the chip-network protocol ------------------------------------------------------------
    def run(self, x: torch.Tensor, *, coding: str, steps: int, seed: int = 0):
        """Run the chain on ``x`` (``[batch, features]`` in [0, 1]); returns the :class:`RunResult`."""
        if coding == "rate":
            return Simulator(self, chunk=1).run(coding_mod.direct(x, 1))
        enc = "rate" if coding == "spike" else "latency"
        return Simulator(self, chunk=steps).run(encoder_for(enc, x, steps, seed=seed), steps=steps)

    def loss_scores(self, result, coding: str) -> torch.Tensor:
        # rate, or a leaky-integrator readout: the decoded scores; a spiking readout: spike counts
        # plus the membrane maximum, which carries a gradient while the output is still silent
        if coding == "rate":
            return result.scores
        if self.decoder == "max_membrane":
            return result.scores * LOGIT_SCALE
        return result.spike_counts + result.max_v * LOGIT_SCALE

    def analog_units(self) -> list:
        return [(layer.name, layer.synapse) for layer in self.layers if layer.crossbar is not None]

    def cost_units(self) -> list:
        return [CostUnit(layer.name, "layer", layer.crossbar,
                         neurons=lambda layer=layer: (layer.neuron_updates, layer.spike_count))
                for layer in self.layers]
