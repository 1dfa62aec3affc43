r"""Builders: a recipe (:mod:`.recipes`) and a device card become a network on crossbars.

The coding scheme picks the neurons of the hidden and output layers:

* ``rate`` — the ``T = 1`` analog limit: direct analog inputs through the DAC, rate neurons
  (bounded activation), one step;
* ``spike`` — Bernoulli rate-coded input spikes over ``T`` steps and spiking neurons (the
  recipe's ``neuron``: ``lif`` through norse, or ``charge``);
* ``latency`` — one input spike at ``t = 1 - x`` (time to first spike) and charge-domain
  TTFS neurons with the recipe's reversal potentials (``[charge]``).

Every fully connected and convolutional layer lives on a crossbar. Each recipe ``kind`` has one
:class:`Builder` in :data:`BUILDERS`, which says the codings and array placements it supports
and whether attention strategies apply: :func:`build` asks it, and refuses anything else with
an error that lists what is supported.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`, :mod:`neurosal.coprocessor`,
:mod:`neurosal.engine`, :mod:`neurosal.accel` and the rest of :mod:`neurosal.networks`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..accel import resolve
from ..coprocessor import NumberFormat
from ..crossbar import AnalogLinear
from ..engine import Layer, Network
from ..neurons import ChargeNeurons, ChargeParameters, LIFNeurons, LIFParameters, RateNeurons
from .charge import ChargeMLP, ChargeVGG
from .recipes import CODINGS, KINDS, LIFCard, NetworkCard, PeripheryCard, load_network
from .sanet import SAnet

__all__ = ["Builder", "BUILDERS", "builder_for", "build", "mlp", "vgg", "sanet_resnet"]


def _neurons(card: NetworkCard, coding: str, steps: int):
    if coding == "rate":
        return RateNeurons()
    if card.neuron == "charge" or coding == "latency":
        c = card.charge
        return ChargeNeurons(ChargeParameters(e_plus=c.e_plus, e_minus=c.e_minus, v_th=c.v_th, alpha=c.leak),
                             steps=steps)
    lc = card.lif
    return LIFNeurons(LIFParameters(tau_mem=lc.tau_mem, v_th=lc.v_th, v_reset=lc.v_reset, method=lc.surrogate,
                                    alpha=lc.alpha), dt=card.dt)


def _digital_linear(a: int, b: int, bias: bool, init_gain: float, seed: int) -> nn.Linear:
    """A software layer with the analog layers' initial distribution U(+-gain/sqrt(a))."""
    lin = nn.Linear(a, b, bias=bias)
    g = torch.Generator(device="cpu").manual_seed(seed + 7919)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(a, b, generator=g, device="cpu") * 2 - 1).t() * init_gain / math.sqrt(a))
        if bias:
            lin.bias.zero_()
    return lin


def mlp(sizes, *, device="ideal", coding: str = "spike", seed: int = 0, card: Optional[NetworkCard] = None,
        steps: Optional[int] = None, array: str = "all") -> Network:
    """A fully connected network: ``sizes = [n_in, hidden..., n_out]``. ``array='all'`` puts
    every layer on crossbars; ``'first'`` only the first (the rest run in software, as in
    Kwon et al.'s hybrid study)."""
    if coding not in CODINGS:
        raise ValueError(f"unknown coding {coding!r}; allowed: {', '.join(CODINGS)}")
    if array not in ("all", "first"):
        raise ValueError(f"array must be 'all' or 'first', got {array!r}")
    card = card or NetworkCard(name="mlp-" + "-".join(str(int(s)) for s in sizes), sizes=tuple(sizes))
    steps = 1 if coding == "rate" else int(steps or card.steps)
    p = card.periphery
    layers = []
    sizes = [int(s) for s in sizes]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        bias = card.bias and (coding == "rate" or (coding == "spike" and card.neuron == "lif"))
        if array == "first" and i > 0:
            syn = _digital_linear(a, b, bias, card.init_gain, seed + 101 * i)
        else:
            syn = AnalogLinear(a, b, bias=bias, device=device, tile=(p.tile_rows, p.tile_cols), dac_bits=p.dac_bits,
                               adc_bits=p.adc_bits, adc_range=p.adc_range, seed=seed + 101 * i,
                               init_gain=card.init_gain, column_gain=p.column_gain, column_offset=p.column_offset)
        neu = _neurons(card, coding, steps)
        last = i == len(sizes) - 2
        if last and coding != "rate" and card.readout == "li":     # integrate, never fire
            if neu.input == "charge":
                c = card.charge
                neu = ChargeNeurons(ChargeParameters(e_plus=c.e_plus, e_minus=c.e_minus, v_th=math.inf,
                                                     alpha=c.leak), steps=steps)
            else:
                lc = card.lif
                neu = LIFNeurons(LIFParameters(tau_mem=lc.tau_mem, v_th=math.inf, v_reset=0.0, method=lc.surrogate,
                                               alpha=lc.alpha), dt=card.dt)
        layers.append(Layer(syn, neu, name=f"fc{i + 1}"))
    li = coding != "rate" and card.readout == "li"
    return Network(layers, decoder="max_membrane" if coding == "rate" or li else card.decoder, name=card.name,
                   meta={"recipe": card.to_dict(), "coding": coding, "steps": steps, "seed": seed})


