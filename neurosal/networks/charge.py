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
from ..engine import ChipNetwork, Component, RunResult, Simulator
from ..neurons import beta_of, dstd_rc_membrane, dstd_walk, rc_membrane_exact

SOLVERS = ("dstd", "exact")

__all__ = ["ChargeMLP", "ChargeVGG", "SOLVERS"]


def _count_charge(counts: dict, key: str, v: torch.Tensor, fires: bool) -> None:
    """Neuron work of a charge-domain layer for the cost ledger: one integrate-and-compare per
    neuron and sample (the membrane integrates in analog, with no discrete updates), and one
    spike per neuron whose charge crosses threshold within the phase (v(1) > 0: t = 1 - v < 1)."""
    c = counts.setdefault(key, [0, 0])
    c[0] += v.numel()
    if fires:
        c[1] += tally((v.detach() > 0).sum())


def _count_exact(layer, t_in: torch.Tensor) -> None:
    """The array work of one exact (continuous-time) accumulation phase: every input spike that
    arrives inside the phase drives its row once and its current flows through the row's cells
    to every column; no ADC converts (the charge-domain neurons integrate the column currents)."""
    xb = layer.crossbar
    nnz = (t_in < 1.0).sum()
    xb.counters.add("forward_reads", t_in.shape[0])
    xb.counters.add("row_activations", nnz, xb.n_col_tiles)
    xb.counters.add("cell_reads", nnz, xb.cols)


class _ChargeEngine(ChipNetwork):
    """What the charge-domain networks share in the engine.

    The engine feeds them one step of analog input (``x``; the inputs spike at
    :math:`t = 1 - x`); inside that step every layer integrates over its own accumulation
    phase, one time window after the other (window 0: the input spikes, window ``i + 1``: the
    spikes of layer ``i``), and the spike times are what a probe records: timestamps
    ``(window + t) * dt`` with ``dt`` the phase length (the recipe's ``dt``). ``solver``:
    ``'dstd'`` (the DSTD grid of ``card.dstd_steps`` points, random offsets in training, none
    in inference) or ``'exact'`` (inference only: the event-driven exact solution, see
    :func:`~neurosal.neurons.rc_membrane_exact`)."""

    #: the engine runs one step (the whole phase sequence); the network records its input spikes
    engine_steps = 1
    records_input = True
    solver = "dstd"

    def set_solver(self, solver: str) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"unknown charge-domain solver {solver!r}; allowed: {', '.join(SOLVERS)}")
        self.solver = solver

    def _solver(self) -> str:
        if self.solver == "exact" and self.training and torch.is_grad_enabled():
            raise ValueError("the exact charge-domain solver has no gradient: train with solver 'dstd' "
                             "(DSTD, random offsets), run inference with 'dstd' or 'exact'")
        return self.solver

    def engine_input(self, coding: str, steps: int):
        """What the engine feeds: one step of direct analog input (the spike times are 1 - x)."""
        return "direct", 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Simulator(self, dt=self.card.dt, chunk=1).run(x.reshape(1, x.shape[0], -1), steps=1,
                                                              spikes_in=False).scores

    def finish(self, run) -> RunResult:
        return RunResult(scores=run.acc["scores"])


