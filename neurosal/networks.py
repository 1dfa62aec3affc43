r"""Network recipes (``networks/*.toml``) and the builders that turn them into a
:class:`~neurosal.simulator.Network` on crossbars.

A recipe is data, like a device card: which layers, which neurons, which periphery. A
path to a TOML file of the user's own works wherever a recipe name does. The coding
scheme picks the neurons of the hidden and output layers:

* ``rate`` — the ``T = 1`` analog limit: direct analog inputs through the DAC, rate
  neurons (bounded activation), one step;
* ``spike`` — Bernoulli rate-coded input spikes over ``T`` steps and spiking neurons (the
  recipe's ``neuron``: ``lif`` through norse, or ``charge``);
* ``latency`` — one input spike at ``t = 1 - x`` (time to first spike) and charge-domain
  TTFS neurons with the recipe's reversal potentials (``[charge]``).

Every fully connected layer lives on a crossbar (:class:`~neurosal.crossbar.AnalogLinear`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .cards import CardError, from_dict, list_cards, load_toml, resolve_card, spec, to_dict
from .accel import tally
from .crossbar import AnalogLinear
from .neurons import ChargeNeurons, ChargeParameters, LIFNeurons, LIFParameters, RateNeurons, SURROGATES
from .simulator import DECODERS, Layer, Network

__all__ = ["NetworkCard", "load_network", "list_networks", "build", "mlp", "vgg", "sanet_resnet", "CODINGS",
           "save_checkpoint", "load_checkpoint", "ChargeMLP", "ChargeVGG"]

CODINGS = ("rate", "spike", "latency")


@dataclass(frozen=True)
class LIFCard:
    """LIF neuron settings (see :class:`~neurosal.neurons.LIFParameters`)."""

    tau_mem: float = spec(10e-3, lo=0, lo_open=True, hi=10.0, unit="s")
    v_th: float = spec(1.0, lo=0, lo_open=True, hi=1e3)
    v_reset: float = spec(0.0, lo=-1e3, hi=1e3)
    surrogate: str = spec("super", choices=SURROGATES)
    alpha: float = spec(100.0, lo=0, lo_open=True, hi=1e6)


@dataclass(frozen=True)
class ChargeCard:
    """Charge-domain neuron settings (see :class:`~neurosal.neurons.ChargeParameters`)."""

    e_plus: float = spec(math.inf, lo=0, lo_open=True, finite=False, doc="inf: ideal charge summation")
    e_minus: float = spec(-math.inf, hi=0, hi_open=True, finite=False, doc="-inf: ideal charge summation")
    v_th: float = spec(1.0, lo=0, lo_open=True, hi=1e3)
    leak: float = spec(0.0, lo=0, hi=1e6)


@dataclass(frozen=True)
class PeripheryCard:
    """Crossbar periphery of every layer (see :class:`~neurosal.crossbar.Crossbar`)."""

    tile_rows: int = spec(128, lo=1, hi=4096)
    tile_cols: int = spec(128, lo=1, hi=4096)
    dac_bits: Optional[int] = spec(None, lo=1, hi=24)
    adc_bits: Optional[int] = spec(None, lo=1, hi=24)
    adc_range: float = spec(12.0, lo=0, lo_open=True, hi=1e6)
    adc_calibration: str = spec("none", choices=("none", "epoch"),
                                doc="epoch: before training and after every epoch, set each array's forward "
                                    "ADC range from the partial sums it reads on a training batch")
    adc_quantile: float = spec(0.999, lo=0.5, hi=1.0, doc="quantile of |partial sum| the calibrated range covers")


@dataclass(frozen=True)
class NetworkCard:
    """A network recipe.

    ``sizes`` lists the layer widths from input to output (``kind = "mlp"``);
    ``init_gain`` scales the initial uniform weight bound :math:`1/\\sqrt{n_{in}}`;
    ``p_max`` is the spike probability per step of a full-scale input in rate coding.
    """

    name: str = spec()
    kind: str = spec("mlp", choices=("mlp", "resnet", "charge-mlp", "charge-vgg"))
    sizes: tuple[float, ...] = spec((), lo=1, hi=1_000_000, doc="mlp: layer widths, input to output")
    depth: int = spec(8, lo=8, hi=200, doc="resnet: 6n + 2")
    width: int = spec(16, lo=1, hi=1024, doc="resnet: channels of the first stage")
    attention: str = spec("none", choices=("none", "se", "cbam"))
    attach: tuple[float, ...] = spec((1, 2, 3), lo=1, hi=3, doc="resnet: stages with an attention block")
    attention_position: str = spec("stage", choices=("stage", "residual"),
                                   doc="resnet: an attention block gates the stage's output (after its last "
                                       "residual add) or, as in SE-ResNet, the last block's residual branch "
                                       "(after its batch norm, before the add)")
    dstd_steps: int = spec(4, lo=1, hi=1024, doc="charge-mlp: DSTD grid steps M per phase")
    logit_scale: float = spec(10.0, lo=0, lo_open=True, hi=1e6, doc="charge-mlp: logits = scale x (1 - output time)")
    spike_logit_scale: float = spec(4.0, lo=0, lo_open=True, hi=1e6,
                                    doc="resnet in spike coding: logits = scale x the classifier's mean output "
                                        "over the steps (the mean of spike maps is small)")
    cp_format: str = spec("fixed", choices=("fixed", "float"), doc="co-processor number format")
    cp_bits: int = spec(16, lo=2, hi=32)
    cp_frac_bits: int = spec(10, lo=0, hi=31)
    description: str = spec("")
    neuron: str = spec("lif", choices=("lif", "charge"))
    decoder: str = spec("count", choices=DECODERS)
    readout: str = spec("spiking", choices=("spiking", "li"),
                        doc="output layer in spike codings: spiking neurons, or a leaky integrator (no "
                            "spikes, read by its maximum membrane potential)")
    steps: int = spec(32, lo=1, hi=1_000_000, doc="default number of time steps in spike modes")
    dt: float = spec(1e-3, lo=0, lo_open=True, hi=10.0, unit="s")
    p_max: float = spec(1.0, lo=0, hi=1, lo_open=True)
    init_gain: float = spec(1.0, lo=0, lo_open=True, hi=1e3, doc="initial weights uniform in +-init_gain/sqrt(fan_in)")
    bias: bool = spec(True)
    lif: LIFCard = spec(default_factory=LIFCard)
    charge: ChargeCard = spec(default_factory=ChargeCard)
    periphery: PeripheryCard = spec(default_factory=PeripheryCard)

    def _validate(self, source) -> None:
        if self.kind == "charge-vgg":
            return
        if self.kind == "resnet":
            if (self.depth - 2) % 6:
                raise CardError(source, "depth", f"ResNet depth must be 6n + 2 (8, 14, 20, ...), got {self.depth}")
            if self.cp_frac_bits >= self.cp_bits:
                raise CardError(source, "cp_frac_bits", "must be below cp_bits")
            return
        if len(self.sizes) < 2:  # mlp, charge-mlp
            raise CardError(source, "sizes", "needs at least an input and an output size, e.g. [64, 100, 10]")
        for i, s in enumerate(self.sizes):
            if not float(s).is_integer():
                raise CardError(source, f"sizes[{i}]", f"layer sizes are whole numbers, got {s}")

    def to_dict(self) -> dict:
        return to_dict(self)


def load_network(name_or_path: str | Path | NetworkCard) -> NetworkCard:
    """Load a network recipe by shipped name (``'mlp-64-100-10'``) or path to a TOML file."""
    if isinstance(name_or_path, NetworkCard):
        return name_or_path
    path = resolve_card(name_or_path, "networks")
    return from_dict(NetworkCard, load_toml(path), source=path)


def recipe_for(network, checkpoint=None) -> NetworkCard:
    """The recipe to build for ``checkpoint``: the one stored in it when ``network`` names it
    (a trained network keeps the overrides it was trained with, e.g. a sweep's
    ``network.attach`` or ``network.sizes``); otherwise ``network`` itself (a different one is
    refused when the checkpoint loads)."""
    card = load_network(network)
    if checkpoint is None or not Path(checkpoint).is_file():
        return card
    import torch
    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        rec = ck["meta"]["recipe"]
    except Exception:  # noqa: BLE001 - load_checkpoint names what is wrong with the file
        return card
    if isinstance(rec, dict) and rec.get("name") == card.name:
        return from_dict(NetworkCard, rec, source=f"{checkpoint} (recipe)")
    return card


def list_networks() -> list[str]:
    return list_cards("networks")


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
                               init_gain=card.init_gain)
        neu = _neurons(card, coding, steps)
        last = i == len(sizes) - 2
        if last and coding != "rate" and card.readout == "li":     # integrate, never fire
            if isinstance(neu, ChargeNeurons):
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
    from .accel import resolve
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
    if card.kind == "mlp":
        sizes = list(card.sizes)
        if input_shape is not None:
            sizes[0] = int(math.prod(input_shape))
        if classes is not None:
            sizes[-1] = int(classes)
        return mlp(sizes, device=device, coding=coding, seed=seed, card=card, steps=steps, array=array)
    if array != "all":
        raise ValueError(f"array='{array}' is available for mlp recipes; {card.name} is a {card.kind}")
    if card.kind == "charge-vgg":
        if coding != "latency":
            raise ValueError(f"{card.name} is time-coded (inputs spike at t = 1 - x): use coding 'latency'")
        return vgg(card.width, card=card, device=device, seed=seed, input_shape=input_shape or (3, 32, 32),
                   classes=classes or 10)
    if card.kind == "charge-mlp":
        if coding != "latency":
            raise ValueError(f"{card.name} is time-coded (inputs spike at t = 1 - x): use coding 'latency'")
        sizes = list(card.sizes)
        if input_shape is not None:
            sizes[0] = int(math.prod(input_shape))
        if classes is not None:
            sizes[-1] = int(classes)
        return ChargeMLP(sizes, card=card, device=device, seed=seed)
    if card.kind == "resnet":
        if coding not in ("rate", "spike"):
            raise ValueError(f"{card.name}: ResNet/SAnet runs rate- or spike-coded, not {coding!r}")
        return sanet_resnet(card.depth, card.width, attention=None if card.attention == "none" else card.attention,
                            attach=tuple(int(a) for a in card.attach), device=device, seed=seed, coding=coding,
                            position=card.attention_position,
                            steps=steps, input_shape=input_shape or (3, 32, 32), classes=classes or 10, card=card)
    raise CardError(card.name, "kind", f"unknown network kind {card.kind!r}")  # pragma: no cover


def sanet_resnet(depth: int = 8, width: int = 16, *, attention: Optional[str] = None, attach=(1, 2, 3),
                 position: str = "stage",
                 coding: str = "rate", device="ideal", seed: int = 0, input_shape=(3, 32, 32), classes: int = 10,
                 card: Optional[NetworkCard] = None, steps: Optional[int] = None):
    """SAnet: analog ResNet-``depth`` on crossbars + ``attention`` ('se' | 'cbam' | None) on the
    co-processor after the stages in ``attach`` (see :mod:`neurosal.sanet`)."""
    from .coprocessor import NumberFormat
    from .sanet import SAnet
    p = card.periphery if card is not None else PeripheryCard()
    T = 1 if coding == "rate" else int(steps or (card.steps if card is not None else 8))
    lc = card.lif if card is not None else LIFCard(alpha=10.0)
    lif = LIFParameters(tau_mem=lc.tau_mem, v_th=lc.v_th, v_reset=lc.v_reset, method=lc.surrogate, alpha=lc.alpha)
    fmt = NumberFormat(card.cp_format, card.cp_bits, card.cp_frac_bits) if card is not None else NumberFormat()
    net = SAnet(depth, width, input_shape=input_shape, classes=classes, attention=attention, attach=attach,
                position=position,
                device=device, seed=seed, number_format=fmt, coding=coding, steps=T, lif=lif,
                dt=card.dt if card is not None else 1e-3,
                spike_logit_scale=card.spike_logit_scale if card is not None else 4.0,
                xbar=dict(tile=(p.tile_rows, p.tile_cols), dac_bits=p.dac_bits, adc_bits=p.adc_bits,
                          adc_range=p.adc_range))
    net.meta = {"recipe": card.to_dict() if card is not None else {"kind": "resnet", "depth": depth, "width": width},
                "coding": coding, "steps": T, "seed": seed}
    return net


def _count_charge(counts: dict, key: str, v: torch.Tensor, fires: bool) -> None:
    """Neuron work of a charge-domain layer for the cost ledger: one integrate-and-compare per
    neuron and sample (the membrane integrates in analog, with no discrete updates), and one
    spike per neuron whose charge crosses threshold within the phase (v(1) > 0: t = 1 - v < 1)."""
    c = counts.setdefault(key, [0, 0])
    c[0] += v.numel()
    if fires:
        c[1] += tally((v.detach() > 0).sum())


class ChargeMLP(nn.Module):
    r"""Charge-domain MLP in time coding, trained with DSTD (Sakemi et al.).

    Inputs spike at :math:`t = 1 - x`; every layer is an RC-spike layer of charge-domain
    neurons with reversal potentials ``card.charge`` on a crossbar: the inputs switched on by
    the spikes are read through the array (:class:`~neurosal.crossbar.AnalogLinear`, with its
    periphery), and the layer fires at :math:`\mathrm{clip}(1 - v(1), 0, 1)`. In training the
    DSTD grid has ``card.dstd_steps`` points with a random offset per batch; in evaluation no
    offset. Scores: ``logit_scale * v_out(1)``, the output charge at the end of the phase (the
    RC ramp fires the largest first; unclipped, so silent classes keep their gradient).
    """

    def __init__(self, sizes, *, card: NetworkCard, device="ideal", seed: int = 0):
        super().__init__()
        p = card.periphery
        sizes = [int(v) for v in sizes]
        self.layers = nn.ModuleList(
            AnalogLinear(a, b, bias=False, device=device, tile=(p.tile_rows, p.tile_cols), dac_bits=p.dac_bits,
                         adc_bits=p.adc_bits, adc_range=p.adc_range, seed=seed + 101 * i, init_gain=card.init_gain)
            for i, (a, b) in enumerate(zip(sizes, sizes[1:])))
        self.card = card
        self.generator = torch.Generator().manual_seed(seed + 31)
        self.meta = {"recipe": card.to_dict(), "coding": "latency", "steps": card.dstd_steps, "seed": seed}
        self.neuron_counts: dict[str, list[int]] = {}     # per layer: [updates, spikes] (cost ledger)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .neurons import dstd_walk
        c = self.card.charge
        t = 1.0 - x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            v1, _ = dstd_walk(t, layer.weight.t(), c.e_plus, c.e_minus, c.leak, 1.0, self.card.dstd_steps,
                               "random" if self.training else None, self.generator, read=layer)
            _count_charge(self.neuron_counts, f"layers.{i}", v1, fires=i < len(self.layers) - 1)
            if i == len(self.layers) - 1:
                # readout: the output neurons' charge at the end of the phase (the RC ramp would
                # fire them at 1 - v, earliest = largest v); not clipped, so every class keeps a gradient
                return self.card.logit_scale * v1
            t = (1.0 - v1).clamp(0.0, 1.0)


class ChargeVGG(nn.Module):
    r"""VGG7-like charge-domain CNN in time coding (Sakemi et al.), trained through DSTD.

    Six 3x3 convolutions (widths ``w, w, 2w, 2w, 4w, 4w``) on crossbars with a min-pool of
    spike times (the earliest spike wins: max-pooling of the signal) after every pair, then a
    fully connected readout whose end-of-phase charge gives the logits. Each conv layer is an
    RC-spike layer of reversal-potential neurons: :math:`g` is read through the array
    (im2col), :math:`\sum S\beta W` is the same convolution with :math:`\beta W`.
    """

    def __init__(self, width: int, *, card: NetworkCard, device="ideal", seed: int = 0, input_shape=(3, 32, 32),
                 classes: int = 10):
        super().__init__()
        from .crossbar import AnalogConv2d
        p = card.periphery
        xb = dict(device=device, tile=(p.tile_rows, p.tile_cols), dac_bits=p.dac_bits, adc_bits=p.adc_bits,
                  adc_range=p.adc_range)
        widths = [width, width, 2 * width, 2 * width, 4 * width, 4 * width]
        cin, convs = input_shape[0], []
        for i, c in enumerate(widths):
            convs.append(AnalogConv2d(cin, c, 3, padding=1, bias=False, seed=seed + 17 * i, init_gain=card.init_gain,
                                      **xb))
            cin = c
        self.convs = nn.ModuleList(convs)
        h, w = input_shape[1], input_shape[2]
        for _ in range(3):
            h, w = max(1, h // 2), max(1, w // 2)
        self.fc = AnalogLinear(cin * h * w, classes, bias=False, seed=seed + 991, init_gain=card.init_gain, **xb)
        self.card, self.input_shape = card, tuple(input_shape)
        self.generator = torch.Generator().manual_seed(seed + 31)
        self.meta = {"recipe": card.to_dict(), "coding": "latency", "steps": card.dstd_steps, "seed": seed}
        self.neuron_counts: dict[str, list[int]] = {}     # per layer: [updates, spikes] (cost ledger)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F
        from .neurons import dstd_walk, beta_of, dstd_rc_membrane
        c = self.card.charge
        off = "random" if self.training else None
        t = 1.0 - x.reshape(-1, *self.input_shape)
        for i, conv in enumerate(self.convs):
            w4 = conv.weight.reshape(conv.out_channels, conv.in_channels, 3, 3)
            bw4 = beta_of(w4, c.e_plus, c.e_minus)
            v = dstd_rc_membrane(t, conv, lambda S, bw4=bw4: F.conv2d(S, bw4, padding=1), alpha=c.leak,
                                 steps=self.card.dstd_steps, offset=off, generator=self.generator)
            _count_charge(self.neuron_counts, f"convs.{i}", v, fires=True)
            t = (1.0 - v).clamp(0.0, 1.0)
            if i % 2 == 1 and t.shape[-1] > 1:
                t = -F.max_pool2d(-t, 2)                 # earliest spike of each 2x2 window
        t = t.reshape(t.shape[0], -1)
        v1, _ = dstd_walk(t, self.fc.weight.t(), c.e_plus, c.e_minus, c.leak, 1.0, self.card.dstd_steps, off,
                           self.generator, read=self.fc)
        _count_charge(self.neuron_counts, "fc", v1, fires=False)
        return self.card.logit_scale * v1


def vgg(width: int = 16, *, card: Optional[NetworkCard] = None, device="ideal", seed: int = 0,
        input_shape=(3, 32, 32), classes: int = 10) -> ChargeVGG:
    """VGG7-like charge-domain CNN (see :class:`ChargeVGG`)."""
    card = card or NetworkCard(name=f"vgg7-charge-w{width}", kind="charge-vgg", width=width)
    return ChargeVGG(width, card=card, device=device, seed=seed, input_shape=input_shape, classes=classes)


# ------------------------------------------------------------------------- checkpoints
def _xbar_layers(net) -> list:
    from .crossbar import analog_layers
    return analog_layers(net)


def _mirror_keys(net) -> set:
    """State-dict keys of the analog weight mirrors (the crossbars hold the truth)."""
    analog = {id(m) for m in _xbar_layers(net)}
    return {f"{name}.weight" if name else "weight" for name, m in net.named_modules() if id(m) in analog}


def save_checkpoint(net, path: str | Path, **extra) -> None:
    """Save a network with its chips: recipe, coding, data shape, digital parameters and every
    crossbar's full state (conductances, device-to-device draws, RNG state, counters, device
    card). The file is written under a temporary name, ``fsync``'d and renamed over ``path``:
    a crash or a full disk leaves the earlier checkpoint as it was
    (:class:`~neurosal.files.OutputError`)."""
    import torch
    from .files import atomic
    xbars = [layer.crossbar.state_dict() for layer in _xbar_layers(net)]
    digital = {k: v for k, v in net.state_dict().items() if k not in _mirror_keys(net)}
    import io
    buf = io.BytesIO()    # serialized in memory: a full disk is then a plain OSError on write
    if hasattr(net, "attached"):                  # SAnet: which attention blocks the network runs with
        extra.setdefault("attached", sorted(int(v) for v in net.attached))
    torch.save({"format": "neurosal-checkpoint-1", "meta": net.meta, "digital": digital, "crossbars": xbars,
                "rngs": _module_rngs(net), **extra}, buf)
    with atomic(path, what="checkpoint") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())


def _module_rngs(net) -> dict:
    """The random streams modules keep outside their state dicts (input spikes, random
    offsets): ``{"<module>.<attribute>": state}``."""
    from .accel import Generators
    out = {}
    for name, m in net.named_modules():
        for k, v in vars(m).items():
            if isinstance(v, torch.Generator):
                out[f"{name}.{k}"] = v.get_state()
            elif isinstance(v, Generators):
                out[f"{name}.{k}"] = v.state_dict()
    return out


def _load_module_rngs(net, rngs: dict) -> None:
    from .accel import Generators
    for name, m in net.named_modules():
        for k, v in vars(m).items():
            st = rngs.get(f"{name}.{k}")
            if st is None:
                continue
            if isinstance(v, torch.Generator) and isinstance(st, torch.Tensor):
                v.set_state(st)
            elif isinstance(v, Generators) and isinstance(st, dict):
                v.load_state_dict(st)


def _card_name(d) -> str:
    return str(d.get("name", "?")) if isinstance(d, dict) else "?"


def _as_list(v) -> list:
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]


def _differs(a: dict, b: dict) -> list:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _check_fits(p: Path, ck: dict, net, layers) -> None:
    """A checkpoint runs only on the network, coding, device and data shape it was made for;
    anything else is an error that names both (never a silent run on the wrong chip)."""
    meta = ck.get("meta") if isinstance(ck.get("meta"), dict) else {}
    mine = getattr(net, "meta", {}) or {}
    a, b = meta.get("recipe"), mine.get("recipe")
    if isinstance(a, dict) and isinstance(b, dict) and a != b:
        if _card_name(a) != _card_name(b):
            raise ValueError(f"{p}: the checkpoint holds network {_card_name(a)!r}, not {_card_name(b)!r} "
                             f"(--network); pass --network {_card_name(a)}")
        raise ValueError(f"{p}: the checkpoint's recipe {_card_name(a)!r} differs from the one given in "
                         f"{', '.join(_differs(a, b))}")
    if "coding" in meta and "coding" in mine and meta["coding"] != mine["coding"]:
        raise ValueError(f"{p}: the checkpoint was trained with coding {meta['coding']!r}, not {mine['coding']!r} "
                         f"(--coding); pass --coding {meta['coding']}")
    for key, what in (("input_shape", "inputs of shape"), ("classes", "classes:")):
        if meta.get(key) is not None and mine.get(key) is not None and _as_list(meta[key]) != _as_list(mine[key]):
            raise ValueError(f"{p}: the checkpoint was trained on {what} {meta[key]}, these data have {mine[key]} "
                             "(--dataset / --crop)")
    for layer, sd in zip(layers, ck["crossbars"]):
        theirs, ours = sd.get("card") if isinstance(sd, dict) else None, layer.crossbar.device.card.to_dict()
        if isinstance(theirs, dict) and theirs != ours:
            if _card_name(theirs) != _card_name(ours):
                raise ValueError(f"{p}: the checkpoint's chip has device {_card_name(theirs)!r}, not "
                                 f"{_card_name(ours)!r} (--device); pass --device {_card_name(theirs)}")
            raise ValueError(f"{p}: the checkpoint's device card {_card_name(theirs)!r} differs from the card "
                             f"{_card_name(ours)!r} given now in {', '.join(_differs(theirs, ours))}")


def load_checkpoint(net, path: str | Path) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``net`` (same recipe)."""
    import torch
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint file")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)     # tensors and plain data: no code runs
    except Exception as exc:  # torch raises several types for a corrupt file
        raise ValueError(f"{p}: not a readable neurosal checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != "neurosal-checkpoint-1":
        raise ValueError(f"{p}: not a neurosal checkpoint (no 'format' = 'neurosal-checkpoint-1')")
    layers = _xbar_layers(net)
    if not isinstance(ck.get("crossbars"), list) or not isinstance(ck.get("digital"), dict):
        raise ValueError(f"{p}: a damaged neurosal checkpoint (no 'crossbars' list or 'digital' table)")
    _check_fits(p, ck, net, layers)
    if len(ck["crossbars"]) != len(layers):
        raise ValueError(f"{p}: checkpoint has {len(ck['crossbars'])} crossbar layers, the network {len(layers)}")
    for layer, sd in zip(layers, ck["crossbars"]):
        layer.crossbar.load_state_dict(sd)
    missing = net.load_state_dict(ck["digital"], strict=False)
    bad = list(missing.unexpected_keys)
    lost = [k for k in missing.missing_keys if k not in _mirror_keys(net)]
    if bad or lost:
        raise ValueError(f"{p}: checkpoint does not fit this network (unexpected {bad}, missing {lost})")
    if isinstance(ck.get("rngs"), dict):
        _load_module_rngs(net, ck["rngs"])
    if hasattr(net, "attached") and isinstance(ck.get("attached"), list):
        net.attach([int(v) for v in ck["attached"]])
    return ck
