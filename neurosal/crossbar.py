r"""Crossbar arrays of differential device pairs, their periphery, and analog layers.

A weight is stored as a differential pair of devices,

.. math:: w_{ij} = (G^+_{ij} - G^-_{ij}) / G_{ref}, \qquad G_{ref} = G_\max - G_\min

(nominal card values), so :math:`w \in [-1, 1]`. A layer multiplies by a digital gain
(``weight_scale``) in the periphery.

**Read** (``forward``: :math:`y = x W`; ``backward``: :math:`x = d W^T`). Large
matrices are split into tiles of at most ``tile = (rows, cols)`` cells; each tile's
column outputs pass its own ADC and the partial sums of the tiles along the summed
dimension are added digitally. Analog inputs are scaled per vector to full scale (abs-max,
a digital gain undone after the ADC) whenever a converter is finite, then pass a
``dac_bits`` DAC; spikes arrive as one bit per row (no DAC, no scaling).
Outputs pass an ``adc_bits`` ADC with a clipping range of ``adc_range`` (in units of a
full-scale input times a full-scale weight). ``None`` = ideal converter.

**Read noise.** Every read of every device adds
:math:`\sigma_{read}(G_\max-G_\min)\xi`. For a column of a tile this sums to a Gaussian
of variance :math:`2\sigma_{read}^2 \sum_{i\in tile} x_i^2` (in weight units; two
devices per weight), which is drawn directly per column output: the same distribution
as per-device draws at a fraction of the cost.

**Write.** ``apply_pulses(n_plus, n_minus)`` hands signed pulse counts to the device
model of each array half; ``program`` is the write-and-verify baseline; ``initialize``
sets the as-fabricated starting state (never used by training).

Every array keeps :class:`Counters` of the events that later become energy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .devices import Device, DeviceCard, DeviceState, PulseError, check_pulses

__all__ = ["Counters", "Crossbar", "ProgramResult", "AnalogLinear", "AnalogConv2d", "PulseSGD", "PulseError",
           "analog_layers", "calibrate_adc", "check_pulses"]


@dataclass
class Counters:
    """Event counts of one crossbar array (cumulative; :meth:`reset` to clear)."""

    forward_reads: int = 0      # input vectors read through the array (y = x W)
    backward_reads: int = 0     # error vectors read transposed (x = d W^T)
    row_activations: int = 0    # rows driven with a nonzero input, summed over vectors and tiles
    cell_reads: int = 0         # active rows x columns (device currents summed)
    dac_conversions: int = 0    # input DAC conversions (nonzero analog inputs, per tile)
    adc_conversions: int = 0    # column ADC conversions (per tile column per vector)
    # non-spike reads by kind; how their cost scales with the input bits is the periphery's
    # (bit-serial or multi-bit DAC), so the cost model needs them apart:
    analog_reads: int = 0       # vectors of analog values (activations in rate coding, every error)
    analog_cell_reads: int = 0
    analog_adc_conversions: int = 0
    code_reads: int = 0         # vectors of small non-negative integer codes (spike maps, sums of spikes)
    code_cycles: int = 0        # their bits summed over vectors (a 0/1/2 code is 2 bits)
    code_cell_reads: int = 0
    code_adc_conversions: int = 0
    code_dac_conversions: int = 0
    pulses: int = 0             # programming pulses applied (sum of |n|)
    pulsed_cells: int = 0       # device updates with at least one pulse
    update_ops: int = 0         # pulse-update operations on the array
    verify_reads: int = 0       # device reads made by write-and-verify (two per pair read)
    verify_cycles: int = 0      # row-read slots of those reads: a pair's two devices and all columns of a
                                # row are read at once, rows one at a time per tile, tiles in parallel
    write_cycles: int = 0       # pulse slots of the updates: rows are written one at a time per tile
                                # (all columns of a row at once, tiles in parallel), a row takes as
                                # many slots as its largest pulse count
    digital_macs: int = 0       # MACs in the tile's digital unit: weight gradients, off-array errors
    buffer_accesses: int = 0    # reads + writes of the controller's per-cell digital state (hybrid rule)
    clipped_cells: int = 0      # buffered updates dropped because the pair was at the end of its range

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in _COUNTER_NAMES}       # flat ints: no deep copy

    def __iadd__(self, other: "Counters") -> "Counters":
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


_COUNTER_NAMES = tuple(f.name for f in dataclasses.fields(Counters))


@dataclass
class ProgramResult:
    """What a write-and-verify programming run cost and achieved."""

    pulses: int
    verify_reads: int
    iterations: int
    converged: float          # fraction of weights within tolerance
    max_error: float          # largest |w - target| at the end (weight units)


def _count_nonzero(x: torch.Tensor) -> int:
    """Nonzero entries of a float tensor, counted on its bit patterns (an integer view is
    several times faster than the float comparison); a -0.0 would count as nonzero."""
    if x.is_contiguous() and x.dtype in (torch.float32, torch.float64):
        return int(torch.count_nonzero(x.view(torch.int32 if x.dtype == torch.float32 else torch.int64)).item())
    return int(torch.count_nonzero(x).item())


def _code_bits(x: torch.Tensor) -> int:
    """Bits of the largest value if ``x`` holds non-negative integers below 256 (spike maps, sums
    of spikes: inputs a bit-serial periphery streams in that many cycles), else 0 (values)."""
    lo, hi = torch.aminmax(x)
    if float(lo) < 0 or float(hi) > 255 or not torch.equal(x, torch.round(x)):
        return 0
    return max(1, int(float(hi)).bit_length())


def _quantize_sym(x: torch.Tensor, full_scale, bits: int) -> torch.Tensor:
    """Signed uniform quantizer with 2**(bits-1)-1 levels per side on [-fs, fs] (clips)."""
    levels = 2 ** (bits - 1) - 1
    if not isinstance(full_scale, torch.Tensor):
        step = full_scale / levels
        return torch.round(torch.clamp(x, -full_scale, full_scale) * (1.0 / step)) * step
    step = full_scale / levels
    return torch.round(torch.clamp(x, -full_scale, full_scale) / step) * step


class Crossbar:
    """A ``rows x cols`` array of differential device pairs with DAC/ADC periphery.

    Parameters
    ----------
    rows, cols : array size (inputs x outputs of ``forward``).
    device : device card name, path or :class:`~neurosal.devices.DeviceCard`.
    tile : largest physical sub-array; partial sums of row tiles are added digitally.
    dac_bits, adc_bits : converter resolutions; ``None`` is an ideal converter.
    adc_range : ADC clipping range in units of full-scale input x full-scale weight.
    seed : seeds the chip (D2D draws, faults) and the noise stream: same seed, same chip.
    """

    def __init__(self, rows: int, cols: int, device: str | DeviceCard | Device = "ideal", *,
                 tile: tuple[int, int] = (128, 128), dac_bits: Optional[int] = None,
                 adc_bits: Optional[int] = None, adc_range: float = 12.0, seed: int = 0,
                 dtype: torch.dtype = torch.float32, torch_device: str | torch.device | None = None):
        if rows < 1 or cols < 1:
            raise ValueError(f"crossbar size must be positive, got {rows} x {cols}")
        if len(tile) != 2 or tile[0] < 1 or tile[1] < 1:
            raise ValueError(f"tile must be (rows, cols) >= 1, got {tile}")
        for name, b in (("dac_bits", dac_bits), ("adc_bits", adc_bits)):
            if b is not None and not (1 <= b <= 24):
                raise ValueError(f"{name} must be None (ideal) or 1..24, got {b}")
        if not adc_range > 0:
            raise ValueError(f"adc_range must be > 0, got {adc_range}")
        self.rows, self.cols = int(rows), int(cols)
        self.tile = (min(int(tile[0]), self.rows), min(int(tile[1]), self.cols))
        self.dac_bits, self.adc_bits, self.adc_range = dac_bits, adc_bits, float(adc_range)
        self.adc_range_t = float(adc_range)      # range of the transposed (error) reads
        self._calib: Optional[list] = None        # set by calibrate_adc: |partial sums| seen
        self.seed = int(seed)
        self.device = device if isinstance(device, Device) else Device(device)
        self.g_ref = self.device.card.g_range
        self.dtype = dtype
        self.torch_device = torch.device(torch_device) if torch_device is not None else torch.device("cpu")
        self.generator = torch.Generator(device=self.torch_device).manual_seed(self.seed)
        chip = torch.Generator().manual_seed(self.seed)
        st = self.device.init_state((2, self.rows, self.cols), generator=chip, u0=0.5, dtype=dtype)
        self._state = st.to(self.torch_device)
        self.counters = Counters()
        self.time = 0.0              # chip clock (s), for drift
        self.version = 0             # bumps on every change of the conductances
        # what a controller knows of the starting state: the weights the chip was initialized
        # to, as requested (nominal), and whether any pulse has been applied since
        self.initial_weights = torch.zeros(self.rows, self.cols, dtype=dtype, device=self.torch_device)
        self.pulsed = False
        self._cache_version = -1
        self._w = None
        self.last_path = None        # 'event' or 'dense': how the last read was computed
        self.last_write = None       # (version, cells) of the last write, for sparse mirror refreshes

    # -- geometry ----------------------------------------------------------------------
    @property
    def n_row_tiles(self) -> int:
        return -(-self.rows // self.tile[0])

    @property
    def n_col_tiles(self) -> int:
        return -(-self.cols // self.tile[1])

    @property
    def state(self) -> DeviceState:
        """Device state of both halves, tensors of shape ``[2, rows, cols]`` (0: G+, 1: G-)."""
        return self._state

    @property
    def read_noise(self) -> float:
        return self.device.card.noise.read

    @property
    def ideal_periphery(self) -> bool:
        return self.dac_bits is None and self.adc_bits is None and self.read_noise == 0

    # -- weights -------------------------------------------------------------------------
    def conductances(self) -> torch.Tensor:
        """Conductances as they are now (S), ``[2, rows, cols]``, drift applied, no read noise."""
        return self.device.read(self._state, time=self.time if self._state.t_prog is not None else None,
                                noise=False)

    def weights(self) -> torch.Tensor:
        """Effective weights ``(G+ - G-)/Gref`` as read now (no read noise), ``[rows, cols]``."""
        if self._cache_version != self.version or self._w is None:
            g = self.conductances()
            self._w = ((g[0] - g[1]) / self.g_ref).contiguous()
            self._cache_version = self.version
        return self._w

    def initialize(self, w: torch.Tensor) -> None:
        """Set the as-fabricated starting state to weights ``w`` (no pulses counted).

        Each pair is centred in its own range: ``G± = Gc ± w·Gref/2`` with
        ``Gc = (Gmin + Gmax)/2`` per cell, so both devices have headroom either way.
        Stuck cells stay stuck. Training never calls this; it changes weights only by
        pulses.
        """
        w = torch.as_tensor(w, dtype=self.dtype, device=self.torch_device)
        if w.shape != (self.rows, self.cols):
            raise ValueError(f"initial weights have shape {tuple(w.shape)}, crossbar is {(self.rows, self.cols)}")
        st = self._state
        gmin = torch.as_tensor(st.g_min, dtype=self.dtype, device=self.torch_device)
        gmax = torch.as_tensor(st.g_max, dtype=self.dtype, device=self.torch_device)
        gc = (gmin + gmax) / 2
        half = w.clamp(-1, 1) * self.g_ref / 2
        g = torch.stack([gc[0] + half if gc.dim() else gc + half, gc[1] - half if gc.dim() else gc - half])
        g = torch.minimum(torch.maximum(g, gmin.expand_as(g)), gmax.expand_as(g))
        if st.stuck is not None:
            g = torch.where(st.stuck, st.g, g)
        st.g.copy_(g)
        self.initial_weights = w.clamp(-1, 1).clone()
        self.pulsed = False
        self.version += 1

    # -- reads ---------------------------------------------------------------------------
    #: ``path='auto'`` gathers active rows instead of a dense matmul when the input density
    #: (nonzero fraction) is at most ``event_threshold * (1 - event_min_cols / n_out)``: a
    #: gather costs a scan of the inputs plus work per event and column, a matmul work per
    #: input and column, so narrow outputs never pay off. Crossover measured on a 2-core CPU
    #: (benchmarks/bench_sim.py): about 5 % density for 784 -> 400.
    event_threshold: float = 0.10
    event_min_cols: int = 175

    def event_density(self, n_out: int) -> float:
        """Largest input density at which ``path='auto'`` reads event-driven."""
        return self.event_threshold * max(0.0, 1.0 - self.event_min_cols / n_out)

    def forward(self, x: torch.Tensor, *, spikes: bool = False, path: str = "auto") -> torch.Tensor:
        """Analog matrix-vector product ``x @ W`` through the periphery; ``x``: [batch, rows].

        ``spikes=True`` declares binary inputs (one bit per row per step): no DAC, only rows
        with a spike are driven (and counted), and a tile with no active row makes no ADC
        conversion. ``path``: ``'dense'`` (matmul over all rows), ``'event'`` (gather only the
        active rows: silent rows cost nothing) or ``'auto'`` (event-driven when the fraction
        of nonzero inputs is at most :meth:`event_density`). Both paths give the same result
        (to float rounding) and the same counters and noise stream.
        """
        if x.dim() != 2 or x.shape[1] != self.rows:
            raise ValueError(f"forward expects input [batch, {self.rows}], got {tuple(x.shape)}")
        if path not in ("auto", "dense", "event"):
            raise ValueError(f"path must be 'auto', 'dense' or 'event', got {path!r}")
        self.counters.forward_reads += x.shape[0]
        return self._read(x, transposed=False, spikes=spikes, path=path)

    def backward(self, d: torch.Tensor) -> torch.Tensor:
        """Transposed read ``d @ W^T`` (for backprop through the array); ``d``: [batch, cols]."""
        if d.dim() != 2 or d.shape[1] != self.cols:
            raise ValueError(f"backward expects input [batch, {self.cols}], got {tuple(d.shape)}")
        self.counters.backward_reads += d.shape[0]
        return self._read(d, transposed=True, spikes=False, path="dense")

    def _read(self, x: torch.Tensor, transposed: bool, spikes: bool, path: str = "dense") -> torch.Tensor:
        x = x.to(self.dtype)
        n_in = self.cols if transposed else self.rows
        n_out = self.rows if transposed else self.cols
        t_in = self.tile[1] if transposed else self.tile[0]      # summed dimension
        t_out = self.tile[0] if transposed else self.tile[1]
        nt_in, nt_out = -(-n_in // t_in), -(-n_out // t_out)
        batch = x.shape[0]
        # ---- activity (spikes are 0/1 by contract, so sums count them)
        c = self.counters
        tiles = None                           # (vector, row-tile) reads with at least one input
        events = None
        nnz = int(x.sum().item()) if spikes else None
        if path == "event" or (path == "auto" and spikes and nnz <= self.event_density(n_out) * x.numel()):
            events = x.nonzero()                                   # [nnz, 2]: (vector, row), sorted
            nnz = events.shape[0]
            if spikes:
                slot = events[:, 0] * nt_in + events[:, 1] // t_in if nt_in > 1 else events[:, 0]
                tiles = int(torch.unique_consecutive(slot).numel())
        elif spikes:
            if nt_in == 1:
                tiles = int((x.sum(1) != 0).sum().item())
            else:   # per-tile input counts by one small matmul with the tile indicator
                ind = torch.zeros(n_in, nt_in, dtype=x.dtype, device=x.device)
                r = torch.arange(n_in, device=x.device)
                ind[r, r // t_in] = 1
                tiles = int(((x @ ind) != 0).sum().item())
        if nnz is None:
            nnz = _count_nonzero(x)
        c.row_activations += nnz * nt_out
        c.cell_reads += nnz * n_out
        if spikes:
            c.adc_conversions += tiles * n_out        # a tile with no active row converts nothing
        else:
            self._count_analog(batch, nnz, n_out, nt_in, nt_out, 0 if transposed else _code_bits(x))
        # ---- DAC: analog inputs are scaled to full scale per vector (a digital gain, undone
        # after the ADC) whenever a converter is finite, so small vectors (e.g. backpropagated
        # errors) use the ADC's range instead of rounding to zero; spikes are full scale already
        scale = None
        adc_fs = self.adc_range_t if transposed else self.adc_range   # ADC full scale (scaled input units)
        if not spikes and (self.dac_bits is not None or self.adc_bits is not None):
            lo, hi = torch.aminmax(x, dim=1, keepdim=True)
            scale = torch.maximum(-lo, hi).clamp_min(torch.finfo(x.dtype).tiny)
            if self.dac_bits is not None:
                x = _quantize_sym(x / scale, 1.0, self.dac_bits)
            else:
                # no DAC: reading x and quantizing on a per-vector ADC scale adc_range*s is the
                # same as reading x/s on adc_range and multiplying by s, without dividing x
                adc_fs = adc_fs * scale.view(1, -1, 1)
                scale = None
        w = self.weights()
        sr = self.read_noise
        ideal = self.adc_bits is None and sr == 0
        self.last_path = "dense" if events is None else "event"
        if events is not None:
            vec, row = events[:, 0], events[:, 1]
            y = self._gather(vec, row, None if spikes else x[vec, row], batch, w.t() if transposed else w,
                             t_in, nt_in, ideal, adc_fs, transposed)
        elif ideal:
            y = x @ (w.t() if transposed else w)
        else:
            # per-tile partial sums [nt_in, batch, n_out]: one matmul per tile on column slices
            # of x (no padding or transposed copies), and each tile's input norm for its noise
            # (large inputs); for small ones, where the per-call overhead dominates, one batched
            # matmul over the full tiles (views of x and W, nothing copied) and one for the rest
            wm = w.t() if transposed else w
            if x.numel() <= (1 << 20):
                k_full = n_in // t_in
                cut = k_full * t_in
                part = torch.empty(nt_in, batch, n_out, dtype=x.dtype, device=x.device)
                xt = x[:, :cut].reshape(batch, k_full, t_in).transpose(0, 1)
                if k_full:
                    torch.bmm(xt, wm[:cut].reshape(k_full, t_in, n_out), out=part[:k_full])
                if cut < n_in:
                    torch.matmul(x[:, cut:], wm[cut:], out=part[k_full])
                l2 = None
                if sr > 0:
                    l2 = torch.empty(nt_in, batch, 1, dtype=x.dtype, device=x.device)
                    if k_full:
                        l2[:k_full] = torch.linalg.vector_norm(xt, dim=-1, keepdim=True)
                    if cut < n_in:
                        l2[k_full] = torch.linalg.vector_norm(x[:, cut:], dim=-1, keepdim=True)
            else:
                part = torch.empty(nt_in, batch, n_out, dtype=x.dtype, device=x.device)
                l2 = torch.empty(nt_in, batch, 1, dtype=x.dtype, device=x.device) if sr > 0 else None
                for k in range(nt_in):
                    a, b = k * t_in, min((k + 1) * t_in, n_in)
                    torch.matmul(x[:, a:b], wm[a:b], out=part[k])
                    if l2 is not None:
                        l2[k] = torch.linalg.vector_norm(x[:, a:b], dim=1, keepdim=True)
            y = self._periphery(part, l2, adc_fs, transposed)
        if scale is not None:
            y = y * scale
        return y

    def forward_conv(self, x: torch.Tensor, kernel_size: tuple, stride: int, padding: int) -> torch.Tensor:
        """Convolution read of analog inputs ``x`` [B, C, H, W] (rows of the array ordered
        channel, kh, kw): the same result (to float rounding), counters and noise stream as
        :meth:`forward` on the im2col patches (vectors ordered b, ho, wo), computed with one
        convolution per row tile instead of unfolding. Needs an ideal DAC (a quantizing DAC
        scales each patch on its own). Returns ``[B, cols, Ho, Wo]`` (channels-last memory)."""
        if self.dac_bits is not None:
            raise ValueError("forward_conv needs an ideal DAC (dac_bits=None); use forward on the patches")
        kh, kw = kernel_size
        b, ch, h, w_ = x.shape
        if ch * kh * kw != self.rows:
            raise ValueError(f"forward_conv: {ch}x{kh}x{kw} patches do not match the array's {self.rows} rows")
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        ho, wo = (h + 2 * padding - kh) // stride + 1, (w_ + 2 * padding - kw) // stride + 1
        n, n_out = b * ho * wo, self.cols
        t_in, nt_in, nt_out = self.tile[0], self.n_row_tiles, self.n_col_tiles
        c = self.counters
        c.forward_reads += n
        # active rows of all patches: the per-pixel count of nonzero channels summed over windows
        nzc = (x != 0).sum(1, keepdim=True).to(x.dtype)
        ones = torch.ones(1, 1, kh, kw, dtype=x.dtype, device=x.device)
        nnz = int(F.conv2d(nzc, ones, stride=stride, padding=padding).round().to(torch.int64).sum().item())
        c.row_activations += nnz * nt_out
        c.cell_reads += nnz * n_out
        self._count_analog(n, nnz, n_out, nt_in, nt_out, _code_bits(x))
        self.last_path = "dense"
        w4 = self.weights().t().reshape(n_out, ch, kh, kw)
        sr = self.read_noise
        if self.adc_bits is None and sr == 0:
            return F.conv2d(x, w4, stride=stride, padding=padding)
        adc_fs = None
        if self.adc_bits is not None:
            # per-vector full scale: the largest |x| of each patch (zero padding adds nothing)
            sc = F.max_pool2d(x.abs().amax(1, keepdim=True), (kh, kw), stride=stride, padding=padding)
            adc_fs = self.adc_range * sc.clamp_min(torch.finfo(x.dtype).tiny).reshape(1, n, 1)
        part = torch.empty(nt_in, b, ho, wo, n_out, dtype=x.dtype, device=x.device)
        l2 = torch.empty(nt_in, b, ho, wo, 1, dtype=x.dtype, device=x.device) if sr > 0 else None
        kk = kh * kw
        for k in range(nt_in):
            r0, r1 = k * t_in, min((k + 1) * t_in, self.rows)
            c0, c1 = r0 // kk, (r1 - 1) // kk + 1
            mask = torch.zeros((c1 - c0) * kk, dtype=x.dtype, device=x.device)
            mask[r0 - c0 * kk:r1 - c0 * kk] = 1
            mask = mask.view(1, c1 - c0, kh, kw)
            xs = x[:, c0:c1]
            wk = w4[:, c0:c1] if (r0 == c0 * kk and r1 == c1 * kk) else w4[:, c0:c1] * mask
            part[k] = F.conv2d(xs, wk, stride=stride, padding=padding).permute(0, 2, 3, 1)
            if l2 is not None:
                l2[k] = F.conv2d(xs * xs, mask, stride=stride, padding=padding).clamp_min(0).sqrt().permute(0, 2, 3, 1)
        y = self._periphery(part.view(nt_in, n, n_out), None if l2 is None else l2.view(nt_in, n, 1), adc_fs)
        return y.view(b, ho, wo, n_out).permute(0, 3, 1, 2)

    def _count_analog(self, vectors: int, nnz: int, n_out: int, nt_in: int, nt_out: int, code_bits: int) -> None:
        """Conversions of a non-spike read: every column of every row tile per vector, a DAC per
        nonzero input and tile; kept apart by kind (values, or small integer codes of
        ``code_bits`` bits) so that the cost model can charge a bit-serial periphery its cycles."""
        c = self.counters
        adc, dac = vectors * n_out * nt_in, nnz * nt_out
        c.adc_conversions += adc
        c.dac_conversions += dac
        if code_bits:
            c.code_reads += vectors
            c.code_cycles += vectors * code_bits
            c.code_cell_reads += nnz * n_out
            c.code_adc_conversions += adc
            c.code_dac_conversions += dac
        else:
            c.analog_reads += vectors
            c.analog_cell_reads += nnz * n_out
            c.analog_adc_conversions += adc

    def forward_events(self, vec: torch.Tensor, row: torch.Tensor, n_vectors: int) -> torch.Tensor:
        """Event-driven read of address events: input spike ``k`` drives row ``row[k]`` of
        vector ``vec[k]`` (sorted by vector, then row). Returns ``[n_vectors, cols]``; the same
        result, counters and noise stream as :meth:`forward` of the dense 0/1 matrix, without
        scanning the silent rows."""
        if vec.shape != row.shape or vec.dim() != 1:
            raise ValueError("forward_events: vec and row must be 1-D tensors of equal length")
        t_in, nt_in = self.tile[0], self.n_row_tiles
        c = self.counters
        c.forward_reads += n_vectors
        nnz = int(vec.numel())
        c.row_activations += nnz * self.n_col_tiles
        c.cell_reads += nnz * self.cols
        if nnz:
            slot = vec * nt_in + torch.div(row, t_in, rounding_mode="floor") if nt_in > 1 else vec
            c.adc_conversions += int(torch.unique_consecutive(slot).numel()) * self.cols
        self.last_path = "event"
        ideal = self.adc_bits is None and self.read_noise == 0
        return self._gather(vec, row, None, n_vectors, self.weights(), t_in, nt_in, ideal)

    def _gather(self, vec, row, val, batch, w, t_in, nt_in, ideal, adc_fs=None, transposed=False):
        """Event-driven read: sum the weight rows of the active inputs only (embedding-bag sum
        over the events of each (vector, tile), sorted by vector then row); ``val``: input
        values of the events (``None`` for spikes)."""
        n_out = w.shape[1]
        nt = 1 if ideal else nt_in
        slot = vec * nt + row // t_in if nt > 1 else vec           # non-decreasing
        counts = torch.bincount(slot, minlength=batch * nt)
        offsets = torch.zeros_like(counts)
        offsets[1:] = torch.cumsum(counts[:-1], 0)
        part = F.embedding_bag(row, w, offsets, mode="sum", per_sample_weights=val)
        if ideal:
            return part
        part = part.view(batch, nt_in, n_out).transpose(0, 1)
        l2 = None
        if self.read_noise > 0:
            sq = counts.to(w.dtype) if val is None else torch.zeros(
                batch * nt_in, dtype=w.dtype, device=w.device).index_add_(0, slot, val * val)
            l2 = sq.view(batch, nt_in).t().unsqueeze(-1).sqrt()
        return self._periphery(part, l2, adc_fs, transposed)

    def _periphery(self, part: torch.Tensor, l2: Optional[torch.Tensor], adc_fs=None,
                   transposed: bool = False) -> torch.Tensor:
        """Read noise and ADC on per-tile partial sums ``[nt_in, batch, n_out]`` (``l2``: each
        tile's input norm sqrt(sum x^2), ``[nt_in, batch, 1]``; ``adc_fs``: the ADC's full
        scale, a number or ``[1, batch, 1]``); the tiles are summed digitally."""
        sr = self.read_noise
        if sr > 0:
            # sum over the tile's rows of two independent device noises per weight
            sig = (sr * math.sqrt(2.0)) * l2
            part = part.addcmul_(sig, torch.randn(part.shape, generator=self.generator, dtype=part.dtype,
                                                  device=part.device))
        if self._calib is not None and not transposed:
            # calibration: the partial sums in units of this ADC's range (per-vector scale removed)
            rel = part.abs() if adc_fs is None or not isinstance(adc_fs, torch.Tensor) \
                else part.abs() / (adc_fs / self.adc_range)
            rel = rel.flatten()
            if rel.numel() > (1 << 20):                 # a fixed, seeded subsample of big reads
                idx = torch.randint(rel.numel(), (1 << 20,), generator=torch.Generator().manual_seed(0))
                rel = rel[idx]
            self._calib.append(rel.to(torch.float32))
        if self.adc_bits is not None:
            # in place: part is this read's own buffer
            levels = 2 ** (self.adc_bits - 1) - 1
            fs = self.adc_range if adc_fs is None else adc_fs
            step = fs / levels
            if isinstance(step, torch.Tensor):
                part.div_(step)
            else:
                part.mul_(1.0 / step)
            part.clamp_(-levels, levels).round_().mul_(step)
        return part.sum(0)

    # -- writes --------------------------------------------------------------------------
    def apply_pulses(self, n_plus: torch.Tensor, n_minus: torch.Tensor) -> int:
        """Apply signed pulse counts to the G+ and G- devices (``[rows, cols]`` each).

        Positive counts potentiate (raise G), negative depress; the device model decides
        what each pulse does (nonlinearity, asymmetry, bounds, noise). Returns the number
        of pulses applied.
        """
        for name, n in (("n_plus", n_plus), ("n_minus", n_minus)):
            if tuple(n.shape) != (self.rows, self.cols):
                raise ValueError(f"{name} has shape {tuple(n.shape)}, crossbar is {(self.rows, self.cols)}")
        n = torch.stack([torch.as_tensor(n_plus, dtype=self.dtype), torch.as_tensor(n_minus, dtype=self.dtype)])
        n = n.to(self.torch_device).reshape(-1)
        idx = (n != 0).nonzero().squeeze(1)            # NaN != 0: a bad count is passed on and refused
        return self.apply_pulses_at(idx, n[idx])

    def apply_pulses_at(self, idx: torch.Tensor, n: torch.Tensor) -> int:
        """Sparse :meth:`apply_pulses`: signed counts ``n`` for the devices at flat indices ``idx``
        (ascending) into the ``[2, rows, cols]`` array (``d * rows * cols + row * cols + col``,
        ``d`` 0 for G+, 1 for G-). Same result, counters and noise stream as the dense call."""
        applied, pulsed = self.device.pulse_at(self._state, idx, n, generator=self.generator, time=self.time,
                                               return_cells=True, what=f"crossbar {self.rows}x{self.cols}")
        if pulsed == 0:
            return 0
        c = self.counters
        c.pulses += applied
        c.pulsed_cells += pulsed
        c.update_ops += 1
        c.write_cycles += self._write_cycles_at(idx, n)
        self.pulsed = True
        fresh = self._w is not None and self._cache_version == self.version and self._state.t_prog is None
        self.version += 1
        if fresh:   # refresh the weight cache at the written cells only (no drift to apply)
            cells = idx % (self.rows * self.cols)
            g = self._state.g.view(2, -1)
            self._w.view(-1)[cells] = (g[0, cells] - g[1, cells]) / self.g_ref
            self._cache_version = self.version
            self.last_write = (self.version, cells)
        return applied

    def _write_cycles_at(self, idx: torch.Tensor, n: torch.Tensor) -> int:
        """Pulse slots of sparse counts: per tile, the sum over its rows of the row's largest
        |count| (both devices of a pair are in the same row, all its columns are pulsed at
        once); tiles work in parallel."""
        cell = idx % (self.rows * self.cols)
        row, col = cell // self.cols, cell % self.cols
        tr, tc = self.tile
        nct = self.n_col_tiles
        slot = row * nct + col // tc
        row_max = torch.zeros(self.n_row_tiles * tr * nct, dtype=n.dtype, device=n.device)
        row_max.scatter_reduce_(0, slot, n.abs(), reduce="amax")
        return int(row_max.view(self.n_row_tiles, tr, nct).sum(1).amax().item())

    def _row_slots(self, a: torch.Tensor) -> int:
        """Row-sequential time slots of an operation that takes ``a[i, j] >= 0`` slots at cell
        (i, j): per tile, the sum over its rows of the row's largest entry (a row's columns act
        at once); tiles work in parallel, so the slowest tile sets the time."""
        tr, tc = self.tile
        pc = self.n_col_tiles * tc - self.cols
        pr = self.n_row_tiles * tr - self.rows
        if pc or pr:
            a = F.pad(a, (0, pc, 0, pr))
        row_max = a.view(self.n_row_tiles * tr, self.n_col_tiles, tc).amax(-1)     # [rows, col tiles]
        return int(row_max.view(self.n_row_tiles, tr, self.n_col_tiles).sum(1).amax().item())

    def advance(self, seconds: float) -> None:
        """Move the chip clock forward (conductances drift if the device drifts)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.time += float(seconds)
        if self._state.t_prog is not None:
            self.version += 1

    def verify_read(self, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Read the conductances of the pairs in ``mask`` (``[rows, cols]`` bool; all pairs by
        default) as a controller reads them: drift applied, read noise on every device. Counts two
        device reads per pair (``verify_reads``) and the row-read slots (``verify_cycles``).
        Returns ``[2, rows, cols]`` (S); entries outside ``mask`` are read too but not counted,
        so the caller must not use them."""
        st = self._state
        g = self.device.read(st, generator=self.generator, time=self.time if st.t_prog is not None else None)
        if mask is None:
            mask = torch.ones(self.rows, self.cols, dtype=torch.bool, device=self.torch_device)
        self.counters.verify_reads += 2 * int(mask.sum().item())
        self.counters.verify_cycles += self._row_slots(mask.to(self.dtype))
        return g

    def program(self, target: torch.Tensor, tolerance: float = 0.02, max_pulses: int = 1000,
                max_iterations: int = 500) -> ProgramResult:
        """Write-and-verify: pulse each weight toward ``target`` until ``|w - target| <= tolerance``.

        Each iteration verify-reads the unconverged pairs (two device reads per weight,
        with read noise), estimates the pulses needed from the nominal step at the present
        conductance, and applies them to G+ (raise w) or to G- (lower w); when the device
        it would use is at its bound it uses the other one in the opposite direction.
        A weight stops when within tolerance or after ``max_pulses`` pulses.
        """
        target = torch.as_tensor(target, dtype=self.dtype, device=self.torch_device)
        if target.shape != (self.rows, self.cols):
            raise ValueError(f"target has shape {tuple(target.shape)}, crossbar is {(self.rows, self.cols)}")
        if not tolerance > 0:
            raise ValueError("tolerance must be > 0")
        st = self._state
        card = self.device.card
        spent = torch.zeros(self.rows, self.cols, dtype=torch.int64, device=self.torch_device)
        active = torch.ones(self.rows, self.cols, dtype=torch.bool, device=self.torch_device)
        pulses = verify = it = 0
        while it < max_iterations:
            it += 1
            g_read = self.verify_read(active)
            verify += 2 * int(active.sum().item())
            w = (g_read[0] - g_read[1]) / self.g_ref
            err = target - w
            active = active & (err.abs() > tolerance) & (spent < max_pulses)
            if st.stuck is not None:
                active = active & ~(st.stuck[0] & st.stuck[1])
            if not bool(active.any()):
                break
            # plan from what was read, on the card's nominal curve (the controller knows no
            # device-to-device draws)
            u = ((g_read - card.g_min) / card.g_range).clamp(0, 1)
            raise_w = err > 0
            # move whichever device of the pair has more room in the needed direction
            # (raise w: G+ up or G- down; lower w: G+ down or G- up); keeps pairs centred
            use_plus = torch.where(raise_w, (1 - u[0]) >= u[1], u[0] >= (1 - u[1]))
            up_step = self.device.step_size(g_read, +1) / self.g_ref
            dn_step = self.device.step_size(g_read, -1) / self.g_ref
            step = torch.where(use_plus, torch.where(raise_w, up_step[0], dn_step[0].abs()),
                               torch.where(raise_w, dn_step[1].abs(), up_step[1]))
            step = step.clamp_min(0.1 / card.pmax)
            n = (err.abs() / step).round().clamp(1, max(1, card.pmax // 4))
            n = torch.minimum(n, (max_pulses - spent).clamp_min(0).to(n.dtype))
            n = torch.where(active, n, torch.zeros_like(n))
            sgn = torch.where(raise_w, 1.0, -1.0)
            n_plus = torch.where(use_plus, sgn * n, torch.zeros_like(n))
            n_minus = torch.where(use_plus, torch.zeros_like(n), -sgn * n)
            pulses += self.apply_pulses(n_plus, n_minus)
            spent += n.to(torch.int64)
        w_final = self.weights()
        err = (target - w_final).abs()
        return ProgramResult(pulses=pulses, verify_reads=verify, iterations=it,
                             converged=float((err <= tolerance).float().mean().item()),
                             max_error=float(err.max().item()))

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything that makes this chip this chip: conductances, D2D draws, RNG, clock."""
        return {"state": {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                          for k, v in self._state.state_dict().items()},
                "rng": self.generator.get_state(), "time": self.time, "counters": self.counters.as_dict(),
                "card": self.device.card.to_dict(), "rows": self.rows, "cols": self.cols,
                "adc_range": self.adc_range, "adc_range_t": self.adc_range_t,
                "initial_weights": self.initial_weights.clone(), "pulsed": self.pulsed}

    def load_state_dict(self, sd: dict) -> None:
        if (sd["rows"], sd["cols"]) != (self.rows, self.cols):
            raise ValueError(f"checkpoint crossbar is {sd['rows']}x{sd['cols']}, this one {self.rows}x{self.cols}")
        self._state = DeviceState(**sd["state"]).to(self.torch_device)
        self.generator.set_state(sd["rng"])
        self.time = sd["time"]
        self.counters = Counters(**sd["counters"])
        self.adc_range = float(sd.get("adc_range", self.adc_range))
        self.adc_range_t = float(sd.get("adc_range_t", self.adc_range_t))
        if "initial_weights" in sd:
            self.initial_weights = sd["initial_weights"].to(self.torch_device, self.dtype)
        self.pulsed = bool(sd.get("pulsed", True))
        self.version += 1

    def __repr__(self) -> str:
        return (f"Crossbar({self.rows}x{self.cols}, device={self.device.card.name!r}, tile={self.tile}, "
                f"dac_bits={self.dac_bits}, adc_bits={self.adc_bits})")


# ============================================================================ layers
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
                layer.crossbar.counters.digital_macs += macs
            else:
                gx = layer.crossbar.backward(gy) * layer.weight_scale
        gw = None
        if ctx.needs_input_grad[1]:
            gw = gy.t() @ x                                      # [out, in], like nn.Linear
            layer.crossbar.counters.digital_macs += macs
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
            gw = torch.nn.grad.conv2d_weight(x, shape4, gy, stride=layer._s, padding=layer._p).reshape(
                layer.out_channels, -1)
            layer.crossbar.counters.digital_macs += macs
        if ctx.needs_input_grad[0]:
            if layer.digital_backward:
                w4 = (layer.crossbar.weights().t() * layer.weight_scale).reshape(shape4)
                gx = torch.nn.grad.conv2d_input(x.shape, w4, gy, stride=layer._s, padding=layer._p)
                layer.crossbar.counters.digital_macs += macs
            else:
                b = x.shape[0]
                g_flat = gy.reshape(b, layer.out_channels, -1).transpose(1, 2).reshape(-1, layer.out_channels)
                g_cols = layer.crossbar.backward(g_flat) * layer.weight_scale             # [B*L, C*k*k]
                g_cols = g_cols.reshape(b, -1, g_cols.shape[1]).transpose(1, 2)
                gx = F.fold(g_cols, x.shape[2:], layer.kernel_size, stride=layer._s, padding=layer._p)
        return gx, gw, None, None


class _AnalogBase(nn.Module):
    """Shared machinery of analog layers: crossbar, gain, weight mirror, lifecycle checks."""

    def _setup(self, rows, cols, device, tile, dac_bits, adc_bits, adc_range, seed, weight_scale, init_bound):
        self.crossbar = Crossbar(rows, cols, device, tile=tile, dac_bits=dac_bits, adc_bits=adc_bits,
                                 adc_range=adc_range, seed=seed)
        # digital gain so that the initial weights use half of the conductance range
        self.weight_scale = float(weight_scale) if weight_scale is not None else 2.0 * init_bound
        g = torch.Generator().manual_seed(seed + 7919)
        w0 = (torch.rand(rows, cols, generator=g) * 2 - 1) * init_bound / self.weight_scale
        self.crossbar.initialize(w0)
        # mirror of the effective weights, [out, in] like nn.Linear: carries .grad for PulseSGD
        self.weight = nn.Parameter(torch.empty(cols, rows))
        self.weight._neurosal_layer = self      # PulseSGD finds the array through this
        self.spikes = False          # inputs are binary spikes (set by the simulator)
        self.path = "auto"           # event-driven / dense read choice (see Crossbar.forward)
        self.digital_backward = False  # True: backprop errors off-array (no transposed read)
        self.local_input = False       # True: no error passes back through this layer (DFA)
        self.conv_read = True          # convs: per-tile convolutions instead of im2col (same reads)
        self.software_weight = None    # [in, out] Parameter: compute digitally instead (verify rule)
        self._synced = (-1, -1)
        self._sync()

    def _sync(self):
        with torch.no_grad():
            self.weight.copy_(self.crossbar.weights().t() * self.weight_scale)
        self._synced = (self.crossbar.version, self.weight._version)

    def _check_and_sync(self):
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

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device="ideal",
                 tile=(128, 128), dac_bits=None, adc_bits=None, adc_range=12.0, weight_scale=None, seed: int = 0,
                 init_gain: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup(in_features, out_features, device, tile, dac_bits, adc_bits, adc_range, seed, weight_scale,
                    init_bound=init_gain / math.sqrt(in_features))
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
                 weight_scale=None, seed: int = 0, init_gain: float = 1.0):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self._s = stride if isinstance(stride, int) else stride[0]
        self._p = padding if isinstance(padding, int) else padding[0]
        fan_in = in_channels * kh * kw
        self._setup(fan_in, out_channels, device, tile, dac_bits, adc_bits, adc_range, seed, weight_scale,
                    init_bound=init_gain / math.sqrt(fan_in))
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


