r"""``dfa`` — direct feedback alignment (Nøkland 2016; on CIM: Wolters et al. 2023): the output
error :math:`e = \mathrm{softmax}(y) - \mathrm{onehot}` reaches hidden layer :math:`l` through a
fixed random matrix, :math:`\delta_l = (e B_l) \odot f'(a_l)`, and every layer is updated at
once from :math:`\Delta W_l = -\eta\, x_{l-1}^T \delta_l` (pulses by :class:`~neurosal.crossbar.PulseSGD`).
Rate coding; layer chains, and modules that offer ``feedback_taps()`` (SAnet / ResNet).

May import: :mod:`neurosal.cost`, :mod:`.rule`, :mod:`.bp`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..cost import Schedule, phase
from .bp import BP
from .rule import register

__all__ = ["DFA"]


@register
class DFA(BP):
    r"""Direct feedback alignment: fixed random feedback, all layers updated at once.

    Rate coding (the ``T = 1`` limit, bounded activation ``f = clamp(., 0, 1)``,
    :math:`f' = 1` inside (0, 1)). The output error :math:`e = p - y` reaches every hidden
    layer through its own fixed random matrix :math:`B_l` (no error passes back through the
    arrays): :math:`\delta_l = (e B_l) \odot f'(a_l)`.

    For a chain of layers (``net.structure == 'chain'``, an MLP) that is the whole rule. For SAnet / ResNet (rate coding),
    the "layer" is each convolution's activated output and each attention block's output:
    :math:`e B_l` is given to that output and back-propagated *locally* (through its
    activation, batch norm and, for a block's second conv, its projection shortcut) to the
    layer's own weights; every array's input is detached, so nothing crosses from layer to
    layer (Nøkland 2016 for convolutional layers). The classifier gets the true error.
    """

    name = "dfa"
    order = 1
    options = ("rounding",)
    schedule = Schedule("dfa", parallel=True)

    @classmethod
    def check(cls, net) -> None:
        if net.structure == "chain":
            if any(layer.neurons.spiking for layer in net.layers):
                raise ValueError("dfa is implemented for rate coding (--coding rate)")
        else:
            net.check_feedback()             # a module: its layers' outputs must be capturable

    def __init__(self, net, *, lr: float, rounding: str = "stochastic", seed: int = 0, max_pulses: int = 64):
        super().__init__(net, lr=lr, rounding=rounding, seed=seed, max_pulses=max_pulses)
        self.check(net)
        self._module = net.structure != "chain"
        if self._module:
            self._gen = torch.Generator(device="cpu").manual_seed(seed + 4242)
            self.feedback: dict = {}
            return
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
        with net.feedback_taps() as cap, phase("forward"):
            out = net(x)
        with phase("backward"):
            B = len(y)
            e = (torch.softmax(out.detach(), 1) - nn.functional.one_hot(y, out.shape[1]).to(out.dtype)) / B
            analog = dict(net.analog_units())
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
                if key in analog:                                          # the projection is digital work
                    analog[key].crossbar.counters.add("digital_macs", B * fb.numel())
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
