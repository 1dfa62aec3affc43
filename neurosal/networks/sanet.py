r"""SAnet (SALMON): an analog ResNet backbone on crossbars with attachable digital attention.

Every convolution and the classifier live on crossbars (:class:`~neurosal.crossbar.AnalogConv2d`,
:class:`~neurosal.crossbar.AnalogLinear`); batch normalization (a per-column digital gain and
offset), residual adds and pooling are in the periphery; attention blocks
(:mod:`neurosal.coprocessor`) run on the co-processor after the residual stages they are
attached to.

Rate coding (``T = 1``): activations are the bounded rate :math:`\min(\max(x, 0), 1)`.

Spike coding (``T`` steps, :meth:`SAnet.forward` with ``coding='spike'``): Bernoulli input
spikes each step; every conv output (after its BN) drives LIF neurons (norse's LIF-box step,
surrogate gradients, BPTT); residual blocks add spikes element-wise (SEW-ResNet ``ADD``: the
next array sees 0, 1 or 2 per row, through its DAC). **What the attention sees in spike
mode:** the spike map of the current step after its stage; its gate (in (0, 1)) scales that
map, so the next stage receives analog values. The classifier's output currents are averaged
over the ``T`` steps and scaled by ``spike_logit_scale`` (the logits).

Spike mode runs layer by layer, like :class:`~neurosal.engine.Simulator`: each array reads
all ``T`` steps of its input in one call (the reads, conversions and noise draws of ``T``
calls), batch normalization sees time and batch together (tdBN, Zheng et al. 2021), and the
layer's LIF neurons then step through time.

Where a block sits (``position``): ``'stage'`` gates the stage's output (after its last
residual add and activation: what the next stage reads); ``'residual'`` gates the last block's
residual branch after its batch norm and before the add, as in SE-ResNet (Hu et al. 2018), so
its per-channel gain in (0, 1) acts on the analog convolution's output while the identity
path passes untouched.

Attachment strategies: ``attach`` names the stages (1-based) that get a block;
:meth:`SAnet.detach` switches blocks off after training (the backbone then runs alone, no
digital work); :meth:`SAnet.attach` switches them on again.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`, :mod:`neurosal.coprocessor`,
:mod:`neurosal.engine`, :mod:`neurosal.accel`.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ..accel import Generators
from ..coprocessor import CoProcessor, NumberFormat, make_attention
from ..crossbar import AnalogConv2d, AnalogLinear, analog_layers
from ..engine import ChipNetwork, Component, RunResult, Simulator
from ..neurons import LIFNeurons, LIFParameters, RateNeurons

__all__ = ["SAnet", "BasicBlock", "FrozenBatchNorm2d"]


def _act(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0)


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch normalization folded into a fixed per-channel gain and offset, as on a chip
    without a digital batch-norm unit: ``(x - mean) / sqrt(var + eps)`` with the statistics of
    one calibration read of the fresh chip (:func:`~neurosal.engine.calibrate_batch_norm`, which
    runs the network in training mode with ``momentum = None``: the only time this module
    computes batch statistics), then never trained (no affine parameters) and never updated."""

    frozen = True

    def __init__(self, channels: int):
        super().__init__(channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.momentum is None:        # the calibration read
            return super().forward(x)
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)


