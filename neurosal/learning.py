r"""On-chip learning rules. Every rule ends in pulses applied by the device model; weights are
never set directly (except by ``verify``, which pays for it in pulses and verify reads).

* ``bp`` — backpropagation (BPTT through the spiking engine, surrogate gradients) with errors
  read back through the arrays (transposed reads), then
  :math:`n = R(-\eta\,\partial L/\partial w / \Delta w_{min})` push-pull pulses per cell,
  :math:`R` = deterministic or stochastic rounding (:class:`~neurosal.crossbar.PulseSGD`).
* ``dfa`` — direct feedback alignment (Nøkland 2016; on CIM: Wolters et al. 2023): the output
  error :math:`e = \mathrm{softmax}(y) - \mathrm{onehot}` reaches hidden layer :math:`l`
  through a fixed random matrix, :math:`\delta_l = (e B_l) \odot f'(a_l)`, and every layer is
  updated at once from :math:`\Delta W_l = -\eta\, x_{l-1}^T \delta_l`.
* ``hybrid`` (Kwon et al., TNNLS 2025) — forward on the nonideal arrays; errors and updates
  computed off-array in full precision and accumulated per cell in a digital buffer
  :math:`b \mathrel{+}= -\eta\,\partial L/\partial w`. A cell is written when :math:`|b|`
  reaches what a pulse does at its present conductance on the device's *nominal* curve
  (nonlinearity and asymmetry compensated open loop); :math:`n = \lfloor |b|/\Delta_1 \rfloor`
  pulses go to the device of the pair with more headroom, with no verify read, and the buffer
  keeps :math:`b - \Delta_{nominal}(n)`.
* ``verify`` — train in software (ideal digital weights), then program the result into the
  arrays with write-and-verify (:meth:`~neurosal.crossbar.Crossbar.program`), counting its
  pulses and verify reads: the baseline hybrid training avoids.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from . import coding as coding_mod
from .accel import all_finite
from .cost import COMPONENTS, PHASES, Ledger, cost_report, phase
from .crossbar import AnalogLinear, PulseError, PulseSGD, analog_layers, calibrate_adc
from .neurons import RateNeurons
from .progress import bar as progress_bar
from .simulator import Network, Simulator, encoder_for

__all__ = ["RULES", "BP", "DFA", "Hybrid", "HybridController", "Verify", "make_rule", "forward", "evaluate", "train",
           "calibrate", "crossbars"]

RULES = ("bp", "dfa", "hybrid", "verify")

#: logits per unit of membrane potential in spike codings (membranes live in threshold
#: units, O(1), too flat for a softmax)
LOGIT_SCALE = 10.0


def forward(net: Network, x: torch.Tensor, *, coding: str, steps: int, seed: int = 0):
    """Run ``net`` on ``x`` (``[batch, features]`` in [0, 1]); returns the :class:`RunResult`.

    ``rate``: one step of direct analog input; ``spike``: Bernoulli spikes for ``steps``;
    ``latency``: one spike per input at ``t = 1 - x``.
    """
    if not isinstance(net, Network):            # a module (SAnet, ChargeMLP): logits directly
        from types import SimpleNamespace
        return SimpleNamespace(scores=net(x))
    if coding == "rate":
        return Simulator(net, chunk=1).run(coding_mod.direct(x, 1))
    enc = "rate" if coding == "spike" else "latency"
    return Simulator(net, chunk=steps).run(encoder_for(enc, x, steps, seed=seed), steps=steps)


def _loss_scores(res, coding: str, net=None) -> torch.Tensor:
    # rate, or a leaky-integrator readout: the decoded scores; a spiking readout: spike counts
    # plus the membrane maximum, which carries a gradient while the output is still silent
    if coding == "rate" or not isinstance(net, Network):      # modules return logits
        return res.scores
    if getattr(net, "decoder", None) == "max_membrane":
        return res.scores * LOGIT_SCALE
    return res.spike_counts + res.max_v * LOGIT_SCALE


@torch.no_grad()
def evaluate(net: Network, x: torch.Tensor, y: torch.Tensor, *, coding: str, steps: int, batch: int = 512,
             seed: int = 0) -> float:
    """Test accuracy with the network's decoder (batch norm in inference mode)."""
    correct = 0
    was = net.training
    net.eval()
    dev = _device_of(net)
    try:
        for i in range(0, len(y), batch):
            res = forward(net, x[i:i + batch].to(dev), coding=coding, steps=steps, seed=seed + i)
            correct = correct + (res.scores.argmax(1) == y[i:i + batch].to(dev)).sum()   # read once, at the end
    finally:
        net.train(was)
    return int(correct) / max(1, len(y))


def _device_of(net) -> torch.device:
    """The torch device the network's chip lives on."""
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def crossbars(net) -> list:
    """Every crossbar of ``net`` (a simulator :class:`Network` or an analog module)."""
    if isinstance(net, Network):
        return [layer.crossbar for layer in net.layers if layer.crossbar is not None]
    return [m.crossbar for m in analog_layers(net)]


