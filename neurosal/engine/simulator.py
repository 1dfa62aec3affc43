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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .. import coding
from ..accel import Generators, tally
from ..crossbar import Counters
from ..crossbar.periphery import count_nonzero as _count_nonzero
from ..progress import bar as progress_bar

__all__ = ["Probe", "RunResult", "Simulator", "VARIABLES", "DECODERS", "encoder_for"]

VARIABLES = ("spikes", "v", "current", "gate")
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
    spike_counts: Optional[torch.Tensor] = None     # [batch, n_out] output spikes per neuron
    max_v: Optional[torch.Tensor] = None            # [batch, n_out] largest membrane potential
    first_spike: Optional[torch.Tensor] = None      # [batch, n_out] first spike step (inf: none)
    steps: int = 0
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


class Run:
    """One run of the engine, as a network's :meth:`step` sees it: the chunk being stepped
    (``t0``, ``K`` steps, ``B`` samples), the state of every neuron population between chunks,
    the probes, and where recorded data go.

    A network describes one chunk of its graph in ``step(run, h)``: its crossbars read
    (``[K*B, ...]``: every (step, sample) of the chunk in one call), its periphery and
    co-processor compute, and :meth:`population` steps each population of neurons through the
    chunk's ``K`` steps, keeping its state for the next chunk. What is probed is handed to the
    recorder (or kept in memory) by name: :meth:`population` (spikes, v, current),
    :meth:`emit` (any named signal), :meth:`spike_times` (charge-domain spike times).
    """

    def __init__(self, sim: "Simulator", pidx: dict, recorder, store: dict):
        self.sim, self.path, self.pidx, self.recorder, self.store = sim, sim.path, pidx, recorder, store
        self.t0, self.K, self.B, self.steps = 0, 0, 0, 0
        self.states: dict = {}
        #: per population: {"spikes": count (a tensor until read) or None for analog output}
        self.spikes: dict = {}
        self.paths: dict = {}
        #: what the network accumulates across chunks for its readout
        self.acc: dict = {}

    def wants(self, name: str, var: Optional[str] = None) -> bool:
        """Whether ``name`` (and its variable ``var``) is probed in this run."""
        return any(var is None or var in p.variables for p in self.pidx.get(name, ()))

    def population(self, name: str, neurons, current: torch.Tensor, *, counts: Optional[dict] = None,
                   keep_v: bool = False, flat: bool = True) -> torch.Tensor:
        """Step the neurons of population ``name`` through the chunk.

        ``current``: ``[K*B, *shape]`` (time major, ``flat``) or ``[K, B, n]``; what the
        neurons consume (see :mod:`neurosal.neurons.state`). Returns their output in the shape
        of ``current``. The population's state carries over to the next chunk; its neuron
        updates and spikes are added to ``counts[name]`` (``[updates, spikes]``) when given.
        """
        K, B = self.K, self.B
        shape = tuple(current.shape[1:]) if flat else tuple(current.shape[2:])
        # [K, B, *shape]: the neurons step elementwise, whatever the population's shape (a view
        # that keeps the population's own layout, so autograd sees the graph training always saw)
        cur = current.reshape(K, B, *shape) if flat else current
        keep_v = keep_v or self.wants(name, "v")
        st = self.states.get(name)
        if st is None:
            st = neurons.init_state(B, math.prod(shape), dtype=cur.dtype, device=cur.device)
            st = st._replace(**{k: getattr(st, k).reshape(B, *shape) for k in st._fields
                                if getattr(st, k) is not None})
        z, v, self.states[name] = neurons(cur, st, keep_v)
        spiking = neurons.spiking
        if spiking:
            n_sp = tally(z.detach().sum())              # spikes are 0/1: the sum counts them
            self.spikes[name] = self.spikes.get(name, 0) + n_sp
        else:
            self.spikes[name] = None
        if counts is not None:
            c = counts.setdefault(name, [0, 0])
            c[0] += cur.numel()                           # neuron updates (K per neuron and sample)
            if spiking:
                c[1] += n_sp
        if name in self.pidx:
            self.emit(name, {"spikes": z, "v": v, "current": cur}, shape=shape)
        return z.reshape(current.shape)

    def emit(self, name: str, data: dict, shape: Optional[tuple] = None) -> None:
        """Hand probed variables of component ``name`` (each ``[K, B, ...]``, or address events)
        to the recorder, or keep them in memory."""
        sim = self.sim
        sim._emit(self.pidx, name, data, self.t0, self.recorder, self.store, shape=shape)

    def spike_times(self, name: str, t: torch.Tensor, window: int) -> None:
        """Spike times ``t`` ``[B, *shape]`` of a charge-domain population, in units of one
        phase inside the population's own time window ``window`` (phase ``window`` of the run;
        ``t >= 1``: no spike in the phase). The population's spikes are counted in the run's
        events (a charge-domain neuron fires at most once per phase)."""
        if name != "input":
            self.spikes[name] = self.spikes.get(name, 0) + tally((t.detach() < 1.0).sum())
        for p in self.pidx.get(name, ()):
            if "spikes" not in p.variables:
                continue
            x = t.detach().reshape(t.shape[0], -1)
            if p.samples is not None:
                x = x[list(p.samples)]
            if self.recorder is not None:
                self.recorder.write_spike_times(name, x, window, shape=tuple(t.shape[1:]))
            else:
                self.store.setdefault(f"{name}/spike_times", []).append(x.clone())