def _norm(channels: int, kind: str) -> nn.Module:
    return FrozenBatchNorm2d(channels) if kind == "frozen" else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """Two 3x3 analog convolutions with BN and a residual add (1x1 analog projection when the
    shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, xbar: dict, seed: int, batch_norm: str = "digital"):
        super().__init__()
        self.conv1 = AnalogConv2d(cin, cout, 3, stride=stride, padding=1, bias=False, seed=seed, **xbar)
        self.bn1 = _norm(cout, batch_norm)
        self.conv2 = AnalogConv2d(cout, cout, 3, stride=1, padding=1, bias=False, seed=seed + 1, **xbar)
        self.bn2 = _norm(cout, batch_norm)
        self.local = False       # DFA: no error through the identity shortcut either
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(AnalogConv2d(cin, cout, 1, stride=stride, bias=False, seed=seed + 2, **xbar),
                                       _norm(cout, batch_norm))

    def forward(self, x, act=lambda key, v: _act(v), gate=None):
        """Rate mode; ``act(key, value)`` is the periphery's activation of the conv ``key``;
        ``gate``: an attention block on the residual branch (SE-ResNet), before the add."""
        out = act("conv1", self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if gate is not None:
            out = gate(out)
        sc = (x.detach() if self.local else x) if self.short is None else self.short(x)
        return act("conv2", out + sc)

    def forward_spike(self, x, neuron, gate=None):
        """Spike mode, all ``T`` steps of the layer at once: ``x`` is ``[T*B, C, H, W]`` (time
        major) and ``neuron(key, current)`` runs the LIF neurons of the conv ``key`` through the steps."""
        z1 = neuron("conv1", self.bn1(self.conv1(x)))
        c2 = self.bn2(self.conv2(z1))
        z2 = neuron("conv2", gate(c2) if gate is not None else c2)
        sc = x if self.short is None else neuron("short.0", self.short(x))
        return z2 + sc                                   # spike-element-wise ADD


class SAnet(ChipNetwork, nn.Module):
    """ResNet-``depth`` (``depth = 6n + 2``: 3 stages of ``n`` basic blocks, widths ``w, 2w, 4w``)
    on crossbars, with ``attention`` ('se', 'cbam' or None) after the stages in ``attach``."""

    stage_count = 3

    def __init__(self, depth: int = 8, width: int = 16, *, input_shape=(3, 32, 32), classes: int = 10,
                 attention: Optional[str] = None, attach: Sequence[int] = (1, 2, 3), device="ideal",
                 seed: int = 0, xbar: Optional[dict] = None, number_format: NumberFormat = NumberFormat(),
                 coding: str = "rate", steps: int = 8, lif: LIFParameters = LIFParameters(alpha=10.0),
                 dt: float = 1e-3, spike_logit_scale: float = 4.0, position: str = "stage",
                 batch_norm: str = "digital"):
        super().__init__()
        if batch_norm not in ("digital", "frozen"):
            raise ValueError(f"batch_norm must be 'digital' or 'frozen', got {batch_norm!r}")
        self.batch_norm = batch_norm
        if position not in ("stage", "residual"):
            raise ValueError(f"attention position must be 'stage' or 'residual', got {position!r}")
        self.position = position
        if coding not in ("rate", "spike"):
            raise ValueError(f"SAnet runs rate- or spike-coded, got coding {coding!r}")
        self.coding, self.steps, self.lif, self.dt = coding, int(steps), lif, float(dt)
        self.spike_logit_scale = float(spike_logit_scale)
        # the neuron populations' models: LIF stepped exactly as in training (no fused update)
        self._lif_neurons = LIFNeurons(lif, dt=dt, fused=False)
        self._rate_neurons = RateNeurons()
        #: neuron work per analog layer (module name): [updates, spikes], cumulative
        self.neuron_counts: dict[str, list[int]] = {}
        #: set by the DFA rule: every layer's output (after its activation) and every attention
        #: block's output, by name, for the layer-local feedback
        self._capture: Optional[dict] = None
        #: set by Grad-CAM (:mod:`neurosal.gradcam`): each stage's output as the next stage
        #: sees it (after its attention block when one is attached), by stage number
        self._stage_outputs: Optional[dict] = None
        self._spike_gens = Generators(seed + 4099)      # input spikes, on the data's device
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 >= 8 (8, 14, 20, ...), got {depth}")
        bad = [s for s in attach if s not in (1, 2, 3)]
        if bad:
            raise ValueError(f"attach stages must be among 1, 2, 3, got {bad}")
        n = (depth - 2) // 6
        xbar = dict(device=device, **(xbar or {}))
        c_in = input_shape[0]
        self.input_shape, self.classes, self.depth, self.width = tuple(input_shape), classes, depth, width
        self.coprocessor = CoProcessor(number_format)
        self.stem = AnalogConv2d(c_in, width, 3, padding=1, bias=False, seed=seed, **xbar)
        self.bn = _norm(width, batch_norm)
        stages, cin, s = [], width, seed + 10
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (b == 0 and i > 0) else 1, xbar, s, batch_norm))
                cin, s = cout, s + 10
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.attention_kind = attention
        self.attn = nn.ModuleDict()
        with torch.random.fork_rng(devices=[]):          # seeded digital init, global RNG untouched
            torch.manual_seed(seed + 977)
            for st in attach:
                blk = make_attention(attention, (width, 2 * width, 4 * width)[st - 1], self.coprocessor)
                if blk is not None:
                    blk.tag = f"attn.{st}"
                    self.attn[str(st)] = blk
        self.attached = set(int(k) for k in self.attn)
        self.fc = AnalogLinear(4 * width, classes, device=device, seed=s, **{k: v for k, v in xbar.items()
                                                                           if k != "device"})

    def _gate(self, stage: int, block: int):
        """The attention block on the residual branch of block ``block`` of ``stage`` (position
        'residual': the stage's last block), or None."""
        if self.position != "residual" or stage not in self.attached or block != len(self.stages[stage - 1]) - 1:
            return None
        return self.attn[str(stage)]

    def attach(self, stages: Optional[Iterable[int]] = None) -> None:
        """Switch attention on at ``stages`` (default: every stage that has a block)."""
        self.attached = set(int(k) for k in self.attn) if stages is None else {int(s) for s in stages} & \
            set(int(k) for k in self.attn)

    def detach(self) -> None:
        """Run the backbone alone: no attention, no digital work."""
        self.attached = set()

    # -- the chip-network protocol ------------------------------------------------------------
    def attention_blocks(self) -> dict:
        return {int(k): blk for k, blk in self.attn.items()}

    def attention_state(self) -> list:
        return sorted(int(v) for v in self.attached)

    def check_feedback(self) -> None:
        """Raise a named error unless layer-local direct feedback can reach every layer."""
        if self.position == "residual" and self.attn:
            raise ValueError("dfa supports attention blocks at the stage output (attention_position = 'stage'), "
                             "not on the residual branch")
        if self.coding != "rate":
            raise ValueError("dfa is implemented for rate coding (--coding rate) of MLPs and SAnet/ResNet")

    @contextlib.contextmanager
    def stage_outputs(self):
        """While inside, each residual stage's output as the next stage sees it (after its
        attention block when one is attached) is kept in the yielded dict, by stage number."""
        outs: dict = {}
        self._stage_outputs = outs
        try:
            yield outs
        finally:
            self._stage_outputs = None

    @contextlib.contextmanager
    def feedback_taps(self):
        """For direct feedback alignment: while inside, every convolution's activated output and
        every attention block's output is captured by name into the yielded dict, and no error
        passes from layer to layer (every array's input and every identity shortcut detached)."""
        self.check_feedback()
        cap: dict = {}
        layers = analog_layers(self)
        blocks = [blk for stage in self.stages for blk in stage]
        self._capture = cap
        for m in layers:
            m.local_input = True
        for m in blocks:
            m.local = True
        try:
            yield cap
        finally:
            self._capture = None
            for m in layers:
                m.local_input = False
            for m in blocks:
                m.local = False

    # -- the engine ---------------------------------------------------------------------------
    def components(self) -> dict:
        """What a probe can name: every neuron population, by the name of the convolution that
        drives it (spikes, membrane potential and input current in spike coding; the
        activation's input in rate coding, where a shortcut projection is added to its block's
        output before ``conv2``'s activation and so is no population of its own), every attention block (``attn.<stage>``: its gate
        values per channel) and the classifier (``fc``: its output currents per step)."""
        pop = ("spikes", "v", "current") if self.coding == "spike" else ("v", "current")
        _, h, w = self.input_shape
        out = {"stem": Component(pop, (self.width, h, w))}
        for i, stage in enumerate(self.stages):
            for j, blk in enumerate(stage):
                stride = int(blk.conv1.stride)
                h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
                shape = (blk.conv1.out_channels, h, w)
                p = f"stages.{i}.{j}."
                out[p + "conv1"] = Component(pop, shape)
                out[p + "conv2"] = Component(pop, shape)
                if blk.short is not None and self.coding == "spike":   # rate: the projection adds unactivated
                    out[p + "short.0"] = Component(pop, shape)
        widths = (self.width, 2 * self.width, 4 * self.width)
        out.update({f"attn.{k}": Component(("gate",), (widths[k - 1],)) for k in sorted(int(k) for k in self.attn)})
        out["fc"] = Component(("current",), (self.classes,))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (``[B, C, H, W]`` or flat ``[B, C*H*W]``), through the engine: one
        chunk of ``T`` steps (rate coding: one step of direct input; spike coding: Bernoulli
        input spikes drawn from the network's stream)."""
        if x.dim() == 2:
            x = x.reshape(-1, *self.input_shape)
        if self.coding == "spike":
            T = self.steps
            inputs = (torch.rand((T,) + tuple(x.shape), generator=self._spike_gens.get(x.device), dtype=x.dtype,
                                 device=x.device) < x).to(x.dtype)                          # Bernoulli spikes
        else:
            T, inputs = 1, x.unsqueeze(0)
        return Simulator(self, dt=self.dt, chunk=T).run(inputs, steps=T, spikes_in=self.coding == "spike").scores

    def _attend(self, run, stage: int, blk, h: torch.Tensor) -> torch.Tensor:
        """Attention block ``blk`` of ``stage`` on ``h``; its gate values are a probe ``attn.<stage>``."""
        name = f"attn.{stage}"
        want = run.wants(name, "gate")
        blk.keep_gate = want
        out = blk(h)
        if want:
            g = blk.gate
            run.emit(name, {"gate": g.reshape(run.K, run.B, -1)}, shape=tuple(g.shape[1:]))
            blk.gate = None
        return out

    def step(self, run, h: torch.Tensor, spikes: bool) -> None:
        """One chunk of ``K`` steps (see :class:`~neurosal.engine.Run`): layer by layer, every
        array reads all ``K`` steps of its input in one call (the reads, conversions and noise
        draws of ``K`` calls); batch normalization sees the chunk's time and batch together (tdBN,
        Zheng et al. 2021, over all ``T`` when the chunk is the run, as in training); each
        population's neurons then step through the chunk."""
        K, B = run.K, run.B
        x = h.reshape(K * B, *self.input_shape)
        counts = self.neuron_counts
        if self.coding == "spike":
            lif = self._lif_neurons

            def neuron(key, current):
                return run.population(key, lif, current, counts=counts)
            h = neuron("stem", self.bn(self.stem(x)))
            for i, stage in enumerate(self.stages, start=1):
                for j, blk in enumerate(stage):
                    g = self._gate(i, j)
                    h = blk.forward_spike(h, lambda key, c, p=f"stages.{i - 1}.{j}.": neuron(p + key, c),
                                          gate=None if g is None else (lambda v, i=i, g=g: self._attend(run, i, g, v)))
                if i in self.attached and self.position == "stage":
                    h = self._attend(run, i, self.attn[str(i)], h)    # per step: each step's map is its own sample
        else:
            cap = self._capture
            rate = self._rate_neurons

            def act(key, v):
                out = run.population(key, rate, v, counts=counts)
                if cap is not None:
                    cap[key] = out
                return out
            h = act("stem", self.bn(self.stem(x)))
            for i, stage in enumerate(self.stages, start=1):
                for j, blk in enumerate(stage):
                    g = self._gate(i, j)
                    h = blk(h, lambda key, v, p=f"stages.{i - 1}.{j}.": act(p + key, v),
                            gate=None if g is None else (lambda v, i=i, g=g: self._attend(run, i, g, v)))
                if i in self.attached and self.position == "stage":
                    h = self._attend(run, i, self.attn[str(i)], h if cap is None else h.detach())
                    if cap is not None:
                        cap[f"attn.{i}"] = h
                if self._stage_outputs is not None:
                    self._stage_outputs[i] = h
        out = self.fc(h.mean((2, 3))).reshape(K, B, -1)      # global average pool (periphery), classifier
        if run.wants("fc"):
            run.emit("fc", {"current": out})
        a = run.acc
        if "first" not in a:
            a["first"], a["sum"] = out, out.sum(0)
        else:
            a["first"], a["sum"] = None, a["sum"] + out.sum(0)

    def finish(self, run) -> RunResult:
        """Logits: the classifier's output (rate), or its currents averaged over the ``T`` steps
        times ``spike_logit_scale`` (spike)."""
        a = run.acc
        if self.coding != "spike":
            return RunResult(scores=a["first"][0] if a["first"] is not None else a["sum"])
        mean = a["first"].mean(0) if a["first"] is not None else a["sum"] / run.steps
        return RunResult(scores=self.spike_logit_scale * mean)