def sanet_resnet(depth: int = 8, width: int = 16, *, attention: Optional[str] = None, attach=(1, 2, 3),
                 position: str = "stage",
                 coding: str = "rate", device="ideal", seed: int = 0, input_shape=(3, 32, 32), classes: int = 10,
                 card: Optional[NetworkCard] = None, steps: Optional[int] = None):
    """SAnet: analog ResNet-``depth`` on crossbars + ``attention`` ('se' | 'cbam' | None) on the
    co-processor after the stages in ``attach`` (see :mod:`neurosal.networks.sanet`)."""
    p = card.periphery if card is not None else PeripheryCard()
    T = 1 if coding == "rate" else int(steps or (card.steps if card is not None else 8))
    lc = card.lif if card is not None else LIFCard(alpha=10.0)
    lif = LIFParameters(tau_mem=lc.tau_mem, v_th=lc.v_th, v_reset=lc.v_reset, method=lc.surrogate, alpha=lc.alpha)
    fmt = NumberFormat(card.cp_format, card.cp_bits, card.cp_frac_bits) if card is not None else NumberFormat()
    net = SAnet(depth, width, input_shape=input_shape, classes=classes, attention=attention, attach=attach,
                position=position, batch_norm=card.batch_norm if card is not None else "digital",
                device=device, seed=seed, number_format=fmt, coding=coding, steps=T, lif=lif,
                dt=card.dt if card is not None else 1e-3,
                spike_logit_scale=card.spike_logit_scale if card is not None else 4.0,
                xbar=dict(tile=(p.tile_rows, p.tile_cols), dac_bits=p.dac_bits, adc_bits=p.adc_bits,
                          adc_range=p.adc_range, column_gain=p.column_gain, column_offset=p.column_offset))
    net.meta = {"recipe": card.to_dict() if card is not None else {"kind": "resnet", "depth": depth, "width": width},
                "coding": coding, "steps": T, "seed": seed}
    return net


def vgg(width: int = 16, *, card: Optional[NetworkCard] = None, device="ideal", seed: int = 0,
        input_shape=(3, 32, 32), classes: int = 10) -> ChargeVGG:
    """VGG7-like charge-domain CNN (see :class:`ChargeVGG`)."""
    card = card or NetworkCard(name=f"vgg7-charge-w{width}", kind="charge-vgg", width=width)
    return ChargeVGG(width, card=card, device=device, seed=seed, input_shape=input_shape, classes=classes)


def _sizes(card: NetworkCard, input_shape, classes) -> list:
    """The recipe's layer sizes with the dataset's input size and classes."""
    sizes = list(card.sizes)
    if input_shape is not None:
        sizes[0] = int(math.prod(input_shape))
    if classes is not None:
        sizes[-1] = int(classes)
    return sizes


def _make_mlp(card, *, device, coding, seed, steps, input_shape, classes, array):
    return mlp(_sizes(card, input_shape, classes), device=device, coding=coding, seed=seed, card=card, steps=steps,
               array=array)


def _make_charge_mlp(card, *, device, coding, seed, steps, input_shape, classes, array):
    return ChargeMLP(_sizes(card, input_shape, classes), card=card, device=device, seed=seed)


