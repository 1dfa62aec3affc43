"""Running any network on the chip through its protocol: one forward pass for a coding, test
accuracy, the calibration of the ADC ranges, and the crossbars a network holds.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.engine.protocol`, :mod:`neurosal.engine.simulator`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..crossbar import analog_layers, calibrate_adc
from .simulator import Probe, Simulator, encoder_for

__all__ = ["forward", "loss_scores", "evaluate", "calibrate", "calibrate_gains", "calibration_batch", "initialize_gains", "population_counts", "firing_rates",
           "activity_warnings",
           "crossbars", "device_of"]


def forward(net, x: torch.Tensor, *, coding: str, steps: int, seed: int = 0):
    """Run ``net`` on ``x`` (``[batch, features]`` in [0, 1]) with ``coding`` for ``steps``;
    returns what the network's :meth:`~neurosal.engine.protocol.ChipNetwork.run` returns (at
    least ``.scores``)."""
    return net.run(x, coding=coding, steps=steps, seed=seed)


def loss_scores(net, result, coding: str) -> torch.Tensor:
    """The scores of ``result`` the training loss is taken on (the network says which)."""
    return net.loss_scores(result, coding)


def device_of(net) -> torch.device:
    """The torch device the network's chip lives on."""
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(net, x: torch.Tensor, y: torch.Tensor, *, coding: str, steps: int, batch: int = 512,
             seed: int = 0) -> float:
    """Test accuracy with the network's decoder (batch norm in inference mode)."""
    correct = 0
    was = net.training
    net.eval()
    dev = device_of(net)
    try:
        for i in range(0, len(y), batch):
            res = forward(net, x[i:i + batch].to(dev), coding=coding, steps=steps, seed=seed + i)
            correct = correct + (res.scores.argmax(1) == y[i:i + batch].to(dev)).sum()   # read once, at the end
    finally:
        net.train(was)
    return int(correct) / max(1, len(y))


def crossbars(net) -> list:
    """Every crossbar of ``net``, in module order."""
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


def _lif_rate(neurons, current: torch.Tensor, bias, gain: float) -> float:
    """Spikes per neuron and step of LIF ``neurons`` driven by ``gain * (current - bias) + bias``."""
    cur = (current - bias) * gain + bias if bias is not None else current * gain
    st = neurons.init_state(cur.shape[1], cur.shape[2], dtype=cur.dtype, device=cur.device)
    z, _, _ = neurons(cur, st, keep_v=False)
    return float(z.mean())


@torch.no_grad()
def calibrate_gains(net, x: torch.Tensor, *, steps: int, rate: float, seed: int = 0, tol: float = 0.1) -> dict:
    r"""Data-driven initialization of a spike-coded chain: layer by layer from the input, scale
    each spiking layer's digital gain (the periphery's multiplier after the ADC; the
    conductances are untouched) so that its neurons fire ``rate`` spikes per neuron and step
    on the calibration inputs ``x``, given the calibrated layers before it.

    Activity then reaches the readout whatever the depth, fan-in or threshold (with
    uniform :math:`\pm g/\sqrt{n}` weights and rate-coded MNIST, the second hidden layer of a
    784-400-400-10 LIF chain is silent). The same idea as the data-driven and fluctuation-
    driven initializations of SNN training (e.g. LSUV-style layer-wise scaling; Rossbroich,
    Gygax & Zenke 2022, who set the membrane fluctuations relative to threshold), here with
    the firing rate itself as the target. Each layer costs one counted read of the batch
    through the chip (its input currents); the gain is then found by bisection on those
    currents (the read is linear in the gain), with no further reads. Returns
    ``{layer: {"gain": factor applied, "rate": rate reached}}``.
    """
    if not 0 < rate < 1:
        raise ValueError(f"target firing rate {rate!r}: allowed: 0 < rate < 1 (spikes per neuron and step)")
    layers = getattr(net, "layers", None)
    out = {}
    if layers is None or getattr(net, "structure", None) != "chain":
        return out
    was = net.training
    net.eval()
    try:
        for layer in layers:
            neu = layer.neurons
            if not neu.spiking or getattr(neu, "kind", None) != "lif" or not math.isfinite(neu.p.v_th):
                continue
            res = Simulator(net, chunk=steps).run(encoder_for("rate", x, steps, seed=seed), steps=steps,
                                                  probes=[Probe(layer.name, ("current",))])
            cur = res.probes[f"{layer.name}/current"]
            syn = layer.synapse
            bias = syn.bias.detach() if getattr(syn, "bias", None) is not None else None
            r1 = _lif_rate(neu, cur, bias, 1.0)
            lo, hi = 1.0, 1.0
            if r1 < rate:
                while _lif_rate(neu, cur, bias, hi) < rate and hi < 1e6:
                    lo, hi = hi, hi * 2.0
            else:
                while _lif_rate(neu, cur, bias, lo) > rate and lo > 1e-6:
                    lo, hi = lo / 2.0, lo
            g, r = 1.0, r1
            for _ in range(40):                       # bisection in log gain
                if abs(r - rate) <= tol * rate:
                    break
                g = math.sqrt(lo * hi)
                r = _lif_rate(neu, cur, bias, g)
                if r < rate:
                    lo = g
                else:
                    hi = g
            _scale_gain(syn, g)
            out[layer.name] = {"gain": g, "rate": r}
    finally:
        net.train(was)
    return out


