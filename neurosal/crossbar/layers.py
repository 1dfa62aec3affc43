"""Analog layers: ``torch.nn`` modules whose weights live on a :class:`~.array.Crossbar`.

The crossbar (conductances, device-to-device draws, clocks, noise generators, counters)
follows the module: ``layer.to("cuda")`` or ``layer.double()`` moves every tensor the chip
holds, not only the parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .array import Crossbar

__all__ = ["AnalogLinear", "AnalogConv2d", "analog_layers"]


class _AnalogMatmul(torch.autograd.Function):
    """y = crossbar.forward(x); dL/dx by the transposed read; dL/dW = dy^T x (digital)."""

    @staticmethod
    def forward(ctx, x, weight, layer):
        ctx.layer = layer
        ctx.save_for_backward(x)
        return layer.crossbar.forward(x, spikes=layer.spikes, path=layer.path) * layer.weight_scale

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        layer = ctx.layer
        gx = None
        macs = x.shape[0] * layer.crossbar.rows * layer.crossbar.cols
        if ctx.needs_input_grad[0]:
            if layer.digital_backward:     # errors computed off-array in full precision (hybrid rule)
                gx = (gy @ layer.crossbar.weights().t()) * layer.weight_scale
                layer.crossbar.counters.add("digital_macs", macs)
            else:
                gx = layer.crossbar.backward(gy) * layer.weight_scale
        gw = None
        if layer.record_outer is not None:
            # an in-array update (pulse trains) takes the vectors themselves: no digital outer product
            layer.record_outer.append((x.detach(), gy.detach()))
        elif ctx.needs_input_grad[1]:
            gw = gy.t() @ x                                      # [out, in], like nn.Linear
            layer.crossbar.counters.add("digital_macs", macs)
        return gx, gw, None


class _AnalogConv(torch.autograd.Function):
    """Convolution read through the crossbar (im2col: one array read per output position).

    Backward: dL/dW by torch's convolution weight gradient (the digital outer product,
    without keeping the unfolded input); dL/dx by transposed array reads folded back
    (``col2im``), or, with ``digital_backward`` (errors computed off-array), by torch's
    convolution input gradient on the effective weights.
    """

    @staticmethod
    def forward(ctx, x, weight, layer, out_hw):
        b = x.shape[0]
        ho, wo = out_hw
        kh, kw = layer.kernel_size
        p, s = layer._p, layer._s
        ctx.layer = layer
        ctx.save_for_backward(x)
        if layer.conv_read and not layer.spikes and layer.crossbar.dac_bits is None and layer.path != "event":
            return layer.crossbar.forward_conv(x, (kh, kw), s, p) * layer.weight_scale
        xp = F.pad(x, (p, p, p, p)) if p else x
        # patches as a strided view [B, C, Ho, Wo, kh, kw] -> rows (b, ho, wo), one copy
        patches = xp.unfold(2, kh, s).unfold(3, kw, s)
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(b * ho * wo, -1)
        y = layer.crossbar.forward(flat, spikes=layer.spikes, path=layer.path) * layer.weight_scale
        # NCHW view of the channels-last result (no copy)
        return y.reshape(b, ho, wo, layer.out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        layer = ctx.layer
        kh, kw = layer.kernel_size
        shape4 = (layer.out_channels, layer.in_channels, kh, kw)
        gx = gw = None
        macs = gy.shape[0] * gy.shape[2] * gy.shape[3] * layer.crossbar.rows * layer.crossbar.cols
        if ctx.needs_input_grad[1]:
            # NCHW-contiguous operands: oneDNN 3.12's AVX2 weight-gradient kernel for a strided
            # 1x1 convolution of channels-last tensors corrupts the heap on one thread (torch
            # 2.13 CPU; tests/test_crossbar.py::test_strided_1x1_weight_gradient_on_one_thread)
            gw = torch.nn.grad.conv2d_weight(x.contiguous(), shape4, gy.contiguous(), stride=layer._s,
                                             padding=layer._p).reshape(
                layer.out_channels, -1)
            layer.crossbar.counters.add("digital_macs", macs)
        if ctx.needs_input_grad[0]:
            if layer.digital_backward:
                w4 = (layer.crossbar.weights().t() * layer.weight_scale).reshape(shape4)
                gx = torch.nn.grad.conv2d_input(x.shape, w4, gy, stride=layer._s, padding=layer._p)
                layer.crossbar.counters.add("digital_macs", macs)
            else:
                gx = layer.crossbar.backward_conv(gy, x.shape, layer.kernel_size, layer._s, layer._p,
                                                  scale=layer.weight_scale)
        return gx, gw, None, None


class _AnalogBase(nn.Module):
    """Shared machinery of analog layers: crossbar, gain, weight mirror, lifecycle checks."""

    #: whether the layer can compute with a software weight instead (``software_weight``), for
    #: training off the array and programming the result (the ``verify`` rule)
    software_training = False

    def _setup(self, rows, cols, device, tile, dac_bits, adc_bits, adc_range, seed, weight_scale, init_bound,
               column_gain=0.0, column_offset=0.0):
        # the chip is fabricated and initialized on the CPU (same seed, same chip on every
        # accelerator); module.to(...) then moves it
        self.crossbar = Crossbar(rows, cols, device, tile=tile, dac_bits=dac_bits, adc_bits=adc_bits,
                                 adc_range=adc_range, column_gain=column_gain, column_offset=column_offset,
                                 seed=seed, torch_device="cpu")
        # digital gain so that the initial weights use half of the conductance range
        self.weight_scale = float(weight_scale) if weight_scale is not None else 2.0 * init_bound
        g = torch.Generator(device="cpu").manual_seed(seed + 7919)
        w0 = (torch.rand(rows, cols, generator=g, device="cpu") * 2 - 1) * init_bound / self.weight_scale
        self.crossbar.initialize(w0)
        # mirror of the effective weights, [out, in] like nn.Linear: carries .grad for PulseSGD
        self.weight = nn.Parameter(torch.empty(cols, rows, device="cpu"))
        self.weight._neurosal_layer = self      # PulseSGD finds the array through this
        self.spikes = False          # inputs are binary spikes (set by the simulator)
        self.path = "auto"           # event-driven / dense read choice (see Crossbar.forward)
        self.digital_backward = False  # True: backprop errors off-array (no transposed read)
        self.local_input = False       # True: no error passes back through this layer (DFA)
        self.record_outer = None       # a list: backward appends (x, dL/dy) instead of dL/dW (pulse trains)
        self.conv_read = True          # convs: per-tile convolutions instead of im2col (same reads)
        self.software_weight = None    # [in, out] Parameter: compute digitally instead (verify rule)
        self.offchip = False           # True: ``weight`` is trained off-chip, the reads use it (offchip rule)
        self.offchip_perturbation = None  # [rows, cols] weight-unit error added in training reads
        self._offchip_key = None
        self._synced = (-1, -1)
        self._sync()

    def _apply(self, fn, recurse=True):
        """``module.to(...)``, ``.cuda()``, ``.double()``: the chip moves with the module."""
        super()._apply(fn, recurse)
        # the conversion may have made a new Parameter (e.g. to the meta device, or with torch's
        # swap-on-conversion): PulseSGD finds the array through this attribute
        self.weight._neurosal_layer = self
        self.crossbar._apply(fn)
        if self.software_weight is not None and not isinstance(self.software_weight, nn.Parameter):
            self.software_weight = fn(self.software_weight)
        self._sync()
        return self

    def _sync(self):
        with torch.no_grad():
            self.weight.copy_(self.crossbar.weights().t() * self.weight_scale)
        self._synced = (self.crossbar.version, self.weight._version)

    # -- off-chip (hardware-aware) training --------------------------------------------
    def start_offchip(self) -> None:
        """Train this layer's model off-chip: from now on ``weight`` (``[out, in]``, effective
        units) is an ordinary parameter a torch optimizer changes, and every read goes through
        the crossbar's periphery (DAC, per-tile ADC, read noise, the counters' structure) with
        the weights ``clamp(weight^T / weight_scale, -1, 1)`` (the range a device pair can
        hold) plus, in training mode, ``offchip_perturbation`` (the error programming will
        leave) instead of the conductances, which nothing changes until :meth:`end_offchip`."""
        self.offchip = True
        self._offchip_key = None

    def end_offchip(self) -> torch.Tensor:
        """Leave off-chip mode; returns the trained target ``[rows, cols]`` in array units
        (``weight^T / weight_scale`` clamped to [-1, 1]), to be programmed. The mirror then
        shows the conductances again."""
        target = (self.weight.detach().t() / self.weight_scale).clamp(-1.0, 1.0).contiguous()
        self.offchip, self.offchip_perturbation, self._offchip_key = False, None, None
        self.crossbar.override = None
        self._sync()
        return target

    def _offchip_refresh(self) -> None:
        pert = self.offchip_perturbation if self.training else None
        key = (self.weight._version, id(self.weight), None if pert is None else (id(pert), pert._version))
        if key == self._offchip_key and self.crossbar.override is not None:
            return
        w = (self.weight.detach().t() / self.weight_scale).clamp(-1.0, 1.0)
        if pert is not None:
            w = (w + pert).clamp(-1.0, 1.0)
        self.crossbar.override = w.to(self.crossbar.dtype).contiguous()
        self._offchip_key = key

    def _check_and_sync(self):
        """Refresh the weight mirror from the array when pulses changed it; refuse a mirror
        written by anything else. Runs eagerly under ``torch.compile`` (it reads Python-side
        versions, which a compiled graph cannot guard on)."""
        if torch.compiler.is_compiling():
            return self._check_and_sync_eagerly()
        self._check_and_sync_impl()

    def _check_and_sync_impl(self):
        if self.offchip:
            return self._offchip_refresh()
        if self.weight._version != self._synced[1]:
            raise RuntimeError(
                f"{type(self).__name__}.weight was modified in place (e.g. by a torch optimizer). "
                "Analog weights change only through device pulses: use neurosal.crossbar.PulseSGD "
                "(or a learning rule from neurosal.learning) for analog layers.")
        xb = self.crossbar
        if xb.version == self._synced[0]:
            return
        last = xb.last_write
        if last is not None and last[0] == xb.version == self._synced[0] + 1:
            # one sparse write since the last sync: copy only its cells into the [out, in] mirror
            cells = last[1]
            with torch.no_grad():
                self.weight.view(-1)[(cells % xb.cols) * xb.rows + cells // xb.cols] = \
                    xb.weights().view(-1)[cells] * self.weight_scale
            self._synced = (xb.version, self.weight._version)
        else:
            self._sync()

    _check_and_sync_eagerly = torch.compiler.disable(_check_and_sync_impl)

    @property
    def dw_min(self) -> float:
        """Nominal weight change of one push-pull pulse pair (effective weight units)."""
        return 2.0 / self.crossbar.device.card.pmax * self.weight_scale


class AnalogLinear(_AnalogBase):
    r"""Fully connected layer on a crossbar: :math:`y = s\,(x W) + b`.

    ``W`` lives in a ``in_features x out_features`` :class:`Crossbar`; ``s`` is the digital
    gain ``weight_scale``; the bias ``b`` is digital (periphery). ``weight`` mirrors the
    effective weights ``s·W^T`` (shape ``[out, in]`` like :class:`torch.nn.Linear`) and
    receives gradients, but only pulses change it: train with :class:`PulseSGD`.
    """

    software_training = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device="ideal",
                 tile=(128, 128), dac_bits=None, adc_bits=None, adc_range=12.0, weight_scale=None, seed: int = 0,
                 init_gain: float = 1.0, column_gain: float = 0.0, column_offset: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup(in_features, out_features, device, tile, dac_bits, adc_bits, adc_range, seed, weight_scale,
                    init_bound=init_gain / math.sqrt(in_features), column_gain=column_gain,
                    column_offset=column_offset)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.software_weight is not None:           # software training (before programming)
            y = x @ self.software_weight
            return y + self.bias if self.bias is not None else y
        self._check_and_sync()
        if self.local_input:
            x = x.detach()
        lead = x.shape[:-1]
        y = _AnalogMatmul.apply(x.reshape(-1, self.in_features), self.weight, self)
        y = y.reshape(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, {self.crossbar!r}"


class AnalogConv2d(_AnalogBase):
    r"""2-D convolution on a crossbar by unfolding (im2col): one kernel = one column.

    The crossbar has ``in_channels·kh·kw`` rows and ``out_channels`` columns; every output
    position is one read of the array.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 *, device="ideal", tile=(128, 128), dac_bits=None, adc_bits=None, adc_range=12.0,
                 weight_scale=None, seed: int = 0, init_gain: float = 1.0, column_gain: float = 0.0,
                 column_offset: float = 0.0):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self._s = stride if isinstance(stride, int) else stride[0]
        self._p = padding if isinstance(padding, int) else padding[0]
        fan_in = in_channels * kh * kw
        self._setup(fan_in, out_channels, device, tile, dac_bits, adc_bits, adc_range, seed, weight_scale,
                    init_bound=init_gain / math.sqrt(fan_in), column_gain=column_gain, column_offset=column_offset)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"AnalogConv2d expects [batch, {self.in_channels}, H, W], got {tuple(x.shape)}")
        self._check_and_sync()
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        s, p = self._s, self._p
        ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        if self.local_input:
            x = x.detach()
        y = _AnalogConv.apply(x, self.weight, self, (ho, wo))
        return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, {self.crossbar!r}")


def analog_layers(module: nn.Module) -> list[_AnalogBase]:
    """All analog (crossbar) layers inside ``module``."""
    return [m for m in module.modules() if isinstance(m, _AnalogBase)]
