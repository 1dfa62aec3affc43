r"""The timestep engine: runs a network of crossbar layers and neuron layers over ``T`` steps.

A :class:`~neurosal.engine.network.Network` is a chain of layers, each a synapse (an
:class:`~neurosal.crossbar.AnalogLinear` on a crossbar, or a digital ``nn.Linear``) followed
by a neuron layer that says what it consumes (``input``: currents, or the charge pair of new
spikes) and whether it spikes (``spiking``; see :mod:`neurosal.neurons.state`).

The :class:`Simulator` advances time in chunks of ``chunk`` steps. Inside a chunk it runs
layer by layer: the synapse reads the inputs of all ``chunk x batch`` (step, sample) vectors
in one crossbar call, then the neurons step through the chunk. This equals the
step-by-step order for feed-forward networks (a layer at step ``t`` depends only on earlier
layers at steps ``<= t``) and keeps memory flat in ``T`` while BLAS sees large matrices.

**Event-driven reads.** A crossbar row with no input spike costs nothing: the crossbar
gathers only the active rows (``path='event'``), or multiplies densely (``'dense'``), or
chooses by the activity it sees (``'auto'``, the default; the crossover density is
:meth:`neurosal.crossbar.Crossbar.event_density`). Both paths give the same currents (to
float rounding) and the same event counts.

**Events counted** (per layer, in :class:`RunResult.events` and the crossbars'
:class:`~neurosal.crossbar.Counters`): output spikes, input events (active rows),
synaptic events (active rows x columns) and ADC conversions.

**Probes** choose what is recorded: ``Probe(layer, variables=('spikes', 'v', 'current'),
samples=...)``. Recorded data go to a :class:`~neurosal.recording.Recorder` (streamed to
HDF5 chunk by chunk) or, without one, are kept in memory in :attr:`RunResult.probes`.

May import: :mod:`neurosal.coding`, :mod:`neurosal.neurons`, :mod:`neurosal.crossbar`,
:mod:`neurosal.accel`, :mod:`neurosal.progress`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .. import coding
from ..accel import Generators, tally
from ..crossbar import Counters
from ..crossbar.periphery import count_nonzero as _count_nonzero
from ..neurons import NeuronState, beta_of
from ..progress import bar as progress_bar

__all__ = ["Probe", "RunResult", "Simulator", "VARIABLES", "DECODERS", "encoder_for"]

VARIABLES = ("spikes", "v", "current")
DECODERS = ("count", "first_spike", "max_membrane")


@dataclass
class Probe:
    """Record ``variables`` of layer ``layer`` (name or index; ``'input'`` = encoded input)
    for the samples ``samples`` (indices into the batch; ``None`` = all)."""

    layer: str | int
    variables: tuple[str, ...] = ("spikes",)
    samples: Optional[Sequence[int]] = None

    def __post_init__(self):
        self.variables = tuple(self.variables)
        bad = [v for v in self.variables if v not in VARIABLES]
        if bad:
            raise ValueError(f"unknown probe variable(s) {bad}; allowed: {', '.join(VARIABLES)}")


@dataclass
class RunResult:
    """What a run produced: decoded scores, per-layer event counts, in-memory probe data."""

    scores: torch.Tensor                     # [batch, n_out] by the network's decoder
    spike_counts: torch.Tensor               # [batch, n_out] output spikes per neuron
    max_v: torch.Tensor                      # [batch, n_out] largest membrane potential
    first_spike: torch.Tensor                # [batch, n_out] first spike step (inf: none)
    steps: int
    events: dict = field(default_factory=dict)      # layer name -> counts
    probes: dict = field(default_factory=dict)      # "layer/variable" -> [T, samples, n] tensor
    paths: dict = field(default_factory=dict)       # layer name -> {"event": reads, "dense": reads}


class _RunEvents(Mapping):
    """``RunResult.events``: layer name -> event counts of the run, computed (and read back from
    an accelerator) the first time someone looks."""

    def __init__(self, spikes: dict, taps: dict, crossbars: dict):
        self._spikes, self._taps, self._xbs, self._d = spikes, taps, crossbars, None

    def _resolve(self) -> dict:
        if self._d is None:
            d = {}
            for name, ev in self._spikes.items():
                e = {k: (int(v) if isinstance(v, torch.Tensor) else v) for k, v in ev.items()}
                xb, tap = self._xbs.get(name), self._taps.get(name)
                if tap is not None:
                    c = tap.as_dict()
                    e.update(input_events=c["row_activations"] // xb.n_col_tiles, synaptic_events=c["cell_reads"],
                             adc_conversions=c["adc_conversions"], dac_conversions=c["dac_conversions"],
                             reads=c["forward_reads"])
                d[name] = e
            self._d = d
        return self._d

    def __getitem__(self, key):
        return self._resolve()[key]

    def __iter__(self):
        return iter(self._spikes)

    def __len__(self) -> int:
        return len(self._spikes)

    def __repr__(self) -> str:
        return repr(self._resolve())


class Simulator:
    """Run a :class:`Network` over ``steps`` time steps of ``dt`` seconds.

    ``chunk`` steps are processed at a time (memory grows with ``chunk``, not with ``T``);
    ``path`` is ``'auto'`` (event-driven or dense by activity), ``'event'`` or ``'dense'``.
    """

    def __init__(self, network, *, dt: float = 1e-3, chunk: int = 64, path: str = "auto"):
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 step, got {chunk}")
        if path not in ("auto", "event", "dense"):
            raise ValueError(f"path must be 'auto', 'event' or 'dense', got {path!r}")
        self.net, self.dt, self.chunk, self.path = network, float(dt), int(chunk), path

    # ------------------------------------------------------------------ helpers
    def _probe_index(self, probes: Sequence[Probe]) -> dict:
        names = self.net.layer_names()
        out: dict = {}
        for p in probes:
            if isinstance(p.layer, int):
                if not -1 <= p.layer < len(names):
                    raise ValueError(f"probe layer index {p.layer} out of range (0..{len(names) - 1}, -1 = input)")
                key = "input" if p.layer == -1 else names[p.layer]
            elif p.layer == "input" or p.layer in names:
                key = p.layer
            else:
                raise ValueError(f"probe layer {p.layer!r} not in the network; layers: input, {', '.join(names)}")
            out.setdefault(key, []).append(p)
        return out

    def _synapse(self, layer, h, spikes: bool) -> torch.Tensor:
        """Currents of ``h`` ([K*B, n_in], or address events) through the layer's synapse."""
        syn, xb = layer.synapse, layer.crossbar
        if isinstance(h, coding.SpikeEvents):
            sparse = xb is not None and self.path != "dense" and (
                self.path == "event" or len(h) <= xb.event_density(xb.cols) * h.steps * h.batch * h.n)
            if sparse and not (torch.is_grad_enabled() and syn.weight.requires_grad):
                syn._check_and_sync()
                y = syn.crossbar.forward_events(h.t * h.batch + h.b, h.i, h.steps * h.batch) * syn.weight_scale
                return y + syn.bias if syn.bias is not None else y
            # dense activity, or training (dL/dW needs x): the frame form
            h = h.to_dense(xb.dtype if xb is not None else torch.get_default_dtype()).reshape(h.steps * h.batch, h.n)
        if xb is not None:                        # an analog synapse reads spikes or values
            syn.spikes, syn.path = spikes, self.path
        return syn(h)

    def _charge_inputs(self, layer, h: torch.Tensor):
        """``(dg, df)`` of new input spikes ``h``: the crossbar read and its beta-weighted twin."""
        syn, p = layer.synapse, layer.neurons.p
        dg = self._synapse(layer, h, spikes=True)
        if syn.bias is not None:
            dg = dg - syn.bias                    # a charge neuron has no bias current
        bw = beta_of(syn.weight.t(), p.e_plus, p.e_minus)      # from the effective weights [n_in, n_out]
        if isinstance(h, coding.SpikeEvents):
            vec = h.t * h.batch + h.b
            counts = torch.bincount(vec, minlength=h.steps * h.batch)
            offsets = torch.zeros_like(counts)
            offsets[1:] = torch.cumsum(counts[:-1], 0)
            df = nn.functional.embedding_bag(h.i, bw, offsets, mode="sum")
        else:
            df = _spike_matmul(h, bw, self.path, layer.crossbar)
        return dg, df

    # ------------------------------------------------------------------ run
    def run(self, inputs: torch.Tensor | Callable[[int, int], torch.Tensor], *, steps: Optional[int] = None,
            spikes_in: Optional[bool] = None, probes: Sequence[Probe] = (), recorder=None,
            progress: bool = False) -> RunResult:
        """Run the network.

        ``inputs``: an encoded tensor ``[T, batch, n_in]``, or a function ``(t0, t1) ->
        [t1 - t0, batch, n_in]`` that encodes a chunk on demand (flat memory for long runs;
        then ``steps`` is required). ``spikes_in`` says whether the inputs are binary spikes
        (default: detected from the first chunk).
        """
        if isinstance(inputs, coding.SpikeEvents):
            if inputs.n != self.net.n_in:
                raise ValueError(f"input events address {inputs.n} neurons, the network takes {self.net.n_in}")
            steps = inputs.steps if steps is None else steps
            get = inputs.window
        elif callable(inputs) and not isinstance(inputs, torch.Tensor):
            if steps is None:
                raise ValueError("steps is required when inputs is a function")
            get = inputs
        else:
            if inputs.dim() != 3 or inputs.shape[2] != self.net.n_in:
                raise ValueError(f"inputs must be [T, batch, {self.net.n_in}], got {tuple(inputs.shape)}")
            steps = inputs.shape[0] if steps is None else steps
            if steps > inputs.shape[0]:
                raise ValueError(f"steps={steps} but inputs has only {inputs.shape[0]} steps")
            get = lambda t0, t1: inputs[t0:t1]                            # noqa: E731
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        pidx = self._probe_index(probes)
        layers = list(self.net.layers)
        states: list[Optional[NeuronState]] = [None] * len(layers)
        store: dict = {}
        # the run's crossbar events: a Counters per array listening while the run lasts (read only
        # if someone looks at RunResult.events: no read-back of an accelerator's counts otherwise)
        taps = {layer.name: Counters() for layer in layers if layer.crossbar is not None}
        for layer in layers:
            if layer.crossbar is not None:
                layer.crossbar.counters._listeners.append(taps[layer.name])
        ev = {layer.name: {"spikes": 0} for layer in layers}
        paths = {layer.name: {"event": 0, "dense": 0} for layer in layers}
        out_count = out_vmax = out_first = None
        bar = progress_bar(steps, unit="step", desc="simulate", disable=not progress, leave=False)
        try:
            for t0 in range(0, steps, self.chunk):
                t1 = min(steps, t0 + self.chunk)
                h = get(t0, t1)
                K, B = h.shape[0], h.shape[1]
                if K != t1 - t0:
                    raise ValueError(f"input chunk [{t0}, {t1}) has {h.shape[0]} steps")
                if spikes_in is None:
                    spikes_in = getattr(inputs, "spikes", None) or getattr(h, "spikes", None)
                if spikes_in is None:
                    spikes_in = _is_binary(h)
                spikes = spikes_in
                self._emit(pidx, "input", {"spikes": h} if spikes else {"current": h}, t0, recorder, store)
                for li, layer in enumerate(layers):
                    neu = layer.neurons
                    keep_v = li == len(layers) - 1 or any("v" in p.variables for p in pidx.get(layer.name, ()))
                    if states[li] is None:
                        dtype = layer.crossbar.dtype if layer.crossbar is not None else torch.get_default_dtype()
                        states[li] = neu.init_state(B, layer.n_out, dtype=dtype if isinstance(
                            h, coding.SpikeEvents) else h.dtype, device=h.t.device if isinstance(
                            h, coding.SpikeEvents) else h.device)
                    flat = h if isinstance(h, coding.SpikeEvents) else h.reshape(K * B, -1)
                    xb = layer.crossbar
                    if neu.input == "charge":
                        if not spikes:
                            raise ValueError(f"layer {layer.name}: charge-domain neurons take spike inputs "
                                             "(use latency or rate coding)")
                        dg, df = self._charge_inputs(layer, flat)
                        cur = dg.reshape(K, B, -1)
                        z, v, states[li] = neu((cur, df.reshape(K, B, -1)), states[li], keep_v)
                    else:
                        cur = self._synapse(layer, flat, spikes).reshape(K, B, -1)
                        z, v, states[li] = neu(cur, states[li], keep_v)
                    if xb is not None and xb.last_path is not None:
                        paths[layer.name][xb.last_path] += 1
                        xb.last_path = None
                    layer.neuron_updates += K * B * layer.n_out
                    if not neu.spiking:
                        ev[layer.name]["spikes"] = None
                    else:
                        n_sp = tally(z.sum())                # spikes are 0/1: the sum counts them
                        ev[layer.name]["spikes"] += n_sp
                        layer.spike_count += n_sp
                    self._emit(pidx, layer.name, {"spikes": z, "v": v, "current": cur}, t0, recorder, store)
                    h = z
                    spikes = neu.spiking
                # readout statistics of the last layer, O(1) memory in T
                cnt = z.sum(0)
                vm = v.amax(0)
                steps_k = torch.arange(t0, t1, dtype=z.dtype, device=z.device).view(-1, 1, 1)
                fs = torch.where(z > 0, steps_k, torch.full_like(z, float("inf"))).amin(0)
                if out_count is None:
                    out_count, out_vmax, out_first = cnt, vm, fs
                else:
                    out_count, out_vmax, out_first = out_count + cnt, torch.maximum(out_vmax, vm), \
                        torch.minimum(out_first, fs)
                bar.update(t1 - t0)
        finally:
            bar.close()
            for layer in layers:
                if layer.crossbar is not None:
                    lst = layer.crossbar.counters._listeners
                    lst[:] = [t for t in lst if t is not taps[layer.name]]
        if self.net.decoder == "count":
            scores = out_count
        elif self.net.decoder == "max_membrane":
            scores = out_vmax
        else:
            scores = torch.where(torch.isfinite(out_first), steps - out_first, torch.zeros_like(out_first))
        probes_out = {k: torch.cat(v, 0) for k, v in store.items()}
        return RunResult(scores=scores, spike_counts=out_count, max_v=out_vmax, first_spike=out_first,
                         steps=steps, events=_RunEvents(ev, taps, {la.name: la.crossbar for la in layers}),
                         probes=probes_out, paths=paths)

    def _emit(self, pidx, key, data, t0, recorder, store):
        for p in pidx.get(key, ()):
            for var in p.variables:
                x = data.get(var)
                if x is None:
                    continue
                if isinstance(x, coding.SpikeEvents):
                    if recorder is not None and hasattr(recorder, "write_events"):
                        recorder.write_events(key, t0, x if p.samples is None else x.select(p.samples))
                        continue
                    x = x.to_dense()
                if p.samples is not None:
                    x = x[:, list(p.samples)]
                x = x.detach()
                if recorder is not None:
                    recorder.write(key, var, t0, x)
                else:
                    store.setdefault(f"{key}/{var}", []).append(x.clone())


