r"""The periphery of a crossbar array: the input DAC, the column ADCs, what the converters see
(activity and code counts for the cost model), and the calibration of the ADC ranges.

**DAC.** Analog inputs are scaled per vector to full scale (abs-max :math:`s`, a digital gain
undone after the ADC) whenever a converter is finite, then pass a ``dac_bits`` signed uniform
quantizer with :math:`2^{b-1} - 1` levels per side; spikes arrive as one bit per row (no DAC,
no scaling). Without a DAC, reading :math:`x` on an ADC scale :math:`s \cdot` ``adc_range`` is
the same as reading :math:`x/s` on ``adc_range`` and multiplying by :math:`s`.

**ADC.** Each tile's column outputs pass a ``adc_bits`` signed uniform quantizer on
:math:`[-f, f]`, :math:`f` = ``adc_range`` in units of a full-scale input times a full-scale
weight (times the vector's scale), rounding to the nearest of :math:`2^{b-1} - 1` levels per
side and clipping; the tiles' partial sums are then added digitally. ``None`` = ideal converter.

May import: nothing of neurosal.
"""

from __future__ import annotations

import torch

__all__ = ["calibrate_adc", "dac", "adc_", "record_calibration", "count_nonzero", "code_bits",
           "quantize_sym"]


def count_nonzero(x: torch.Tensor) -> torch.Tensor:
    """Nonzero entries of a float tensor as a 0-d int64 tensor on ``x``'s device (no host
    sync), counted on the bit patterns of ``|x|`` where possible (an integer view is several
    times faster than the float comparison on a CPU; the absolute value clears the sign bit,
    so a -0.0, e.g. an error multiplied by a zero, counts as zero)."""
    if x.device.type != "cpu":
        return torch.count_nonzero(x)
    if x.dtype == torch.bool:
        return x.sum()
    if x.is_contiguous() and x.dtype in (torch.float32, torch.float64):
        return torch.count_nonzero(x.abs().view(torch.int32 if x.dtype == torch.float32 else torch.int64))
    return (x != 0).sum()      # (torch.count_nonzero of a float tensor is ~30x slower on a CPU)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view of the elements of ``x`` when its memory is dense in some order of its dims
    (e.g. channels-last maps, on which reductions are several times slower), else ``x``."""
    if x.is_contiguous():
        return x.view(-1)
    xp = x.permute(*sorted(range(x.dim()), key=lambda d: -x.stride(d)))
    return xp.view(-1) if xp.is_contiguous() else x


def code_bits(x: torch.Tensor) -> torch.Tensor:
    """Bits of the largest value if ``x`` holds non-negative integers below 256 (spike maps, sums
    of spikes: inputs a bit-serial periphery streams in that many cycles), else 0 (values).
    On an accelerator a 0-d int64 tensor on ``x``'s device, computed without a host sync."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.int64, device=x.device)
    x = _flat(x)
    if x.device.type == "cpu":             # reading back is free here: skip the integer test
        if x.dim() == 1 and x.numel() > 4096:
            head = x[:1024]                # a value in the first thousand that is no code
            if not torch.equal(head, torch.round(head)):
                return 0                   # settles it (analog inputs) without a pass over x
        lo, hi = torch.aminmax(x)
        lo_, hi_ = float(lo), float(hi)    # of values that cannot be codes (one pass less)
        if lo_ < 0 or hi_ > 255 or not torch.equal(x, torch.round(x)):
            return 0
        return max(1, int(hi_).bit_length())
    lo, hi = torch.aminmax(x)
    is_code = (lo >= 0) & (hi <= 255) & torch.eq(x, torch.round(x)).all()
    # bit length of int(hi) (at least 1): floor(log2(hi)) + 1 for hi >= 1
    h = hi.clamp(1, 255).floor().to(torch.float32)
    bits = torch.floor(torch.log2(h)).to(torch.int64) + 1
    return torch.where(is_code, bits, torch.zeros_like(bits))


def quantize_sym(x: torch.Tensor, full_scale, bits: int) -> torch.Tensor:
    """Signed uniform quantizer with 2**(bits-1)-1 levels per side on [-fs, fs] (clips)."""
    levels = 2 ** (bits - 1) - 1
    if not isinstance(full_scale, torch.Tensor):
        step = full_scale / levels
        return torch.round(torch.clamp(x, -full_scale, full_scale) * (1.0 / step)) * step
    step = full_scale / levels
    return torch.round(torch.clamp(x, -full_scale, full_scale) / step) * step