def calibration_batch(x_train: torch.Tensor, seed: int, n: int = 256) -> torch.Tensor:
    """The training samples every calibration of a run reads (the same ``n`` for a seed)."""
    idx = torch.randperm(len(x_train), generator=torch.Generator(device="cpu").manual_seed(seed + 7), device="cpu")
    return x_train[idx[:n].to(x_train.device)]


def initialize_gains(net, card, x_train: torch.Tensor, *, coding: str, steps: int, seed: int):
    """The recipe's data-driven initialization of a fresh network (``card.spike_rate``, spike
    coding; see :func:`calibrate_gains`) on the run's calibration batch of ``x_train``;
    returns its report, or None where the recipe asks for none."""
    frozen = any(getattr(m, "frozen", False) for m in net.modules())   # batch norm fixed at calibration
    if coding != "spike" and not frozen:
        return None
    x = calibration_batch(x_train, seed).to(device_of(net))
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if bns:
        return calibrate_batch_norm(net, x, bns)
    if not getattr(card, "spike_rate", 0):
        return None
    return calibrate_gains(net, x, steps=steps, rate=card.spike_rate, seed=seed + 13) or None


@torch.no_grad()
def calibrate_batch_norm(net, x: torch.Tensor, bns=None) -> dict:
    """Set every batch norm's running statistics to those of the calibration inputs ``x`` (one
    counted forward in training mode, cumulative average). A fresh network's running
    statistics (mean 0, variance 1) do not match its currents, so in inference its spike-coded
    populations past the stem stay silent; with the statistics of data they fire as in
    training. Returns ``{"batch_norm": layers set}``."""
    bns = bns if bns is not None else [m for m in net.modules()
                                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    was = net.training
    moms = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                     # cumulative average over the calibration batch
    net.train()
    try:
        net(x)
    finally:
        for m, mo in zip(bns, moms):
            m.momentum = mo
        net.train(was)
    return {"batch_norm": len(bns)}


def _scale_gain(syn, g: float) -> None:
    """Multiply a synapse's digital output gain by ``g`` (an analog layer's ``weight_scale``,
    the effective weights with it; a digital layer's weights)."""
    if hasattr(syn, "weight_scale"):
        syn.weight_scale *= g
        syn._sync()
    else:
        syn.weight.mul_(g)


def population_counts(net) -> dict:
    """Cumulative ``{population: (neuron updates, spikes)}`` of every population of ``net`` that
    can fire (a leaky-integrator readout, whose threshold is infinite, is left out). Two of
    these around a run give its firing rates (:func:`firing_rates`) with no extra reads."""
    out = {}
    layers = getattr(net, "layers", None)
    if getattr(net, "structure", None) == "chain" and layers is not None:
        for layer in layers:
            p = getattr(layer.neurons, "p", None)
            if layer.neurons.spiking and not (p is not None and not math.isfinite(getattr(p, "v_th", 0.0))):
                out[layer.name] = (int(layer.neuron_updates), int(layer.spike_count))
        return out
    for name, (upd, sp) in (getattr(net, "neuron_counts", None) or {}).items():
        out[name] = (int(upd), int(sp))
    return out


def firing_rates(before: dict, after: dict) -> dict:
    """Spikes per neuron update (per neuron and step; charge-domain layers: per neuron and
    phase) of each population between two :func:`population_counts`."""
    out = {}
    for name, (u1, s1) in after.items():
        u0, s0 = before.get(name, (0, 0))
        if u1 > u0:
            out[name] = (s1 - s0) / (u1 - u0)
    return out


def activity_warnings(rates: dict, silent: float = 1e-3, saturated: float = 0.9) -> list:
    """Plain-language warnings for the spiking populations of ``rates`` (:func:`firing_rates`)
    that are silent (below ``silent`` spikes per neuron and step) or saturated (above
    ``saturated``)."""
    out = []
    for name, r in rates.items():
        if r < silent:
            out.append(f"layer {name} is silent ({r:.2g} spikes per neuron and step): no error reaches the layers "
                       f"before it through the surrogate; raise its gain (the recipe's spike_rate calibrates it) or the input rate")
        elif r > saturated:
            out.append(f"layer {name} is saturated ({r:.2f} spikes per neuron and step): it no longer codes its input")
    return out