def _make_charge_vgg(card, *, device, coding, seed, steps, input_shape, classes, array):
    return vgg(card.width, card=card, device=device, seed=seed, input_shape=input_shape or (3, 32, 32),
               classes=classes or 10)


def _make_resnet(card, *, device, coding, seed, steps, input_shape, classes, array):
    return sanet_resnet(card.depth, card.width, attention=None if card.attention == "none" else card.attention,
                        attach=tuple(int(a) for a in card.attach), device=device, seed=seed, coding=coding,
                        position=card.attention_position,
                        steps=steps, input_shape=input_shape or (3, 32, 32), classes=classes or 10, card=card)


@dataclass(frozen=True)
class Builder:
    """How one kind of recipe becomes a network, and what it supports."""

    kind: str
    make: Callable
    codings: tuple
    coding_note: str = ""           # why only these codings (said in the error)
    arrays: tuple = ("all",)        # 'all': every layer on crossbars; 'first': only the first
    attention: bool = False         # attention strategies (attach, attach_epochs, attach_gate) apply

    def check(self, card: NetworkCard, coding: str, array: str) -> None:
        if array not in self.arrays:
            firsts = ", ".join(k for k, b in BUILDERS.items() if array in b.arrays)
            raise ValueError(f"array='{array}' is available for {firsts} recipes; {card.name} is a {card.kind} "
                             f"(it supports array = {', '.join(self.arrays)})")
        if coding not in self.codings:
            raise ValueError(f"{card.name} is {self.coding_note}: use coding {' or '.join(repr(c) for c in self.codings)}"
                             f", not {coding!r}")


BUILDERS = {
    "mlp": Builder("mlp", _make_mlp, CODINGS, arrays=("all", "first")),
    "resnet": Builder("resnet", _make_resnet, ("rate", "spike"), "a ResNet/SAnet (rate- or spike-coded)",
                      attention=True),
    "charge-mlp": Builder("charge-mlp", _make_charge_mlp, ("latency",), "time-coded (inputs spike at t = 1 - x)"),
    "charge-vgg": Builder("charge-vgg", _make_charge_vgg, ("latency",), "time-coded (inputs spike at t = 1 - x)"),
}
assert set(BUILDERS) == set(KINDS), "every recipe kind needs a builder"


def builder_for(card: NetworkCard) -> Builder:
    """The builder of a recipe's kind."""
    return BUILDERS[card.kind]


def build(name_or_path: str | Path | NetworkCard, *, device="ideal", coding: str = "spike", seed: int = 0,
          steps: Optional[int] = None, input_shape: Optional[tuple] = None,
          classes: Optional[int] = None, array: str = "all", accelerator=None, dtype=None) -> Network:
    """Build a network from a recipe for ``device`` (the device card) and ``coding``.

    ``input_shape`` ``(C, H, W)`` and ``classes`` come from the dataset: they replace the
    recipe's input and output sizes, so every recipe runs on every dataset. The chip is
    fabricated on the CPU (same seed, same chip everywhere), then moved to ``accelerator``
    (``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'``, a :class:`torch.device`; ``None``: stay
    on the CPU) and to ``dtype`` if given; ``net.to(...)`` moves it later in the same way.
    """
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps {steps!r}: not allowed; allowed: an integer >= 1 (or None for the recipe's)")
    with torch.device("cpu"):              # whatever the default device: build on the CPU
        net = _build(name_or_path, device=device, coding=coding, seed=seed, steps=steps, input_shape=input_shape,
                     classes=classes, array=array)
    # what a checkpoint must match: the data it was built for
    net.meta["input_shape"] = [int(v) for v in input_shape] if input_shape is not None else None
    net.meta["classes"] = int(classes) if classes is not None else None
    if accelerator is not None:
        net = net.to(resolve(accelerator))
    if dtype is not None:
        net = net.to(dtype)
    return net


def _build(name_or_path, *, device, coding, seed, steps, input_shape, classes, array):
    card = load_network(name_or_path)
    b = builder_for(card)
    if b.kind != "mlp":         # mlp() names a bad coding or array itself
        b.check(card, coding, array)
    return b.make(card, device=device, coding=coding, seed=seed, steps=steps, input_shape=input_shape,
                  classes=classes, array=array)