@torch.no_grad()
def calibrate(net, x: torch.Tensor, *, coding: str, steps: int, quantile: float = 0.999, seed: int = 0) -> list:
    """Calibrate every array's forward ADC range on the inputs ``x`` (see
    :func:`~neurosal.crossbar.calibrate_adc`), in the network's present mode; batch-norm
    running statistics are left as they were. The reads are counted like any others."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    try:
        return calibrate_adc(crossbars(net), lambda: forward(net, x, coding=coding, steps=steps, seed=seed),
                             quantile=quantile)
    finally:
        for m, (a, b, c) in zip(bns, saved):
            m.running_mean.copy_(a), m.running_var.copy_(b), m.num_batches_tracked.copy_(c)


def _backprop_step(net, opt, x, y, *, coding: str, steps: int, seed: int) -> float:
    """Forward, cross-entropy, backward, then ``opt`` (pulses for analog weights)."""
    opt.zero_grad()
    with phase("forward"):
        res = forward(net, x, coding=coding, steps=steps, seed=seed)
        loss = nn.functional.cross_entropy(_loss_scores(res, coding, net), y)
    with phase("backward"):
        loss.backward()
    with phase("update"):
        opt.step()
    return loss.detach()


# ============================================================================ rules
class BP:
    """Surrogate-gradient backprop through the arrays; pulses by :class:`PulseSGD`."""

    name = "bp"

    def __init__(self, net: Network, *, lr: float, rounding: str = "stochastic", seed: int = 0, max_pulses: int = 64):
        self.net = net
        self.opt = PulseSGD(net.parameters(), lr=lr, rounding=rounding, seed=seed, max_pulses=max_pulses)

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        return _backprop_step(self.net, self.opt, x, y, coding=coding, steps=steps, seed=seed)

    def state_dict(self) -> dict:
        return {"generator": self.opt._gens.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        g = sd["generator"]
        self.opt._gens.load_state_dict(g if isinstance(g, dict) else {"states": {"cpu": g}})


class DFA(BP):
    r"""Direct feedback alignment: fixed random feedback, all layers updated at once.

    Rate coding (the ``T = 1`` limit, bounded activation ``f = clamp(., 0, 1)``,
    :math:`f' = 1` inside (0, 1)). The output error :math:`e = p - y` reaches every hidden
    layer through its own fixed random matrix :math:`B_l` (no error passes back through the
    arrays): :math:`\delta_l = (e B_l) \odot f'(a_l)`.

    For an MLP (:class:`Network`) that is the whole rule. For SAnet / ResNet (rate coding),
    the "layer" is each convolution's activated output and each attention block's output:
    :math:`e B_l` is given to that output and back-propagated *locally* (through its
    activation, batch norm and, for a block's second conv, its projection shortcut) to the
    layer's own weights; every array's input is detached, so nothing crosses from layer to
    layer (Nøkland 2016 for convolutional layers). The classifier gets the true error.
    """

    name = "dfa"

    def __init__(self, net, *, lr: float, rounding: str = "stochastic", seed: int = 0, max_pulses: int = 64):
        super().__init__(net, lr=lr, rounding=rounding, seed=seed, max_pulses=max_pulses)
        self._module = not isinstance(net, Network)
        if self._module:
            if getattr(net, "position", "stage") == "residual" and getattr(net, "attn", None):
                raise ValueError("dfa supports attention blocks at the stage output (attention_position = 'stage'), "
                                 "not on the residual branch")
            if not hasattr(net, "_capture") or getattr(net, "coding", "rate") != "rate":
                raise ValueError("dfa is implemented for rate coding (--coding rate) of MLPs and SAnet/ResNet")
            self._gen = torch.Generator(device="cpu").manual_seed(seed + 4242)
            self.feedback: dict = {}
            return
        if not all(isinstance(layer.neurons, RateNeurons) for layer in net.layers):
            raise ValueError("dfa is implemented for rate coding (--coding rate)")
        g = torch.Generator(device="cpu").manual_seed(seed + 4242)
        n_out = net.n_out
        # B_l: [n_out, n_l], scaled like a weight matrix of fan-in n_out; drawn on the CPU (the
        # same matrices on every accelerator), moved to the network's device when used
        self.feedback = [torch.randn(n_out, layer.n_out, generator=g, device="cpu") / math.sqrt(n_out)
                         for layer in net.layers[:-1]]

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self._module:          # the feedback matrices are drawn as their layers are first met
            sd["feedback_generator"] = self._gen.get_state()
            sd["feedback"] = {k: v.detach().cpu().clone() for k, v in self.feedback.items()}
        return sd

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        if self._module and "feedback_generator" in sd:
            self._gen.set_state(sd["feedback_generator"])
            self.feedback = dict(sd["feedback"])

    def _module_step(self, x, y) -> float:
        net = self.net
        self.opt.zero_grad()
        layers = analog_layers(net)
        blocks = [m for m in net.modules() if hasattr(m, "local")]
        cap: dict = {}
        net._capture = cap
        for m in layers + blocks:
            m.local_input = True
            m.local = True
        try:
            with phase("forward"):
                out = net(x)
        finally:
            net._capture = None
            for m in layers + blocks:
                m.local_input = False
                m.local = False
        with phase("backward"):
            B = len(y)
            e = (torch.softmax(out.detach(), 1) - nn.functional.one_hot(y, out.shape[1]).to(out.dtype)) / B
            modules = dict(net.named_modules())
            outs, grads = [out], [e]
            for key, h in cap.items():
                n = h[0].numel()
                fb = self.feedback.get(key)
                if fb is None or fb.shape[1] != n:
                    # scaled like a weight matrix of fan-in n_out, and by 1/sqrt(positions) for a
                    # feature map, whose weight gradient sums over its positions
                    pos = n // h.shape[1] if h.dim() == 4 else 1
                    fb = torch.randn(out.shape[1], n, generator=self._gen, device="cpu") / math.sqrt(
                        out.shape[1] * pos)
                    self.feedback[key] = fb
                if fb.device != out.device or fb.dtype != out.dtype:
                    fb = self.feedback[key] = fb.to(out.device, out.dtype)
                outs.append(h)
                grads.append((e @ fb).view_as(h))
                mod = modules.get(key)
                if mod is not None and hasattr(mod, "crossbar"):             # the projection is digital work
                    mod.crossbar.counters.add("digital_macs", B * fb.numel())
            torch.autograd.backward(outs, grads)
            loss = nn.functional.cross_entropy(out.detach(), y)
        with phase("update"):
            self.opt.step()
        return loss.detach()

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        if self._module:
            return self._module_step(x, y)
        self.opt.zero_grad()
        hs, acts = [x], []
        with torch.no_grad(), phase("forward"):
            h = x
            for layer in self.net.layers:
                a = layer.synapse(h)
                acts.append(a)
                layer.neuron_updates += a.numel()
                h = a.clamp(0, 1)
                hs.append(h)
        out = acts[-1]
        with torch.no_grad(), phase("backward"):
            p = torch.softmax(out, 1)
            e = p - nn.functional.one_hot(y, out.shape[1]).to(p.dtype)          # dL/dy of cross-entropy
            B = len(y)
            for li, layer in enumerate(self.net.layers):
                xb = layer.crossbar
                if li == len(self.net.layers) - 1:
                    delta = e
                else:
                    a = acts[li]
                    if self.feedback[li].device != e.device or self.feedback[li].dtype != e.dtype:
                        self.feedback[li] = self.feedback[li].to(e.device, e.dtype)
                    delta = (e @ self.feedback[li]) * ((a > 0) & (a < 1)).to(e.dtype)
                    if xb is not None:                   # the fixed random projection, digital
                        xb.counters.add("digital_macs", B * self.feedback[li].numel())
                syn = layer.synapse
                syn.weight.grad = delta.t() @ hs[li] / B
                if xb is not None:
                    xb.counters.add("digital_macs", B * syn.weight.numel())
                if syn.bias is not None:
                    syn.bias.grad = delta.mean(0)
            loss = nn.functional.cross_entropy(out, y)
        with phase("update"):
            self.opt.step()
        return loss.detach()


def _thresholds(device, u_p: torch.Tensor, u_m: torch.Tensor):
    """The smallest nominal one-pulse step to raise and to lower each weight from the estimates
    (a tiny positive number where neither device of the pair can move that way), elementwise."""
    # raising w: G+ up (travel u+) or G- down (travel 1 - u-); lowering: G+ down or G- up
    steps = (device.nominal_step(u_p, True), device.nominal_step(1 - u_m, False),
             device.nominal_step(1 - u_p, False), device.nominal_step(u_m, True))
    tiny = torch.finfo(u_p.dtype).tiny
    out = []
    for a, b in (steps[:2], steps[2:]):
        m = torch.minimum(torch.where(a > 0, a, math.inf), torch.where(b > 0, b, math.inf))
        out.append(torch.where(torch.isinf(m), tiny, m))
    return out


def _plan(device, max_pulses: int, b: torch.Tensor, u_p: torch.Tensor, u_m: torch.Tensor):
    """Plan the pulses for buffers ``b`` from estimates ``u_p, u_m`` (any shape, elementwise).

    Returns ``(use_plus, goes_up, n, moved, saturated)``: which device of each pair, whether it
    is potentiated, how many pulses, the nominal travel they make, and whether the pair is at
    the end of its range for this request."""
    raise_w = b > 0
    mag = b.abs()
    # the two candidates, as travel from the bound each leaves: raising w moves G+ up (from
    # Gmin: travel u+) or G- down (from Gmax: travel 1 - u-); lowering the reverse
    v_p = torch.where(raise_w, u_p, 1 - u_p)
    v_m = torch.where(raise_w, 1 - u_m, u_m)
    n_p, new_p = device.nominal_pulses(v_p, mag, raise_w, max_pulses)
    n_m, new_m = device.nominal_pulses(v_m, mag, ~raise_w, max_pulses)
    rem_p, rem_m = mag - (new_p - v_p), mag - (new_m - v_m)
    # best fit: the device whose pulses leave the smaller remainder; on a tie the one with
    # more room (G+ when raising with u+ + u- <= 1, lowering with u+ + u- >= 1)
    s = u_p + u_m
    more_room = torch.where(raise_w, s <= 1, s >= 1)
    use_plus = torch.where((rem_p - rem_m).abs() <= 1e-7, more_room, rem_p < rem_m)
    goes_up = raise_w == use_plus                       # the chosen device is potentiated
    n = torch.where(use_plus, n_p, n_m)
    moved = torch.where(use_plus, new_p - v_p, new_m - v_m)      # >= 0, nominal travel of n pulses
    # the end of the range: the request reaches past both devices' bounds and neither can
    # take one more pulse toward its bound
    saturated = (n_p == 0) & (n_m == 0) & (mag > 0) & (mag >= 1 - v_p) & (mag >= 1 - v_m)
    return use_plus, goes_up, n, moved, saturated


class HybridController:
    r"""The digital write controller of one array under the :class:`Hybrid` rule.

    State (digital, all on the controller; counted as buffer traffic): the update buffer
    ``buffer`` ``[rows, cols]`` (weight units), the estimates ``estimate`` ``[2, rows, cols]``
    of both devices' normalized conductances on the card's nominal curve, and, derived from
    them, the write thresholds: the smallest nominal one-pulse step available to raise
    (``thresholds[0]``) and to lower (``-thresholds[1]``, kept negated) each weight, a tiny
    number where the pair cannot move that way at all. A step plans only the cells whose
    buffer reaches a threshold: the rest cannot be written and cost one comparison.
    """

    def __init__(self, xb, *, max_pulses: int = 16, estimate: Optional[torch.Tensor] = None):
        self.xb, self.max_pulses = xb, int(max_pulses)
        self.buffer = torch.zeros(xb.rows, xb.cols, dtype=xb.dtype, device=xb.torch_device)
        if estimate is None:
            if xb.pulsed:                      # written before: the controller must read it (counted)
                estimate = self.read_estimate(xb)
            else:                              # what the chip was initialized to, as requested
                w0 = xb.initial_weights
                estimate = torch.stack([(1 + w0) / 2, (1 - w0) / 2])
        self.estimate = estimate.to(xb.dtype).clone()
        self._retarget()

    @staticmethod
    def read_estimate(xb) -> torch.Tensor:
        """Estimates from a verify read of every pair (counted), through the nominal bounds."""
        card = xb.device.card
        return ((xb.verify_read() - card.g_min) / card.g_range).clamp(0, 1).to(xb.dtype)

    def follow(self) -> None:
        """Keep the controller's state on the array's device and dtype (after ``net.to(...)``)."""
        xb = self.xb
        if self.buffer.device != xb.torch_device or self.buffer.dtype != xb.dtype:
            self.buffer = self.buffer.to(xb.torch_device, xb.dtype)
            self.estimate = self.estimate.to(xb.torch_device, xb.dtype)
            self.thresholds = self.thresholds.to(xb.torch_device, xb.dtype)

    def _retarget(self) -> None:
        up, down = _thresholds(self.xb.device, self.estimate[0], self.estimate[1])
        self.thresholds = torch.stack([up, -down])

    def reanchor(self) -> None:
        """Readback: replace the estimates by what a (counted) read of the array shows."""
        self.estimate = self.read_estimate(self.xb)
        self._retarget()

    def plan(self, b: torch.Tensor, u_p: torch.Tensor, u_m: torch.Tensor):
        """:func:`_plan` with this array's device and pulse limit."""
        return _plan(self.xb.device, self.max_pulses, b, u_p, u_m)

    #: plan every cell instead of selecting the candidates by index (``None``: on an accelerator,
    #: where the selection would make the host wait for the data; sparse on a CPU). The plan
    #: of a cell below its thresholds is no pulse and no change, so both give the same writes.
    dense: Optional[bool] = None

    def _is_dense(self) -> bool:
        return self.dense if self.dense is not None else self.xb.torch_device.type != "cpu"

    def candidates(self):
        """Flat indices of the cells whose buffer reaches a write threshold (every cell in dense
        mode), and their buffer and estimates (counted as buffer traffic)."""
        buf, est = self.buffer, self.estimate
        hit = ((buf >= self.thresholds[0]) | (buf <= self.thresholds[1])).view(-1)
        # every cell: buffer read-modify-write and its two thresholds compared; a planned cell:
        # both estimates read, buffer, one estimate and both thresholds written
        self.xb.counters.add("buffer_accesses", 4 * buf.numel())
        if self._is_dense():
            self.xb.counters.add("buffer_accesses", hit.sum(), 6)
            idx = torch.arange(buf.numel(), device=buf.device)
            return idx, buf.view(-1), est[0].view(-1), est[1].view(-1), hit
        idx = hit.nonzero().squeeze(1)
        self.xb.counters.add("buffer_accesses", 6 * idx.numel())
        return idx, buf.view(-1)[idx], est[0].view(-1)[idx], est[1].view(-1)[idx], None

    def commit(self, idx, b, u_p, u_m, planned, thresholds, cand=None) -> int:
        """Keep the remainders and advanced estimates of the cells ``idx`` and send their pulses
        (sparse); ``planned`` is :func:`_plan`'s result for them; ``cand``: which of them reach a
        threshold (dense mode: the others keep their buffer exactly). Returns the pulses sent."""
        xb, rc = self.xb, self.buffer.numel()
        use_plus, goes_up, n, moved, saturated = planned
        b_new = (b - torch.copysign(moved, b)).masked_fill_(saturated, 0.0)
        b = b_new if cand is None else torch.where(cand, b_new, b)
        hit = n > 0
        dv = torch.where(goes_up, moved, -moved)           # change of the chosen device's u
        self.buffer.view(-1)[idx] = b
        self.estimate[0].view(-1)[idx] = u_p + dv * (hit & use_plus)
        self.estimate[1].view(-1)[idx] = u_m + dv * (hit & ~use_plus)
        self.thresholds[0].view(-1)[idx], self.thresholds[1].view(-1)[idx] = thresholds[0], -thresholds[1]
        xb.counters.add("clipped_cells", saturated.sum())
        # every candidate goes to the array (a cell without a pulse is left alone there): no
        # data-dependent selection, so nothing waits for an accelerator
        signed = torch.where(goes_up, n, -n) * hit
        # G+ devices first, then G-: ascending flat indices into [2, rows, cols]
        minus = (~use_plus).to(idx.dtype)
        order = torch.sort(minus, stable=True).indices
        flat = (idx + rc * minus)[order]
        return xb.apply_pulses_at(flat, signed[order], check=False, max_count=self.max_pulses)

    def write(self) -> int:
        """Turn the buffer into pulses: plan the cells whose buffer reaches a threshold, apply
        their pulses (sparse), keep the remainders. Returns the pulses sent."""
        return write_all([self])

def write_all(controllers) -> int:
    """Write several arrays' buffers: the candidates of all arrays whose device shares a card
    (and pulse limit) are planned together, one set of operations for all of them (the same
    plan as one array at a time, elementwise), then each array keeps its part and gets its
    pulses. Returns the pulses sent."""
    groups: dict = {}
    for c in controllers:
        groups.setdefault((c.xb.device.card, c.max_pulses), []).append(c)
    sent = 0
    for group in groups.values():
        parts = [c.candidates() for c in group]
        sizes = [int(p[0].numel()) for p in parts]
        if not any(sizes):
            continue
        dev, mp = group[0].xb.device, group[0].max_pulses
        b, u_p, u_m = (torch.cat([p[k] for p in parts]) for k in (1, 2, 3))
        planned = _plan(dev, mp, b, u_p, u_m)
        use_plus, goes_up, n, moved, _ = planned
        dv = torch.where(goes_up, moved, -moved) * (n > 0)
        thr = _thresholds(dev, u_p + dv * use_plus, u_m + dv * ~use_plus)
        splits = [torch.split(t, sizes) for t in (b, u_p, u_m, *planned, *thr)]
        for k, (c, p) in enumerate(zip(group, parts)):
            if sizes[k]:
                sb, sp, sm, *rest = (t[k] for t in splits)
                sent += c.commit(p[0], sb, sp, sm, tuple(rest[:5]), tuple(rest[5:]), cand=p[4])
    return sent


class Hybrid:
    r"""Kwon et al.'s hybrid rule: off-array updates, a digital buffer per cell, open-loop
    pulses from the device's nominal curve, no verify reads.

    The controller (:class:`HybridController`, one per array) knows only what a chip's
    digital side can know: the device card's nominal curve and what it did itself. Its state:

    * the update buffer :math:`b` per cell (weight units), :math:`b \mathrel{+}= -\eta\,
      \partial L/\partial w`;
    * an estimate :math:`\hat u^\pm` of each device's normalized conductance on the nominal
      curve. It starts at the state the chip was initialized to (``Crossbar.initial_weights``:
      :math:`\hat u^\pm = (1 \pm w_0)/2`; a chip that was written before the controller met it
      is read once, with counted verify reads) and advances by the pulses the controller
      sends, as the nominal curve says they act. It never sees true conductances or
      device-to-device draws, so C2C noise and variation make it drift from the truth.

    Write, per cell: to raise :math:`w` (:math:`b > 0`) move :math:`G^+` up or :math:`G^-`
    down, to lower it :math:`G^+` down or :math:`G^-` up. For each candidate the controller
    plans :math:`n \le` ``max_pulses`` pulses, the most whose nominal change does not exceed
    :math:`|b|` (closed form from its position on the nominal curve,
    :meth:`~neurosal.devices.Device.nominal_pulses`), and uses the one that leaves the smaller
    remainder (best fit: on a nonlinear curve one device of the pair usually has the finer
    step); on a tie, the one with more room in its direction, which keeps the pair's common
    mode near mid-range. :math:`b` keeps the remainder. A device at its bound is never pulsed
    further toward it.

    **Saturated pair.** When the request reaches past both devices' bounds and neither can
    take one more pulse toward it, the pair is at the end of its range (:math:`\hat w
    \approx \pm 1`: :math:`G^+` at its top and :math:`G^-` at its bottom, or the reverse). The
    request is dropped from the buffer, as a software weight clamp to [-1, 1] would, and
    counted (``Counters.clipped_cells``).

    **Readback** (``readback=K``, a separate option; off by default): every ``K`` steps the
    controller reads every pair (two verify reads per pair, counted with their row cycles
    and energy) and re-anchors its estimates to what it read, through the nominal bounds.
    """

    name = "hybrid"

    def __init__(self, net: Network, *, lr: float, seed: int = 0, max_pulses: int = 16, readback: int = 0, **_):
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if readback < 0:
            raise ValueError(f"readback must be >= 0 steps (0 = never), got {readback}")
        self.net, self.lr, self.max_pulses, self.readback = net, float(lr), int(max_pulses), int(readback)
        self.layers = analog_layers(net)
        for layer in self.layers:
            layer.digital_backward = True
        self.controllers = [HybridController(layer.crossbar, max_pulses=max_pulses) for layer in self.layers]
        self.steps = 0
        analog = {id(layer.weight) for layer in self.layers}
        self.digital = [p for p in net.parameters() if id(p) not in analog]

    @property
    def buffers(self) -> list:
        return [c.buffer for c in self.controllers]

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        for p in self.net.parameters():
            p.grad = None
        with phase("forward"):
            res = forward(self.net, x, coding=coding, steps=steps, seed=seed)
            loss = nn.functional.cross_entropy(_loss_scores(res, coding, self.net), y)
        with phase("backward"):
            loss.backward()
        with torch.no_grad(), phase("update"):
            # atomic: a NaN or infinite gradient changes nothing (chip, buffers, digital weights);
            # a sum is finite only if every term is
            # (one read-back for all gradients: the only wait for an accelerator in the step)
            grads = [p for p in list(self.digital) + [layer.weight for layer in self.layers] if p.grad is not None]
            if not all_finite([p.grad for p in grads]):
                for p in grads:
                    if not bool(torch.isfinite(p.grad).all()):
                        raise PulseError(f"a gradient of shape {tuple(p.shape)} is not finite (NaN or inf); "
                                         "nothing was written")
            for p in self.digital:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.lr)
            self.steps += 1
            for layer, ctl in zip(self.layers, self.controllers):
                ctl.follow()
                if self.readback and self.steps % self.readback == 0:
                    ctl.reanchor()
                if layer.weight.grad is not None:
                    ctl.buffer.add_(layer.weight.grad.t(), alpha=-self.lr / layer.weight_scale)   # weight units
            write_all(self.controllers)
        return loss.detach()

    def state_dict(self) -> dict:
        return {"buffers": [c.buffer.detach().cpu().clone() for c in self.controllers],
                "estimates": [c.estimate.detach().cpu().clone() for c in self.controllers], "steps": self.steps}

    def load_state_dict(self, sd: dict) -> None:
        for c, b in zip(self.controllers, sd["buffers"]):
            c.follow()
            c.buffer.copy_(b)
        for c, e in zip(self.controllers, sd.get("estimates", [])):
            c.estimate.copy_(e)
            c._retarget()
        self.steps = int(sd.get("steps", 0))


