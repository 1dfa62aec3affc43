r"""Charge-domain physical neural networks in time coding (Sakemi et al.), trained through DSTD:
an MLP and a VGG7-like CNN whose layers are RC-spike layers of reversal-potential neurons on
crossbars.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`, :mod:`neurosal.engine`, :mod:`neurosal.accel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..accel import tally
from ..crossbar import AnalogConv2d, AnalogLinear
from ..engine import ChipNetwork
from ..neurons import beta_of, dstd_rc_membrane, dstd_walk

__all__ = ["ChargeMLP", "ChargeVGG"]


def _count_charge(counts: dict, key: str, v: torch.Tensor, fires: bool) -> None:
    """Neuron work of a charge-domain layer for the cost ledger: one integrate-and-compare per
    neuron and sample (the membrane integrates in analog, with no discrete updates), and one
    spike per neuron whose charge crosses threshold within the phase (v(1) > 0: t = 1 - v < 1)."""
    c = counts.setdefault(key, [0, 0])
    c[0] += v.numel()
    if fires:
        c[1] += tally((v.detach() > 0).sum())


class ChargeMLP(ChipNetwork, nn.Module):
    r"""Charge-domain MLP in time coding, trained with DSTD (Sakemi et al.).

    Inputs spike at :math:`t = 1 - x`; every layer is an RC-spike layer of charge-domain
    neurons with reversal potentials ``card.charge`` on a crossbar: the inputs switched on by
    the spikes are read through the array (:class:`~neurosal.crossbar.AnalogLinear`, with its
    periphery), and the layer fires at :math:`\mathrm{clip}(1 - v(1), 0, 1)`. In training the
    DSTD grid has ``card.dstd_steps`` points with a random offset per batch; in evaluation no
    offset. Scores: ``logit_scale * v_out(1)``, the output charge at the end of the phase (the
    RC ramp fires the largest first; unclipped, so silent classes keep their gradient).
    """

    def __init__(self, sizes, *, card, device="ideal", seed: int = 0):
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


class ChargeVGG(ChipNetwork, nn.Module):
    r"""VGG7-like charge-domain CNN in time coding (Sakemi et al.), trained through DSTD.

    Six 3x3 convolutions (widths ``w, w, 2w, 2w, 4w, 4w``) on crossbars with a min-pool of
    spike times (the earliest spike wins: max-pooling of the signal) after every pair, then a
    fully connected readout whose end-of-phase charge gives the logits. Each conv layer is an
    RC-spike layer of reversal-potential neurons: :math:`g` is read through the array
    (im2col), :math:`\sum S\beta W` is the same convolution with :math:`\beta W`.
    """

    def __init__(self, width: int, *, card, device="ideal", seed: int = 0, input_shape=(3, 32, 32),
                 classes: int = 10):
        super().__init__()
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
