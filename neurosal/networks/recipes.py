r"""Network recipes (``networks/*.toml``): which layers, which neurons, which periphery, as
data, like a device card. A path to a TOML file of the user's own works wherever a recipe name
does. The builders (:mod:`neurosal.networks.builders`) turn a recipe into a network on crossbars.

May import: :mod:`neurosal.cards`, :mod:`neurosal.neurons` (surrogate names), :mod:`neurosal.engine`
(decoder names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..cards import CardError, from_dict, list_cards, load_toml, resolve_card, spec, to_dict
from ..engine.simulator import DECODERS
from ..neurons import SURROGATES

__all__ = ["NetworkCard", "LIFCard", "ChargeCard", "PeripheryCard", "KINDS", "CODINGS", "load_network",
           "list_networks", "recipe_for"]

CODINGS = ("rate", "spike", "latency")

#: the kinds of network a recipe can describe
KINDS = {
    "mlp": "a chain of fully connected crossbar layers (rate, LIF or charge-domain neurons)",
    "resnet": "SAnet / ResNet: analog convolutions with batch norm, residual adds and optional digital attention",
    "charge-mlp": "a charge-domain RC-spike MLP in time coding, trained through DSTD",
    "charge-vgg": "a VGG7-like charge-domain RC-spike CNN in time coding, trained through DSTD",
}


def _check_depth(card, source) -> None:
    if (card.depth - 2) % 6:
        raise CardError(source, "depth", f"ResNet depth must be 6n + 2 (8, 14, 20, ...), got {card.depth}")
    if card.cp_frac_bits >= card.cp_bits:
        raise CardError(source, "cp_frac_bits", "must be below cp_bits")


def _check_sizes(card, source) -> None:
    if len(card.sizes) < 2:
        raise CardError(source, "sizes", "needs at least an input and an output size, e.g. [64, 100, 10]")
    for i, s in enumerate(card.sizes):
        if not float(s).is_integer():
            raise CardError(source, f"sizes[{i}]", f"layer sizes are whole numbers, got {s}")


#: what each kind's recipe must satisfy beyond its fields' ranges
_CHECKS = {"mlp": (_check_sizes,), "charge-mlp": (_check_sizes,), "resnet": (_check_depth,), "charge-vgg": ()}


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
    column_gain: float = spec(0.0, lo=0, hi=1, doc="std of each forward column converter's gain error (relative), "
                              "drawn at fabrication; needs adc_bits")
    column_offset: float = spec(0.0, lo=0, hi=1, doc="std of each forward column converter's offset (fraction of "
                                "the ADC's full scale), drawn at fabrication; needs adc_bits")


@dataclass(frozen=True)
class NetworkCard:
    """A network recipe.

    ``sizes`` lists the layer widths from input to output (``kind = "mlp"``);
    ``init_gain`` scales the initial uniform weight bound :math:`1/\\sqrt{n_{in}}`;
    ``p_max`` is the spike probability per step of a full-scale input in rate coding.
    """

    name: str = spec()
    kind: str = spec("mlp", choices=tuple(KINDS), doc="what the builder makes: " + "; ".join(
        f"{k}: {v}" for k, v in KINDS.items()))
    sizes: tuple[float, ...] = spec((), lo=1, hi=1_000_000, doc="mlp: layer widths, input to output")
    depth: int = spec(8, lo=8, hi=200, doc="resnet: 6n + 2")
    width: int = spec(16, lo=1, hi=1024, doc="resnet: channels of the first stage")
    attention: str = spec("none", choices=("none", "se", "cbam"))
    attach: tuple[float, ...] = spec((1, 2, 3), lo=1, hi=3, doc="resnet: stages with an attention block")
    attention_position: str = spec("stage", choices=("stage", "residual"),
                                   doc="resnet: an attention block gates the stage's output (after its last "
                                       "residual add) or, as in SE-ResNet, the last block's residual branch "
                                       "(after its batch norm, before the add)")
    batch_norm: str = spec("digital", choices=("digital", "frozen"),
                           doc="resnet: 'digital' (a trained digital batch-norm unit) or 'frozen' (folded into a fixed "
                               "per-channel gain and offset from one calibration read of the fresh chip, never "
                               "trained: a chip without a digital batch-norm unit)")
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
    spike_rate: float = spec(0.0, lo=0, hi=0.5, doc="spike coding of LIF chains: before training (and for a fresh "
                                                    "network in simulate), scale each hidden layer's digital gain "
                                                    "so that it fires this many spikes per neuron and step on a "
                                                    "calibration batch of training data; 0: off")
    bias: bool = spec(True)
    lif: LIFCard = spec(default_factory=LIFCard)
    charge: ChargeCard = spec(default_factory=ChargeCard)
    periphery: PeripheryCard = spec(default_factory=PeripheryCard)

    def _validate(self, source) -> None:
        for check in _CHECKS.get(self.kind, ()):
            check(self, source)

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