def _is_binary(h: torch.Tensor) -> bool:
    """All entries 0 or 1? On [0, 1], sum(x - x^2) = 0 iff every x is 0 or 1; three
    reductions instead of elementwise comparisons."""
    if h.dtype == torch.bool:
        return True
    if h.device.type == "meta":                # shapes without values (the device tests)
        return False
    lo, hi = torch.aminmax(h)
    if lo < 0 or hi > 1:
        return False
    f = h.reshape(-1).to(torch.float64) if h.dtype != torch.float64 else h.reshape(-1)
    return bool(f.sum() == torch.dot(f, f))


def _spike_matmul(x: torch.Tensor, w: torch.Tensor, path: str, crossbar) -> torch.Tensor:
    """``x @ w`` for a mostly-zero ``x``: gathers the rows of ``w`` of the nonzero entries
    when sparse (the crossbar's rule, :meth:`Crossbar.event_density`), a dense matmul otherwise."""
    if path == "dense" or crossbar is None or (path == "auto" and x.device.type != "cpu"):
        return x @ w            # (an accelerator reads dense: a gather pays off only on a CPU)
    if path == "auto" and int(_count_nonzero(x)) > crossbar.event_density(w.shape[1]) * x.numel():
        return x @ w
    ev = x.nonzero()
    vec, row = ev[:, 0], ev[:, 1]
    counts = torch.bincount(vec, minlength=x.shape[0])
    offsets = torch.zeros_like(counts)
    offsets[1:] = torch.cumsum(counts[:-1], 0)
    return nn.functional.embedding_bag(row, w, offsets, mode="sum", per_sample_weights=x[vec, row])