class Simulator:
    """The one timestep engine: runs any network on the chip over ``steps`` time steps of
    ``dt`` seconds.

    A network says what one chunk of its graph does (``step(run, h)``, see :class:`Run`) and
    how its readout is decoded (``finish(run) -> RunResult``); the engine feeds it ``chunk``
    steps of input at a time (memory grows with ``chunk``, not with ``T``), keeps its neuron
    states between chunks, records its probes and counts its events. ``path`` is ``'auto'``
    (event-driven or dense reads by activity), ``'event'`` or ``'dense'``.
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
        comps = self.net.components()
        names = list(comps)
        out: dict = {}
        for p in probes:
            if isinstance(p.layer, int):
                if not -1 <= p.layer < len(names):
                    raise ValueError(f"probe layer index {p.layer} out of range (0..{len(names) - 1}, -1 = input)")
                key = "input" if p.layer == -1 else names[p.layer]
            elif p.layer == "input" or p.layer in comps:
                key = p.layer
            else:
                raise ValueError(f"probe {p.layer!r} names no component of the network; components: input, "
                                 f"{', '.join(names)}")
            allowed = ("spikes", "current") if key == "input" else comps[key].variables
            bad = [v for v in p.variables if v not in allowed]
            if bad:
                raise ValueError(f"probe {key!r}: variable(s) {', '.join(bad)} not recorded there; "
                                 f"{key} records {', '.join(allowed)}")
            out.setdefault(key, []).append(p)
        return out

    # ------------------------------------------------------------------ run
    def run(self, inputs: torch.Tensor | Callable[[int, int], torch.Tensor], *, steps: Optional[int] = None,
            spikes_in: Optional[bool] = None, probes: Sequence[Probe] = (), recorder=None,
            progress: bool = False) -> RunResult:
        """Run the network.

        ``inputs``: an encoded tensor ``[T, batch, ...]`` (``[T, batch, n_in]`` for a chain),
        address events, or a function ``(t0, t1) -> [t1 - t0, batch, ...]`` that encodes a
        chunk on demand (flat memory for long runs; then ``steps`` is required). ``spikes_in``
        says whether the inputs are binary spikes (default: detected from the first chunk).
        """
        n_in = getattr(self.net, "n_in", None)
        if isinstance(inputs, coding.SpikeEvents):
            if n_in is not None and inputs.n != n_in:
                raise ValueError(f"input events address {inputs.n} neurons, the network takes {n_in}")
            steps = inputs.steps if steps is None else steps
            get = inputs.window
        elif callable(inputs) and not isinstance(inputs, torch.Tensor):
            if steps is None:
                raise ValueError("steps is required when inputs is a function")
            get = inputs
        else:
            if inputs.dim() < 3 or (n_in is not None and (inputs.dim() != 3 or inputs.shape[2] != n_in)):
                raise ValueError(f"inputs must be [T, batch, {n_in if n_in is not None else '...'}], "
                                 f"got {tuple(inputs.shape)}")
            steps = inputs.shape[0] if steps is None else steps
            if steps > inputs.shape[0]:
                raise ValueError(f"steps={steps} but inputs has only {inputs.shape[0]} steps")
            get = lambda t0, t1: inputs[t0:t1]                            # noqa: E731
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        net = self.net
        run = Run(self, self._probe_index(probes), recorder, {})
        run.steps = steps
        # the run's crossbar events: a Counters per array listening while the run lasts (read only
        # if someone looks at RunResult.events: no read-back of an accelerator's counts otherwise)
        units = list(net.analog_units())
        taps = {name: Counters() for name, _ in units}
        xbs = {name: m.crossbar for name, m in units}
        for name, xb in xbs.items():
            xb.counters._listeners.append(taps[name])
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
                run.t0, run.K, run.B = t0, K, B
                if "input" in run.pidx and not getattr(net, "records_input", False):
                    run.emit("input", {"spikes": h} if spikes_in else {"current": h},
                             shape=getattr(net, "input_shape", None))
                net.step(run, h, spikes_in)
                bar.update(t1 - t0)
        finally:
            bar.close()
            for name, xb in xbs.items():
                lst = xb.counters._listeners
                lst[:] = [t for t in lst if t is not taps[name]]
        res = net.finish(run)
        ev = {name: {"spikes": run.spikes.get(name)} for name in run.spikes}
        for name, _ in units:
            ev.setdefault(name, {"spikes": None})
        res.steps = steps
        res.events = _RunEvents(ev, taps, xbs)
        res.probes = {k: torch.cat(v, 0) for k, v in run.store.items()}
        res.paths = run.paths
        return res

    def _emit(self, pidx, key, data, t0, recorder, store, shape=None):
        for p in pidx.get(key, ()):
            for var in p.variables:
                x = data.get(var)
                if x is None:
                    continue
                if isinstance(x, coding.SpikeEvents):
                    if recorder is not None and hasattr(recorder, "write_events"):
                        _declare(recorder, key, x.n, shape)
                        recorder.write_events(key, t0, x if p.samples is None else x.select(p.samples))
                        continue
                    x = x.to_dense()
                if x.dim() > 3:                               # a population with a shape: flat ids
                    x = x.reshape(x.shape[0], x.shape[1], -1)
                if p.samples is not None:
                    x = x[:, list(p.samples)]
                x = x.detach()
                if recorder is not None:
                    _declare(recorder, key, x.shape[2], shape)
                    recorder.write(key, var, t0, x)
                else:
                    store.setdefault(f"{key}/{var}", []).append(x.clone())


def _declare(recorder, name: str, n: int, shape) -> None:
    """Make sure the recorder knows population ``name`` (``n`` neurons, of ``shape``)."""
    add = getattr(recorder, "add_population", None)
    if add is not None:
        add(name, n, shape)


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