def calibrate_adc(crossbars, run, *, quantile: float = 0.999, min_range: float = 1e-3) -> list[float]:
    r"""Set each crossbar's forward ADC range from the partial sums it sees.

    ``run()`` performs forward reads (e.g. a network on a calibration batch); every crossbar in
    ``crossbars`` that has a finite ADC records :math:`|\text{partial sum}|` of each tile (in
    units of its range, with the per-vector input scale removed), and its ``adc_range`` becomes
    the ``quantile`` of those values: the chip's ADC reference set for the signal it really
    carries. Sparse spike inputs give column sums far below a range made for dense inputs; a
    calibrated range puts the ADC's levels where the signal is. Transposed (error) reads keep
    their own range (``adc_range_t``). Returns the new ranges (``nan`` where nothing was read).
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
            v = v[torch.randint(v.numel(), (1 << 24,), generator=torch.Generator().manual_seed(1))]
        c.adc_range = max(float(torch.quantile(v, quantile)), min_range)
        ranges.append(c.adc_range)
    return ranges


# ============================================================================ optimizer
class PulseSGD(torch.optim.Optimizer):
    r"""SGD whose analog step is a pulse count per device, applied by the device model.

    For an analog weight, the requested change :math:`\Delta w = -\eta\,\partial L/\partial w`
    becomes :math:`n = R(\Delta w / \Delta w_{min})` push-pull pulses (``+n`` on G+,
    ``-n`` on G-), with :math:`\Delta w_{min}` the nominal step of one pulse pair and
    :math:`R` deterministic rounding (``'round'``) or stochastic rounding
    (``'stochastic'``: :math:`\lfloor v + \xi\rfloor`, :math:`\xi \sim U[0,1)`, unbiased).
    What the pulses actually do depends on the device (nonlinearity, asymmetry, noise).
    Digital parameters (biases, co-processor weights) take a plain SGD step.
    """

    def __init__(self, params, lr: float = 0.01, *, rounding: str = "stochastic", max_pulses: int = 64,
                 seed: int = 0):
        if rounding not in ("round", "stochastic"):
            raise ValueError(f"rounding must be 'round' or 'stochastic', got {rounding!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        super().__init__(params, dict(lr=lr))
        self.rounding = rounding
        self.max_pulses = int(max_pulses)
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def step(self, closure=None):
        """One step, atomic: every pulse count and digital update is computed and checked
        first (:class:`PulseError` on a NaN or infinite one), then everything is written."""
        loss = closure() if closure is not None else None
        writes, digital = [], []
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                layer = getattr(p, "_neurosal_layer", None)
                if layer is None:
                    if not bool(torch.isfinite(p.grad).all()):
                        raise PulseError("a digital parameter's gradient is not finite; nothing was written")
                    digital.append((p, lr))
                    continue
                v = p.grad.t() * (-lr / layer.dw_min)          # pulses per cell, [rows, cols]
                if self.rounding == "round":
                    n = torch.round(v)
                else:
                    n = torch.floor(v + torch.rand(v.shape, generator=self.generator, dtype=v.dtype))
                check_pulses(n, f"{type(layer).__name__} {tuple(p.shape)}")
                writes.append((layer, n.clamp_(-self.max_pulses, self.max_pulses)))
        for p, lr in digital:
            p.add_(p.grad, alpha=-lr)
        for layer, n in writes:
            layer.crossbar.apply_pulses(n, -n)
        return loss