def dac(x: torch.Tensor, dac_bits, adc_bits, adc_fs):
    """The input side of an analog (non-spike) read: ``(x as driven, per-vector scale or None,
    ADC full scale)``. With a finite converter each vector ``[batch, rows]`` is scaled to full
    scale; a DAC then quantizes it, without one the scale moves into the ADC's full scale."""
    scale = None
    if dac_bits is not None or adc_bits is not None:
        lo, hi = torch.aminmax(x, dim=1, keepdim=True)
        scale = torch.maximum(-lo, hi).clamp_min(torch.finfo(x.dtype).tiny)
        if dac_bits is not None:
            x = quantize_sym(x / scale, 1.0, dac_bits)
        else:
            # no DAC: reading x and quantizing on a per-vector ADC scale adc_range*s is the
            # same as reading x/s on adc_range and multiplying by s, without dividing x
            adc_fs = adc_fs * scale.view(1, -1, 1)
            scale = None
    return x, scale, adc_fs


def adc_(part: torch.Tensor, bits: int, fs) -> torch.Tensor:
    """The column ADCs, in place on the partial sums ``part`` (``fs``: full scale, a number or a
    per-vector tensor): round to the nearest of ``2**(bits-1) - 1`` levels per side, clip."""
    levels = 2 ** (bits - 1) - 1
    step = fs / levels
    if isinstance(step, torch.Tensor):
        part.div_(step)
    else:
        part.mul_(1.0 / step)
    return part.clamp_(-levels, levels).round_().mul_(step)


def record_calibration(calib: list, part: torch.Tensor, adc_fs, adc_range: float) -> None:
    """During :func:`calibrate_adc`: keep the partial sums in units of the ADC's range (the
    per-vector scale removed), subsampled."""
    rel = part.abs() if adc_fs is None or not isinstance(adc_fs, torch.Tensor) \
        else part.abs() / (adc_fs / adc_range)
    calib.append(_subsample(rel.flatten()).to(torch.float32))


def calibrate_adc(crossbars, run, *, quantile: float = 0.999, min_range: float = 1e-3) -> list[float]:
    r"""Set each crossbar's forward ADC range from the partial sums it sees.

    ``run()`` performs forward reads (e.g. a network on a calibration batch); every crossbar in
    ``crossbars`` that has a finite ADC records :math:`|\text{partial sum}|` of each tile (in
    units of its range, with the per-vector input scale removed), and its ``adc_range`` becomes
    the ``quantile`` of those values: the chip's ADC reference set for the signal it really
    carries. Sparse spike inputs give column sums far below a range made for dense inputs; a
    calibrated range puts the ADC's levels where the signal is. Transposed (error) reads keep
    their own range (``adc_range_t``). Returns the new ranges (``nan`` where nothing was read).
    Calibration is a set-up step, not a hot path: it reads the result back to the host.
    """
    if not 0.5 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0.5, 1], got {quantile}")
    xbs = [c for c in crossbars if c.adc_bits is not None]
    for c in xbs:
        c._calib = []
    try:
        run()
    finally:
        seen = {id(c): c._calib for c in xbs}
        for c in xbs:
            c._calib = None
    ranges = []
    for c in crossbars:
        vals = seen.get(id(c))
        if not vals:
            ranges.append(float("nan"))
            continue
        v = torch.cat(vals)
        if v.numel() > (1 << 24):                       # torch.quantile's input limit
            g = torch.Generator(device=v.device).manual_seed(1)
            v = v[torch.randint(v.numel(), (1 << 24,), generator=g, device=v.device)]
        c.adc_range = max(float(torch.quantile(v, quantile)), min_range)
        ranges.append(c.adc_range)
    return ranges


def _subsample(rel: torch.Tensor, n: int = 1 << 20) -> torch.Tensor:
    """A fixed, seeded subsample of a big calibration read (the same positions every time)."""
    if rel.numel() <= n:
        return rel
    g = torch.Generator(device=rel.device).manual_seed(0)
    return rel[torch.randint(rel.numel(), (n,), generator=g, device=rel.device)]
