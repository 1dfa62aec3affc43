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
from ..accel import tally
from ..neurons import beta_of
from .protocol import ChipNetwork, Component, CostUnit
from .simulator import DECODERS, VARIABLES, RunResult, Simulator, _spike_matmul, encoder_for

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

    def components(self) -> dict:
        """The components a probe can name, with the variables each records."""
        return {layer.name: Component(VARIABLES[:3], (layer.n_out,)) for layer in self.layers}

    # -- one chunk in the engine ----------------------------------------------------------------
    def step(self, run, h, spikes: bool) -> None:
        """One chunk of the chain (see :class:`~neurosal.engine.simulator.Run`): layer by layer,
        the synapse reads all ``K x B`` (step, sample) vectors of the chunk in one call, then
        the layer's neurons step through the chunk; the readout statistics of the last layer
        are accumulated in O(1) memory in ``T``."""
        K, B, t0 = run.K, run.B, run.t0
        layers = self.layers
        for li, layer in enumerate(layers):
            neu = layer.neurons
            name = layer.name
            keep_v = li == len(layers) - 1 or run.wants(name, "v")
            if name not in run.states:
                dtype = layer.crossbar.dtype if layer.crossbar is not None else torch.get_default_dtype()
                ev = isinstance(h, coding_mod.SpikeEvents)
                run.states[name] = neu.init_state(B, layer.n_out, dtype=dtype if ev else h.dtype,
                                                  device=h.t.device if ev else h.device)
                run.paths[name] = {"event": 0, "dense": 0}
                run.spikes[name] = 0
            flat = h if isinstance(h, coding_mod.SpikeEvents) else h.reshape(K * B, -1)
            xb = layer.crossbar
            if neu.input == "charge":
                if not spikes:
                    raise ValueError(f"layer {name}: charge-domain neurons take spike inputs "
                                     "(use latency or rate coding)")
                dg, df = _charge_inputs(layer, flat, run.path)
                cur = dg.reshape(K, B, -1)
                z, v, run.states[name] = neu((cur, df.reshape(K, B, -1)), run.states[name], keep_v)
            else:
                cur = _synapse(layer, flat, spikes, run.path).reshape(K, B, -1)
                z, v, run.states[name] = neu(cur, run.states[name], keep_v)
            if xb is not None and xb.last_path is not None:
                run.paths[name][xb.last_path] += 1
                xb.last_path = None
            layer.neuron_updates += K * B * layer.n_out
            if not neu.spiking:
                run.spikes[name] = None
            else:
                n_sp = tally(z.sum())                # spikes are 0/1: the sum counts them
                run.spikes[name] += n_sp
                layer.spike_count += n_sp
            if name in run.pidx:
                run.emit(name, {"spikes": z, "v": v, "current": cur})
            h = z
            spikes = neu.spiking
        # readout statistics of the last layer, O(1) memory in T
        cnt = z.sum(0)
        vm = v.amax(0)
        steps_k = torch.arange(t0, t0 + K, dtype=z.dtype, device=z.device).view(-1, 1, 1)
        fs = torch.where(z > 0, steps_k, torch.full_like(z, float("inf"))).amin(0)
        a = run.acc
        if not a:
            a["count"], a["vmax"], a["first"] = cnt, vm, fs
        else:
            a["count"], a["vmax"], a["first"] = a["count"] + cnt, torch.maximum(a["vmax"], vm), \
                torch.minimum(a["first"], fs)

    def finish(self, run) -> RunResult:
        """The run's scores by the network's decoder."""
        a, steps = run.acc, run.steps
        if self.decoder == "count":
            scores = a["count"]
        elif self.decoder == "max_membrane":
            scores = a["vmax"]
        else:
            scores = torch.where(torch.isfinite(a["first"]), steps - a["first"], torch.zeros_like(a["first"]))
        return RunResult(scores=scores, spike_counts=a["count"], max_v=a["vmax"], first_spike=a["first"])

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


def _synapse(layer, h, spikes: bool, path: str) -> torch.Tensor:
    """Currents of ``h`` ([K*B, n_in], or address events) through the layer's synapse."""
    syn, xb = layer.synapse, layer.crossbar
    if isinstance(h, coding_mod.SpikeEvents):
        sparse = xb is not None and path != "dense" and (
            path == "event" or len(h) <= xb.event_density(xb.cols) * h.steps * h.batch * h.n)
        if sparse and not (torch.is_grad_enabled() and syn.weight.requires_grad):
            syn._check_and_sync()
            y = syn.crossbar.forward_events(h.t * h.batch + h.b, h.i, h.steps * h.batch) * syn.weight_scale
            return y + syn.bias if syn.bias is not None else y
        # dense activity, or training (dL/dW needs x): the frame form
        h = h.to_dense(xb.dtype if xb is not None else torch.get_default_dtype()).reshape(h.steps * h.batch, h.n)
    if xb is not None:                        # an analog synapse reads spikes or values
        syn.spikes, syn.path = spikes, path
    return syn(h)


def _charge_inputs(layer, h, path: str):
    """``(dg, df)`` of new input spikes ``h``: the crossbar read and its beta-weighted twin."""
    syn, p = layer.synapse, layer.neurons.p
    dg = _synapse(layer, h, True, path)
    if syn.bias is not None:
        dg = dg - syn.bias                    # a charge neuron has no bias current
    bw = beta_of(syn.weight.t(), p.e_plus, p.e_minus)      # from the effective weights [n_in, n_out]
    if isinstance(h, coding_mod.SpikeEvents):
        vec = h.t * h.batch + h.b
        counts = torch.bincount(vec, minlength=h.steps * h.batch)
        offsets = torch.zeros_like(counts)
        offsets[1:] = torch.cumsum(counts[:-1], 0)
        df = nn.functional.embedding_bag(h.i, bw, offsets, mode="sum")
    else:
        df = _spike_matmul(h, bw, path, layer.crossbar)
    return dg, df
