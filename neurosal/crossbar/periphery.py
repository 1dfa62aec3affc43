"""The periphery of a crossbar array: DAC/ADC quantizers, what the converters see (event and
code counts for the cost model), and the calibration of the ADC ranges."""

from __future__ import annotations

import torch

__all__ = ["calibrate_adc"]


def _count_nonzero(x: torch.Tensor) -> torch.Tensor:
    """Nonzero entries of a float tensor as a 0-d int64 tensor on ``x``'s device (no host
    sync), counted on its bit patterns where possible (an integer view is several times
    faster than the float comparison on a CPU); a -0.0 would count as nonzero."""
    if x.device.type != "cpu":
        return torch.count_nonzero(x)
    if x.dtype == torch.bool:
        return x.sum()
    if x.is_contiguous() and x.dtype in (torch.float32, torch.float64):
        return torch.count_nonzero(x.view(torch.int32 if x.dtype == torch.float32 else torch.int64))
    return (x != 0).sum()      # (torch.count_nonzero of a float tensor is ~30x slower on a CPU)


def _code_bits(x: torch.Tensor) -> torch.Tensor:
    """Bits of the largest value if ``x`` holds non-negative integers below 256 (spike maps, sums
    of spikes: inputs a bit-serial periphery streams in that many cycles), else 0 (values).
    On an accelerator a 0-d int64 tensor on ``x``'s device, computed without a host sync."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.int64, device=x.device)
    lo, hi = torch.aminmax(x)
    if x.device.type == "cpu":             # reading back is free here: skip the integer test
        lo_, hi_ = float(lo), float(hi)    # of values that cannot be codes (one pass less)
        if lo_ < 0 or hi_ > 255 or not torch.equal(x, torch.round(x)):
            return 0
        return max(1, int(hi_).bit_length())
    is_code = (lo >= 0) & (hi <= 255) & torch.eq(x, torch.round(x)).all()
    # bit length of int(hi) (at least 1): floor(log2(hi)) + 1 for hi >= 1
    h = hi.clamp(1, 255).floor().to(torch.float32)
    bits = torch.floor(torch.log2(h)).to(torch.int64) + 1
    return torch.where(is_code, bits, torch.zeros_like(bits))


def _quantize_sym(x: torch.Tensor, full_scale, bits: int) -> torch.Tensor:
    """Signed uniform quantizer with 2**(bits-1)-1 levels per side on [-fs, fs] (clips)."""
    levels = 2 ** (bits - 1) - 1
    if not isinstance(full_scale, torch.Tensor):
        step = full_scale / levels
        return torch.round(torch.clamp(x, -full_scale, full_scale) * (1.0 / step)) * step
    step = full_scale / levels
    return torch.round(torch.clamp(x, -full_scale, full_scale) / step) * step


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