class Verify:
    """Software training, then write-and-verify programming (pulses and verify reads counted)."""

    name = "verify"

    def __init__(self, net: Network, *, lr: float, seed: int = 0, tolerance: float = 0.02, **_):
        self.net, self.lr, self.tolerance = net, float(lr), float(tolerance)
        self.layers = analog_layers(net)
        self.soft = []
        for layer in self.layers:
            if not isinstance(layer, AnalogLinear):
                raise ValueError("verify supports fully connected analog layers")
            w = nn.Parameter(layer.crossbar.weights().clone() * layer.weight_scale)     # [in, out]
            layer.software_weight = w
            self.soft.append(w)
        skip = {id(layer.weight) for layer in self.layers} | {id(w) for w in self.soft}
        self.opt = torch.optim.SGD([p for p in net.parameters() if id(p) not in skip] + self.soft, lr=lr)
        self.programmed = None

    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        return _backprop_step(self.net, self.opt, x, y, coding=coding, steps=steps, seed=seed)

    def finish(self) -> dict:
        """Program the software weights into the arrays; returns the cost."""
        pulses = reads = 0
        conv = []
        for layer, w in zip(self.layers, self.soft):
            target = (w.detach() / layer.weight_scale).clamp(-1, 1)
            r = layer.crossbar.program(target, tolerance=self.tolerance)
            pulses += r.pulses
            reads += r.verify_reads
            conv.append(r.converged)
            layer.software_weight = None
        self.programmed = {"program_pulses": pulses, "verify_reads": reads, "converged": conv}
        return self.programmed

    def state_dict(self) -> dict:
        return {"software": [w.detach().cpu().clone() for w in self.soft]}

    def load_state_dict(self, sd: dict) -> None:
        with torch.no_grad():
            for w, s in zip(self.soft, sd["software"]):
                w.copy_(s)


