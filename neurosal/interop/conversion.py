"""Put a torch model on the simulated chip: every ``nn.Linear`` and ``nn.Conv2d`` becomes an
analog layer on a crossbar whose weights are *programmed* by write-and-verify (pulses and verify
reads counted); everything else (activations, pooling, normalization, ...) stays as it is.

The result trains on chip with :class:`~neurosal.crossbar.PulseSGD` or a rule of
:mod:`neurosal.learning`, or is evaluated like any torch model. Per layer the digital gain
``s`` maps the largest weight to 90 % of a differential pair's range (a weight at the very end
needs both devices at their bounds), and the chip is programmed to ``W / s`` within
``tolerance`` (default: one nominal pulse step of the device, ``1 / Pmax``).

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.devices`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ..crossbar import AnalogConv2d, AnalogLinear, analog_layers, calibrate_adc
from ..devices import load_device

__all__ = ["convert", "ConvertReport"]


@dataclass
class ConvertReport:
    """What programming the converted model cost, per layer (by module name) and in all."""

    layers: dict = field(default_factory=dict)
    pulses: int = 0
    verify_reads: int = 0
    max_error: float = 0.0            # largest |w - target| after programming (weight units)


def _analog_for(name: str, m: nn.Module, k: int, kw: dict):
    if isinstance(m, nn.Linear):
        w = m.weight.detach()                                    # [out, in]
        scale = float(w.abs().max()) / 0.9 or 1.0
        a = AnalogLinear(m.in_features, m.out_features, bias=m.bias is not None, weight_scale=scale, seed=kw["seed"] + k,
                         **{x: kw[x] for x in ("device", "tile", "dac_bits", "adc_bits", "adc_range")})
        return a, w.t().reshape(m.in_features, m.out_features), scale
    for attr, ok, allowed in (("groups", m.groups == 1, "1"), ("dilation", tuple(m.dilation) == (1, 1), "1"),
                              ("padding_mode", m.padding_mode == "zeros", "'zeros'"),
                              ("stride", m.stride[0] == m.stride[1], "equal in both directions"),
                              ("padding", isinstance(m.padding, tuple) and m.padding[0] == m.padding[1],
                               "a number, equal in both directions")):
        if not ok:
            raise ValueError(f"{name}: Conv2d with {attr} = {getattr(m, attr)!r} is not supported on a crossbar; "
                             f"allowed: {allowed}")
    w = m.weight.detach()                                        # [out, in, kh, kw]
    scale = float(w.abs().max()) / 0.9 or 1.0
    a = AnalogConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride[0], padding=m.padding[0],
                     bias=m.bias is not None, weight_scale=scale, seed=kw["seed"] + k,
                     **{x: kw[x] for x in ("device", "tile", "dac_bits", "adc_bits", "adc_range")})
    return a, w.reshape(m.out_channels, -1).t(), scale          # rows: (in, kh, kw) as im2col unfolds


def convert(model: nn.Module, *, device="ideal", tile=(128, 128), adc_bits: Optional[int] = None,
            dac_bits: Optional[int] = None, adc_range: float = 12.0, tolerance: Optional[float] = None,
            seed: int = 0, calibrate: Optional[torch.Tensor] = None, quantile: float = 0.999):
    """A copy of ``model`` with its ``nn.Linear`` and ``nn.Conv2d`` layers on crossbars of
    ``device`` (programmed by write-and-verify); returns ``(model, ConvertReport)``.
    ``calibrate``: an input batch on which every finite ADC's range is set from the partial
    sums it reads (:func:`~neurosal.crossbar.calibrate_adc`); without it the ADCs keep
    ``adc_range``. The input model is left as it was."""
    dev = load_device(device)
    out = copy.deepcopy(model).cpu()
    kw = dict(device=dev, tile=tile, dac_bits=dac_bits, adc_bits=adc_bits, adc_range=adc_range, seed=seed)
    report = ConvertReport()
    targets = [(name, m) for name, m in out.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer to put on a crossbar")
    for k, (name, m) in enumerate(targets):
        analog, w, scale = _analog_for(name, m, 101 * k, kw)
        tol = tolerance if tolerance is not None else 1.0 / float(analog.crossbar.device.card.pmax)
        res = analog.crossbar.program((w / scale).to(analog.crossbar.dtype), tolerance=tol)
        with torch.no_grad():
            if m.bias is not None:
                analog.bias.copy_(m.bias.detach())
        analog._sync()
        err = float((analog.crossbar.weights() - w / scale).abs().max()) * scale
        report.layers[name] = {"kind": type(m).__name__, "shape": list(m.weight.shape), "pulses": int(res.pulses),
                               "verify_reads": int(res.verify_reads), "converged": float(res.converged),
                               "max_error": err, "weight_scale": scale}
        report.pulses += int(res.pulses)
        report.verify_reads += int(res.verify_reads)
        report.max_error = max(report.max_error, err)
        parent = out.get_submodule(name.rsplit(".", 1)[0]) if "." in name else out
        setattr(parent, name.rsplit(".", 1)[-1], analog)
    if calibrate is not None:
        was = out.training
        out.eval()
        with torch.no_grad():
            calibrate_adc([a.crossbar for a in analog_layers(out)], lambda: out(calibrate), quantile=quantile)
        out.train(was)
    return out, report