def encoder_for(kind: str, x: torch.Tensor, steps: int, seed: int = 0, p_max: float = 1.0):
    """A chunk encoder ``(t0, t1) -> [t1 - t0, batch, n]`` for :meth:`Simulator.run`.

    Rate spikes are drawn step by step from one generator, so any chunking gives the same
    spikes as :func:`neurosal.coding.rate` with the same seed; ``'rate-events'`` draws the
    run's address events at once (:func:`neurosal.coding.rate_events`) and hands out windows.
    """
    if kind not in coding.ENCODERS:
        raise ValueError(f"unknown encoder {kind!r}; allowed: {', '.join(coding.ENCODERS)}")
    coding._check_x(x)
    g = Generators(seed).get(x.device)           # the CPU stream as ever; one on x's device
    state = {"next": 0}
    if kind == "rate-events":           # the whole run as address events (memory ~ spikes)
        ev = coding.rate_events(x, steps, p_max=p_max, generator=g)
        return ev.window

    def get(t0: int, t1: int) -> torch.Tensor:
        if kind == "direct":
            return coding.direct(x, t1 - t0)
        if kind == "latency":
            k = torch.floor((1 - x) * steps).long()
            t = torch.arange(t0, t1, device=x.device).view(-1, 1, 1)
            return (t == k.unsqueeze(0)).to(x.dtype)
        if t0 != state["next"]:
            raise ValueError("the rate encoder produces chunks in order")
        state["next"] = t1
        return coding.rate(x, t1 - t0, p_max=p_max, generator=g)

    get.spikes = kind != "direct"
    return get