class ChargeMLP(_ChargeEngine, nn.Module):
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
                         adc_bits=p.adc_bits, adc_range=p.adc_range, seed=seed + 101 * i, init_gain=card.init_gain,
                         column_gain=p.column_gain, column_offset=p.column_offset)
            for i, (a, b) in enumerate(zip(sizes, sizes[1:])))
        self.card = card
        self.generator = torch.Generator().manual_seed(seed + 31)
        self.meta = {"recipe": card.to_dict(), "coding": "latency", "steps": card.dstd_steps, "seed": seed}
        self.neuron_counts: dict[str, list[int]] = {}     # per layer: [updates, spikes] (cost ledger)

    def components(self) -> dict:
        """Each layer's neurons (``layers.<i>``): their spike times."""
        return {f"layers.{i}": Component(("spikes",), (layer.out_features,)) for i, layer in enumerate(self.layers)}

    def step(self, run, h: torch.Tensor, spikes: bool) -> None:
        c = self.card.charge
        x = h[0].reshape(h.shape[1], -1)
        t = 1.0 - x
        run.spike_times("input", t, 0)
        solver = self._solver()
        for i, layer in enumerate(self.layers):
            if solver == "exact":
                v1 = rc_membrane_exact(t, layer.weight.t(), c.e_plus, c.e_minus, c.leak)
                _count_exact(layer, t)
            else:
                v1, _ = dstd_walk(t, layer.weight.t(), c.e_plus, c.e_minus, c.leak, 1.0, self.card.dstd_steps,
                                  "random" if self.training else None, self.generator, read=layer)
            _count_charge(self.neuron_counts, f"layers.{i}", v1, fires=i < len(self.layers) - 1)
            out_t = (1.0 - v1).clamp(0.0, 1.0)
            run.spike_times(f"layers.{i}", out_t, i + 1)
            if i == len(self.layers) - 1:
                # readout: the output neurons' charge at the end of the phase (the RC ramp would
                # fire them at 1 - v, earliest = largest v); not clipped, so every class keeps a gradient
                run.acc["scores"] = self.card.logit_scale * v1
                return
            t = out_t


class ChargeVGG(_ChargeEngine, nn.Module):
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
                  adc_range=p.adc_range, column_gain=p.column_gain, column_offset=p.column_offset)
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

    def components(self) -> dict:
        """Each convolution's neurons (``convs.<i>``, spike times over channel x height x width)
        and the readout (``fc``)."""
        out, (_, h, w) = {}, self.input_shape
        for i, conv in enumerate(self.convs):
            out[f"convs.{i}"] = Component(("spikes",), (conv.out_channels, h, w))
            if i % 2 == 1 and w > 1:
                h, w = h // 2, w // 2
        out["fc"] = Component(("spikes",), (self.fc.out_features,))
        return out

    def step(self, run, h: torch.Tensor, spikes: bool) -> None:
        c = self.card.charge
        if self._solver() == "exact":
            raise ValueError(f"{self.card.name}: the exact solver covers fully connected charge layers "
                             "(charge-mlp recipes); convolutional charge layers run with solver 'dstd'")
        off = "random" if self.training else None
        x = h[0].reshape(-1, *self.input_shape)
        t = 1.0 - x
        run.spike_times("input", t, 0)
        for i, conv in enumerate(self.convs):
            w4 = conv.weight.reshape(conv.out_channels, conv.in_channels, 3, 3)
            bw4 = beta_of(w4, c.e_plus, c.e_minus)
            v = dstd_rc_membrane(t, conv, lambda S, bw4=bw4: F.conv2d(S, bw4, padding=1), alpha=c.leak,
                                 steps=self.card.dstd_steps, offset=off, generator=self.generator)
            _count_charge(self.neuron_counts, f"convs.{i}", v, fires=True)
            t = (1.0 - v).clamp(0.0, 1.0)
            run.spike_times(f"convs.{i}", t, i + 1)
            if i % 2 == 1 and t.shape[-1] > 1:
                t = -F.max_pool2d(-t, 2)                 # earliest spike of each 2x2 window
        t = t.reshape(t.shape[0], -1)
        v1, _ = dstd_walk(t, self.fc.weight.t(), c.e_plus, c.e_minus, c.leak, 1.0, self.card.dstd_steps, off,
                          self.generator, read=self.fc)
        _count_charge(self.neuron_counts, "fc", v1, fires=False)
        run.spike_times("fc", (1.0 - v1).clamp(0.0, 1.0), len(self.convs) + 1)
        run.acc["scores"] = self.card.logit_scale * v1