def make_rule(name: str, net: Network, *, lr: float, rounding: str = "stochastic", seed: int = 0,
              readback: int = 0):
    if name == "bp":
        return BP(net, lr=lr, rounding=rounding, seed=seed)
    if name == "dfa":
        return DFA(net, lr=lr, rounding=rounding, seed=seed)
    if name == "hybrid":
        return Hybrid(net, lr=lr, seed=seed, readback=readback)
    if name == "verify":
        return Verify(net, lr=lr, seed=seed)
    raise ValueError(f"unknown rule {name!r}; allowed: {', '.join(RULES)}")


# ============================================================================ training loop
def train(network, device, *, rule: str = "hybrid", coding: str = "rate", dataset: str = "digits",
          data_dir=None, epochs: int = 1, seed: int = 0, lr: float = 0.1, batch: int = 8,
          steps: Optional[int] = None, rounding: str = "stochastic", out: Optional[str | Path] = None,
          limit_train: Optional[int] = None, limit_test: Optional[int] = None, progress: bool = True,
          return_net: bool = False, array: str = "all", periphery="isaac-32nm", coprocessor="puma-vfu-32nm",
          readback: int = 0, accelerator=None, crop: Optional[int] = None, binarize: Optional[float] = None,
          overwrite: bool = False, resume: Optional[str | Path] = None, attach: Optional[Sequence[int]] = None,
          attach_epochs: Optional[int] = None, attach_gate: Optional[float] = None,
          log: Optional[str | Path] = None, tensorboard: Optional[str | Path] = None):
    """Train ``network`` on the simulated chip; returns accuracies, pulse and event counts,
    and the energy of the training and of the final test run from the cost ledger
    (:mod:`neurosal.cost`, with the ``periphery`` and ``coprocessor`` cost cards); and the
    trained network with ``return_net``. ``accelerator``: where the simulation runs
    (``'cpu'``, ``'auto'``, ``'cuda'``, ``'cuda:N'``; see :mod:`neurosal.accel`); the data
    go there once, the chip is drawn on the CPU and moved. ``crop`` and ``binarize``: input
    transforms (see :func:`neurosal.datasets.load`).

    ``out``: the checkpoint, checked and owned before any work, written (atomically) at the
    end of every epoch with everything a resumed run needs. ``resume``: a checkpoint written
    by an unfinished (or shorter) run with the same configuration (:func:`resume_config`);
    training continues from its last epoch up to ``epochs``, on the same chip, with the same
    random streams and data order, and ends exactly where an uninterrupted run ends.

    Attention strategies (SAnet recipes; see :func:`attention_deviation`): ``attach`` the stages
    that get a block (overrides the recipe; ``()``: none); ``attach_epochs = K``: the blocks
    train with the backbone for the first ``K`` epochs, then are detached and the backbone
    trains on alone (inference runs without them: no digital work); ``attach_gate = t``: keep a
    block only where a calibration read of the fresh chip shows its stage's output deviating
    from the ideal-device value by more than ``t`` (relative Frobenius norm). The result says
    which blocks inference uses (``attached``) and the digital share of the energy per
    inference and per training step.

    ``log``: a ``.csv`` or ``.jsonl`` file that gets one row per epoch as it ends (epoch, loss,
    test accuracy, cumulative pulses, training energy and seconds), flushed to disk; a
    resumed run appends to it. ``tensorboard``: a folder that gets the same figures as
    TensorBoard scalars (needs the ``tensorboard`` package)."""
    from .files import Owner, check_output
    label = lambda x: str(x) if isinstance(x, (str, Path)) else getattr(x, "name", str(x))  # noqa: E731 (a card)
    if isinstance(attach, str):          # "1,3", "none" (the command line's and a study's form)
        text = attach.strip().lower()
        try:
            attach = [] if text in ("none", "") else [int(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"attach {text!r}: not allowed; allowed: stages among 1, 2, 3 as '1,3', or 'none'") \
                from None
    cfg = dict(network=label(network), device=label(device), rule=rule, coding=coding, dataset=dataset, seed=seed,
               lr=lr, batch=batch, steps=steps, rounding=rounding, limit_train=limit_train, limit_test=limit_test,
               array=array, readback=readback, crop=crop, binarize=binarize, periphery=label(periphery),
               coprocessor=label(coprocessor),
               attach=None if attach is None else [int(v) for v in attach], attach_epochs=attach_epochs,
               attach_gate=attach_gate)
    check_train_args(**{k: cfg[k] for k in ("rule", "lr", "batch", "steps", "limit_train", "limit_test", "seed",
                                            "readback")}, epochs=epochs)
    state = None
    if resume is not None:
        state = resume_config(resume)
        saved = state["config"]
        diff = [k for k in cfg if k in saved and k not in _RESUME_FREE and saved[k] != cfg[k]]
        if diff:
            raise ValueError(f"{resume}: the run to resume had " + ", ".join(
                f"{k} = {saved[k]!r}" for k in diff) + "; this one asks for " + ", ".join(
                f"{k} = {cfg[k]!r}" for k in diff) + " (leave them out to take the checkpoint's)")
        if state["epoch"] >= epochs:
            raise ValueError(f"{resume}: the run already finished {state['epoch']} epoch(s); "
                             f"pass --epochs N with N > {state['epoch']} to train further")
    owner = None
    writer = None
    if tensorboard is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard); "
                             "--log FILE.csv writes the same figures without it") from None
        writer = SummaryWriter(log_dir=str(tensorboard))
    if log is not None:
        if Path(log).suffix.lower() not in (".csv", ".jsonl"):
            raise ValueError(f"--log {log}: not allowed; allowed: a .csv or .jsonl file")
        log = check_output(log, overwrite=overwrite or resume is not None, what="--log")
        if resume is None and log.exists():
            log.unlink()                         # --overwrite: a new run starts a new log
    if out is not None:
        same = resume is not None and Path(out).resolve() == Path(resume).resolve()
        out = check_output(out, overwrite=overwrite or same)
        owner = Owner(out).acquire()
    try:
        return _train(cfg, network, device, periphery, coprocessor, epochs=epochs, data_dir=data_dir, out=out,
                      progress=progress, return_net=return_net, accelerator=accelerator, state=state, resume=resume,
                      log=log, writer=writer)
    finally:
        if owner is not None:
            owner.release()
        if writer is not None:
            writer.close()


# options a resumed run may change: where things are and how long it trains
_RESUME_FREE = ("periphery", "coprocessor")


def _attached(net):
    """SAnet: the attention blocks in use (None for networks without attention)."""
    return sorted(int(v) for v in net.attached) if hasattr(net, "attached") else None


_LOG_FIELDS = ("epoch", "loss", "test_accuracy", "pulses", "energy_j", "seconds")


def _log_epoch(path: Optional[Path], row: dict, net, ledger, seconds: float, writer=None, **cost) -> None:
    """Append one epoch's metrics to a CSV or JSONL log (cumulative pulses, training energy and
    seconds), flushed and fsync'd so that a log read during a run is whole."""
    import csv
    import io
    import json
    import os
    pulses = sum(layer.crossbar.counters.pulses for layer in analog_layers(net))
    rec = dict(epoch=row["epoch"], loss=row["loss"], test_accuracy=row["test_accuracy"], pulses=int(pulses),
               energy_j=cost_report(ledger, **cost).energy_j, seconds=seconds)
    if writer is not None:
        for k in _LOG_FIELDS[1:]:
            writer.add_scalar(f"train/{k}", rec[k], rec["epoch"])
        writer.flush()
    if path is None:
        return
    new = not path.exists() or path.stat().st_size == 0
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        if new:
            w.writerow(_LOG_FIELDS)
        w.writerow([rec[k] for k in _LOG_FIELDS])
        text = buf.getvalue()
    else:
        text = json.dumps(rec) + "\n"
    with open(path, "a", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def check_train_args(*, rule: str, epochs: int, lr: float, batch: int, steps, limit_train, limit_test, seed: int,
                     readback: int = 0) -> None:
    """Named errors for training options out of range (before any work)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    checks = [("--epochs", epochs, "an integer >= 1", isinstance(epochs, int) and epochs >= 1),
              ("--batch", batch, "an integer >= 1", isinstance(batch, int) and batch >= 1),
              ("--lr", lr, "a finite number > 0", isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0),
              ("--steps", steps, "an integer >= 1 (or leave it out for the recipe's)",
               steps is None or (isinstance(steps, int) and steps >= 1)),
              ("--limit-train", limit_train, "an integer >= 1 (or leave it out for all)",
               limit_train is None or (isinstance(limit_train, int) and limit_train >= 1)),
              ("--limit-test", limit_test, "an integer >= 1 (or leave it out for all)",
               limit_test is None or (isinstance(limit_test, int) and limit_test >= 1)),
              ("--seed", seed, f"an integer from 0 to {2**32 - 1}", isinstance(seed, int) and 0 <= seed < 2**32),
              ("--readback", readback, "an integer >= 0", isinstance(readback, int) and readback >= 0)]
    for name, value, allowed, ok in checks:
        if not ok:
            raise ValueError(f"{name} {value}: not allowed; allowed: {allowed}")


@torch.no_grad()
def attention_deviation(net, card, x: torch.Tensor) -> dict:
    r"""Per residual stage, how far the chip's output is from the ideal-device value:
    :math:`\lVert h_{chip} - h_{ideal}\rVert_F / \lVert h_{ideal}\rVert_F` on the calibration batch
    ``x``, blocks detached, batch norm in inference mode. The chip is read (its reads are chip
    work); the ideal value comes from the same recipe and seed on the ideal device (a software
    reference of the weights the chip was meant to hold, off chip)."""
    from .networks import build
    ideal = build(card, device="ideal", coding="rate", seed=net.meta["seed"], input_shape=net.input_shape,
                  classes=net.classes).to(x.device)
    outs = []
    for m in (net, ideal):
        was, attached = m.training, set(m.attached)
        m.eval()
        m.detach()
        m._stage_outputs = {}
        try:
            m(x.reshape(-1, *m.input_shape))
            outs.append({k: v.detach() for k, v in m._stage_outputs.items()})
        finally:
            m._stage_outputs = None
            m.attached = attached
            m.train(was)
    chip, ref = outs
    return {s: float((chip[s] - ref[s]).norm() / ref[s].norm().clamp_min(1e-30)) for s in sorted(ref)}


def resume_config(path) -> dict:
    """The training state a checkpoint holds: ``{"config", "epoch", ...}``; a named error for a
    file that is not a resumable neurosal checkpoint."""
    import torch as _t
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--resume {p}: no such checkpoint file")
    try:
        ck = _t.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"--resume {p}: not a readable neurosal checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != "neurosal-checkpoint-1":
        raise ValueError(f"--resume {p}: not a neurosal checkpoint")
    st = ck.get("train")
    if not isinstance(st, dict) or not isinstance(st.get("config"), dict):
        raise ValueError(f"--resume {p}: this checkpoint holds no training state (written by `train` before "
                         "resuming existed, or by another command); it cannot be resumed")
    return {**st, "rule_state": ck.get("rule_state")}


def _train(cfg: dict, network, device, periphery, coprocessor, *, epochs, data_dir, out, progress, return_net,
           accelerator, state, resume, log=None, writer=None):
    from .datasets import load
    from .devices import load_device
    from .files import keep, unkeep
    from .networks import build, load_checkpoint, load_network, save_checkpoint
    rule, coding, dataset, seed = (cfg[k] for k in ("rule", "coding", "dataset", "seed"))
    lr, batch, steps, rounding, limit_train, limit_test = (cfg[k] for k in ("lr", "batch", "steps", "rounding",
                                                                            "limit_train", "limit_test"))
    array, readback, crop, binarize = cfg["array"], cfg["readback"], cfg["crop"], cfg["binarize"]
    card = load_network(network)
    attach, attach_epochs, attach_gate = cfg.get("attach"), cfg.get("attach_epochs"), cfg.get("attach_gate")
    strategy = attach is not None or attach_epochs is not None or attach_gate is not None
    if strategy and card.kind != "resnet":
        raise ValueError(f"attention strategies (attach, attach_epochs, attach_gate) are options of SAnet / ResNet "
                         f"recipes, not of {card.name!r} ({card.kind})")
    if attach is not None:
        bad = [v for v in attach if v not in (1, 2, 3)]
        if bad:
            raise ValueError(f"attach: stages {bad} not allowed; allowed: 1, 2, 3 (or none)")
        card = dataclasses.replace(card, attach=tuple(sorted(set(attach))))
    if attach_epochs is not None and not (isinstance(attach_epochs, int) and attach_epochs >= 0):
        raise ValueError(f"attach_epochs {attach_epochs!r}: not allowed; allowed: an integer >= 0")
    if attach_gate is not None and not (isinstance(attach_gate, (int, float)) and attach_gate >= 0
                                        and math.isfinite(attach_gate)):
        raise ValueError(f"attach_gate {attach_gate!r}: not allowed; allowed: a finite number >= 0")
    dev = load_device(device)
    data = load(dataset, data_dir=data_dir, seed=seed, limit_train=limit_train, limit_test=limit_test, crop=crop,
                binarize=binarize)
    net = build(card, device=dev, coding=coding, seed=seed, steps=steps, input_shape=data.shape,
                classes=data.classes, array=array, accelerator=accelerator)
    where = _device_of(net)
    if where.type != "cpu":           # the whole data set on the accelerator, once
        data = dataclasses.replace(data, x_train=data.x_train.to(where), y_train=data.y_train.to(where),
                                   x_test=data.x_test.to(where), y_test=data.y_test.to(where))
    T = net.meta["steps"]
    if readback and rule != "hybrid":
        raise ValueError(f"readback is an option of the hybrid rule, not of {rule!r}")
    r = make_rule(rule, net, lr=lr, rounding=rounding, seed=seed, readback=readback)
    g = torch.Generator(device="cpu").manual_seed(seed)
    history = []
    start, seconds_before = 0, 0.0
    if state is not None:                 # the chip, the rule, the data order and the ledger as they were
        load_checkpoint(net, resume)
        r.load_state_dict(state["rule_state"])
        g.set_state(state["data_rng"])
        history = list(state["history"])
        start, seconds_before = int(state["epoch"]), float(state["seconds"])
    t0 = time.perf_counter()
    n = len(data.y_train)
    per = card.periphery
    calib_x = data.x_train[torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(seed + 7),
                                          device="cpu")[:256].to(where)]

    ledger = Ledger(net, samples=epochs * n)          # the chip's work while training
    test_ledger = Ledger(net, samples=len(data.y_test))

    def recalibrate():
        if per.adc_calibration == "epoch":
            with ledger.phase("forward"):                 # calibration reads are chip work too
                calibrate(net, calib_x, coding=coding, steps=T, quantile=per.adc_quantile, seed=seed + 11)
    gate = None
    if state is not None:
        ledger.load_state_dict(state["ledger"])
        if hasattr(net, "attached") and state.get("attached") is not None:
            net.attached = set(state["attached"])
        gate = state.get("gate")
    else:
        if attach_gate is not None and getattr(net, "attn", None):
            with ledger.phase("forward"):            # the calibration reads are chip work
                gate = attention_deviation(net, card, calib_x)
            net.attach([s_ for s_, d in gate.items() if d > attach_gate])
        recalibrate()
    with progress_bar(epochs * n, initial=start * n, unit="sample", desc=f"train {rule}",
              disable=not progress) as bar:
        for ep in range(start, epochs):
            if attach_epochs is not None and ep == attach_epochs and hasattr(net, "detach"):
                net.detach()                        # the backbone trains on alone
            perm = torch.randperm(n, generator=g, device="cpu").to(where)
            losses = []
            for i in range(0, n, batch):
                j = perm[i:i + batch]
                with ledger.active():
                    losses.append(r.step(data.x_train[j], data.y_train[j], coding=coding, steps=T,
                                         seed=seed * 1_000_003 + ep * n + i))
                bar.update(len(j))
            recalibrate()
            if isinstance(r, Verify) and ep == epochs - 1:
                r.software_accuracy = evaluate(net, data.x_test, data.y_test, coding=coding, steps=T, seed=seed)
                with ledger.phase("update"):
                    r.finish()
            if ep == epochs - 1:
                with test_ledger.phase("forward"):
                    acc = evaluate(net, data.x_test, data.y_test, coding=coding, steps=T, seed=seed)
            else:
                acc = evaluate(net, data.x_test, data.y_test, coding=coding, steps=T, seed=seed)
            history.append({"epoch": ep + 1, "loss": float(torch.stack(losses).double().mean()), "test_accuracy": acc})
            bar.set_postfix(acc=f"{acc:.3f}")
            if log is not None or writer is not None:
                _log_epoch(log, history[-1], net, ledger, seconds_before + time.perf_counter() - t0,
                           periphery=periphery, coprocessor=coprocessor, rule=rule, writer=writer)
            if out is not None and ep < epochs - 1:     # the last epoch's checkpoint carries the result too
                save_checkpoint(net, out, rule=rule, rule_state=r.state_dict(), train=dict(
                    config=cfg, epoch=ep + 1, history=history, data_rng=g.get_state(), ledger=ledger.state_dict(),
                    seconds=seconds_before + time.perf_counter() - t0, attached=_attached(net), gate=gate))
                keep(f"train:{out}", f"the checkpoint of epoch {ep + 1} at {out} (continue with "
                                     f"`neurosal train --resume {out} --epochs {epochs}`)")
    seconds = seconds_before + time.perf_counter() - t0
    counters = {}
    if isinstance(net, Network):
        for layer in net.layers:
            if layer.crossbar is not None:
                counters[layer.name] = layer.crossbar.counters.as_dict()
    else:
        analog = {id(m) for m in analog_layers(net)}
        for name, mod in net.named_modules():
            if id(mod) in analog:
                counters[name] = mod.crossbar.counters.as_dict()
    result = {"network": card.name, "device": dev.name, "rule": rule, "coding": coding, "dataset": dataset,
              "array": array,
              "epochs": epochs, "seed": seed, "lr": lr, "batch": batch, "steps": T, "rounding": rounding,
              "test_accuracy": history[-1]["test_accuracy"], "history": history, "seconds": seconds,
              "accelerator": str(where), "threads": torch.get_num_threads(),
              "pulses": sum(c["pulses"] for c in counters.values()),
              "verify_reads": sum(c["verify_reads"] for c in counters.values()),
              "clipped_cells": sum(c["clipped_cells"] for c in counters.values()), "readback": readback,
              "layers": counters}
    tr = cost_report(ledger, periphery=periphery, coprocessor=coprocessor, rule=rule)
    te = cost_report(test_ledger, periphery=periphery, coprocessor=coprocessor, rule=rule)
    result["energy_j"] = tr.energy_j
    result["cost"] = {
        "training": {"energy_j": tr.energy_j, "analog_energy_j": tr.analog_energy_j,
                     "digital_energy_j": tr.digital_energy_j, "latency_s": tr.latency_s,
                     "energy_per_sample_j": tr.energy_j / max(1, tr.samples),
                     "phases": {ph: tr.energy(ph) for ph in PHASES},
                     "components": {c: tr.energy(component=c) for c in COMPONENTS}},
        "inference": {"energy_per_sample_j": te.energy_j / max(1, te.samples),
                      "analog_energy_j": te.analog_energy_j, "digital_energy_j": te.digital_energy_j,
                      "samples": te.samples},
        "periphery": tr.meta["periphery"], "coprocessor": tr.meta["coprocessor"]}
    steps_run = max(1, epochs * math.ceil(n / batch))
    result["digital_share"] = {"inference": te.digital_energy_j / max(te.energy_j, 1e-300),
                               "training": tr.digital_energy_j / max(tr.energy_j, 1e-300)}
    result["cost"]["training"]["energy_per_step_j"] = tr.energy_j / steps_run
    if hasattr(net, "attached"):
        result["attention"] = {"kind": getattr(net, "attention_kind", None), "blocks": sorted(int(k) for k in net.attn),
                               "attached": sorted(net.attached), "attach_epochs": attach_epochs,
                               "attach_gate": attach_gate, "deviation": gate}
    if isinstance(r, Verify) and r.programmed:
        result.update(r.programmed, software_accuracy=r.software_accuracy)
    if out is not None:
        save_checkpoint(net, out, rule=rule, rule_state=r.state_dict(), result=result, train=dict(
            config=cfg, epoch=epochs, history=history, data_rng=g.get_state(), ledger=ledger.state_dict(),
            seconds=seconds, attached=_attached(net), gate=gate))
        unkeep(f"train:{out}")
    return (result, net, data) if return_net else result
