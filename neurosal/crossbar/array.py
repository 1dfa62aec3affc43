r"""Crossbar arrays of differential device pairs: storage, reads through the periphery, writes.

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

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..accel import Generators, _derived_seed
from ..devices import Device, DeviceCard, DeviceState
from ..kernels import fused, normal_at
from .counters import Counters
from .periphery import code_bits, count_nonzero, dac, record_calibration
from .programming import ProgramResult, program

__all__ = ["Crossbar"]

@functools.lru_cache(maxsize=256)
def _window_cover(h: int, w: int, kh: int, kw: int, stride: int, padding: int, device: torch.device) -> torch.Tensor:
    """How many ``kh`` x ``kw`` windows of a convolution (``stride``, zero ``padding``) read each
    pixel of an ``h`` x ``w`` input: ``[h, w]`` int64 (fold of the unfolded ones)."""
    ones = torch.ones(1, 1, h, w, dtype=torch.float64, device="cpu")
    cover = F.fold(F.unfold(ones, (kh, kw), padding=padding, stride=stride), (h, w), (kh, kw), padding=padding,
                   stride=stride)
    return cover.reshape(h, w).round().to(torch.int64).to(device)


def _fold_rows(cols: torch.Tensor, x_shape: tuple, kernel_size: tuple, stride: int, padding: int) -> torch.Tensor:
    """``col2im`` of per-position row vectors ``cols`` [B·Ho·Wo, C·kh·kw] (positions ordered
    b, ho, wo; rows channel, kh, kw) onto ``x_shape`` [B, C, H, W]: the same sums as
    ``F.fold`` in the same order, as ``kh·kw`` strided adds into a channels-last buffer (several
    times faster than ``F.fold`` on the transposed layout on a CPU). Returns a contiguous NCHW
    tensor (downstream reductions then sum in the order they did after ``F.fold``)."""
    b, ch, h, w = x_shape
    kh, kw = kernel_size
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    c6 = cols.view(b, ho, wo, ch, kh, kw)
    out = cols.new_zeros(b, h + 2 * padding + stride, w + 2 * padding + stride, ch)
    for i in range(kh):
        for j in range(kw):
            out[:, i:i + stride * ho:stride, j:j + stride * wo:stride] += c6[..., i, j]
    return out[:, padding:padding + h, padding:padding + w].permute(0, 3, 1, 2).contiguous()


class Crossbar:
    """A ``rows x cols`` array of differential device pairs with DAC/ADC periphery.

    Parameters
    ----------
    rows, cols : array size (inputs x outputs of ``forward``).
    device : device card name, path or :class:`~neurosal.devices.DeviceCard`.
    tile : largest physical sub-array; partial sums of row tiles are added digitally.
    dac_bits, adc_bits : converter resolutions; ``None`` is an ideal converter.
    adc_range : ADC clipping range in units of full-scale input x full-scale weight.
    column_gain, column_offset : mismatch of the forward read's column converters (sense
        amplifier / TIA and ADC of each column of each row tile), drawn once at fabrication
        from the chip's seed: a partial sum ``s`` is converted as ``a·s + o·FS`` with gain
        ``a ~ N(1, column_gain²)`` (clipped at 0) and offset ``o ~ N(0, column_offset²)`` in
        units of the ADC's full scale ``FS``. They need a finite ADC (``adc_bits``). Read noise
        is added after the gain (referred to the converter's input). The transposed (error)
        reads use the row-side converters, not modelled with errors.
    seed : seeds the chip (D2D draws, faults) and the noise stream: same seed, same chip.
    """

    def __init__(self, rows: int, cols: int, device: str | DeviceCard | Device = "ideal", *,
                 tile: tuple[int, int] = (128, 128), dac_bits: Optional[int] = None,
                 adc_bits: Optional[int] = None, adc_range: float = 12.0, column_gain: float = 0.0,
                 column_offset: float = 0.0, seed: int = 0, dtype: torch.dtype = torch.float32,
                 torch_device: str | torch.device | None = None):
        if rows < 1 or cols < 1:
            raise ValueError(f"crossbar size must be positive, got {rows} x {cols}")
        if len(tile) != 2 or tile[0] < 1 or tile[1] < 1:
            raise ValueError(f"tile must be (rows, cols) >= 1, got {tile}")
        for name, b in (("dac_bits", dac_bits), ("adc_bits", adc_bits)):
            if b is not None and not (1 <= b <= 24):
                raise ValueError(f"{name} must be None (ideal) or 1..24, got {b}")
        if not adc_range > 0:
            raise ValueError(f"adc_range must be > 0, got {adc_range}")
        for name, v in (("column_gain", column_gain), ("column_offset", column_offset)):
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be a standard deviation in [0, 1], got {v}")
        if (column_gain or column_offset) and adc_bits is None:
            raise ValueError("column_gain / column_offset are errors of the column ADCs: they need a finite ADC "
                             "(adc_bits), got adc_bits=None")
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
        self._gens = Generators(self.seed)        # the noise stream, one generator per torch device
        # the read-noise stream (counter-based, see _read_key): its key and how far it has been read
        kg = torch.Generator(device="cpu").manual_seed(_derived_seed(self.seed, b"read noise"))
        self._noise_words = torch.randint(0, 1 << 62, (2,), generator=kg, dtype=torch.int64).tolist()
        self._noise_key: dict = {}
        self.read_position = 0
        # the fabricated chip is drawn on the CPU whatever the accelerator: same seed, same chip
        chip = torch.Generator(device="cpu").manual_seed(self.seed)
        st = self.device.init_state((2, self.rows, self.cols), generator=chip, u0=0.5, dtype=dtype, device="cpu")
        self._state = st.to(self.torch_device)
        # the column converters' gain and offset errors, one per (row tile, column), [nt, 1, cols]
        self.column_gain, self.column_offset = float(column_gain), float(column_offset)
        self._col_gain = self._col_offset = None
        if column_gain or column_offset:
            cg = torch.Generator(device="cpu").manual_seed(_derived_seed(self.seed, b"column errors"))
            z = torch.randn(2, self.n_row_tiles, 1, self.cols, generator=cg, dtype=torch.float64)
            self._col_gain = (1.0 + self.column_gain * z[0]).clamp_min(0.0).to(self.torch_device, dtype)
            self._col_offset = (self.column_offset * z[1]).to(self.torch_device, dtype)
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
        # off-chip (hardware-aware) training: the weights that reads use instead of the
        # conductances, [rows, cols] in weight units; None on the chip (see AnalogLinear.offchip)
        self.override: Optional[torch.Tensor] = None

    # -- where it lives -----------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator:
        """The noise generator on the device that holds this array."""
        return self._gens.get(self.torch_device)

    def _apply(self, fn) -> "Crossbar":
        """Apply a tensor conversion (``nn.Module._apply``'s ``fn``: a device move or a float
        dtype change) to every tensor the array holds; the analog layers call it from their
        own ``_apply``, so ``net.to(...)`` moves the chip."""
        st = self._state
        # programming times stay float64 on any dtype change (seconds since t = 0 need the bits)
        self._state = DeviceState(**{k: ((fn(v).to(torch.float64) if k == "t_prog" else fn(v))
                                         if isinstance(v, torch.Tensor) else v)
                                     for k, v in st.state_dict().items()})
        self.initial_weights = fn(self.initial_weights)
        self.torch_device = self._state.g.device
        self.dtype = self._state.g.dtype
        self._w, self._cache_version, self.last_write = None, -1, None
        if self.override is not None:
            self.override = fn(self.override)
        if self._col_gain is not None:
            self._col_gain, self._col_offset = fn(self._col_gain), fn(self._col_offset)
        self.version += 1
        return self

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Crossbar":
        """Move the array (conductances, draws, clocks, controller-visible state) to a torch
        ``device`` and/or floating ``dtype``; returns ``self``."""
        dev = torch.device(device) if device is not None else None
        return self._apply(lambda t: t.to(dev, dtype if t.is_floating_point() else None))

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
        """Effective weights ``(G+ - G-)/Gref`` as read now (no read noise), ``[rows, cols]``.
        Cached until the next write or, on a drifting device, until the chip's clock moves.
        While :attr:`override` is set (off-chip training of a model of this array), the reads
        use it instead and the conductances are untouched."""
        if self.override is not None:
            return self.override
        now = self.time if self._state.t_prog is not None else None
        if self._cache_version != self.version or self._w is None or getattr(self, "_cache_time", None) != now:
            g = self.conductances()
            self._w = ((g[0] - g[1]) / self.g_ref).contiguous()
            self._cache_version = self.version
            self._cache_time = now
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
        self.counters.add("forward_reads", x.shape[0])
        return self._read(x, transposed=False, spikes=spikes, path=path)

    def backward(self, d: torch.Tensor) -> torch.Tensor:
        """Transposed read ``d @ W^T`` (for backprop through the array); ``d``: [batch, cols]."""
        if d.dim() != 2 or d.shape[1] != self.cols:
            raise ValueError(f"backward expects input [batch, {self.cols}], got {tuple(d.shape)}")
        self.counters.add("backward_reads", d.shape[0])
        return self._read(d, transposed=True, spikes=False, path="dense")

    def backward_conv(self, d: torch.Tensor, x_shape, kernel_size: tuple, stride: int, padding: int,
                      scale: float = 1.0) -> torch.Tensor:
        """Transposed reads of a convolution's output errors ``d`` [B, cols, Ho, Wo], folded back
        onto the input ``x_shape`` [B, C, H, W] (rows ordered channel, kh, kw): the same result
        (to float rounding), counters and noise stream as :meth:`backward` on the error vectors
        (ordered b, ho, wo) followed by ``col2im``. When the transposed read is ideal (no DAC,
        no ADC, no read noise) it is one transposed convolution on the array's weights instead
        of ``B·Ho·Wo`` vector reads and a fold. ``scale`` (a layer's digital gain) multiplies
        every read before the fold."""
        b, n_out, ho, wo = d.shape
        if n_out != self.cols:
            raise ValueError(f"backward_conv expects errors [batch, {self.cols}, Ho, Wo], got {tuple(d.shape)}")
        kh, kw = kernel_size
        if self.ideal_periphery:
            d = d.to(self.dtype)
            n = b * ho * wo
            c = self.counters
            c.add("backward_reads", n)
            nnz = count_nonzero(d)
            nt_in, nt_out = self.n_col_tiles, self.n_row_tiles
            c.add("row_activations", nnz, nt_out)
            c.add("cell_reads", nnz, self.rows)
            self._count_analog(n, nnz, self.rows, nt_in, nt_out, 0)
            self.last_path = "dense"
            w4 = (self.weights().t() * scale).reshape(n_out, x_shape[1], kh, kw)
            return torch.nn.grad.conv2d_input(tuple(x_shape), w4, d, stride=stride, padding=padding)
        flat = d.permute(0, 2, 3, 1).reshape(-1, n_out)
        cols = self.backward(flat) * scale                               # [B*Ho*Wo, C*kh*kw]
        return _fold_rows(cols, tuple(x_shape), kernel_size, stride, padding)

    def _read(self, x: torch.Tensor, transposed: bool, spikes: bool, path: str = "dense") -> torch.Tensor:
        x = x.to(self.dtype)
        n_in = self.cols if transposed else self.rows
        n_out = self.rows if transposed else self.cols
        t_in = self.tile[1] if transposed else self.tile[0]      # summed dimension
        t_out = self.tile[0] if transposed else self.tile[1]
        nt_in, nt_out = -(-n_in // t_in), -(-n_out // t_out)
        batch = x.shape[0]
        # ---- activity (spikes are 0/1 by contract). Counts are tensors on x's device (no
        # host sync); only the CPU's 'auto' choice of the event path looks at the data on the
        # host (an accelerator reads dense: a gather pays off only on a CPU)
        c = self.counters
        tiles = None                           # (vector, row-tile) reads with at least one input
        events = None
        nnz = None
        if path == "auto" and spikes and x.device.type == "cpu":
            nnz = int(count_nonzero(x))
            if nnz > self.event_density(n_out) * x.numel():
                path = "dense"
        if path == "event" or (path == "auto" and spikes and x.device.type == "cpu"):
            events = x.nonzero()                                   # [nnz, 2]: (vector, row), sorted
            nnz = events.shape[0]
            if spikes and nnz:
                slot = events[:, 0] * nt_in + events[:, 1] // t_in if nt_in > 1 else events[:, 0]
                tiles = (slot[1:] != slot[:-1]).sum() + 1       # runs of a sorted slot
            elif spikes:
                tiles = 0
        elif spikes:
            if nt_in == 1:
                tiles = (x.sum(1) != 0).sum()
            else:   # per-tile input counts by one small matmul with the tile indicator
                ind = torch.zeros(n_in, nt_in, dtype=x.dtype, device=x.device)
                r = torch.arange(n_in, device=x.device)
                ind[r, r // t_in] = 1
                tiles = ((x @ ind) != 0).sum()
        if nnz is None:
            nnz = count_nonzero(x)
        c.add("row_activations", nnz, nt_out)
        c.add("cell_reads", nnz, n_out)
        if spikes:
            c.add("adc_conversions", tiles, n_out)     # a tile with no active row converts nothing
        else:
            self._count_analog(batch, nnz, n_out, nt_in, nt_out, 0 if transposed else code_bits(x))
        # ---- DAC: analog inputs are scaled to full scale per vector (a digital gain, undone
        # after the ADC) whenever a converter is finite, so small vectors (e.g. backpropagated
        # errors) use the ADC's range instead of rounding to zero; spikes are full scale already
        scale = None
        adc_fs = self.adc_range_t if transposed else self.adc_range   # ADC full scale (scaled input units)
        if not spikes:
            x, scale, adc_fs = dac(x, self.dac_bits, self.adc_bits, adc_fs)
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
        c.add("forward_reads", n)
        bits = code_bits(x)
        # active rows of all patches: each input pixel's nonzero channels (summed over the
        # batch) times the number of windows that read the pixel; a 0/1 spike map's values
        # are its nonzero count (one cheap sum instead of a comparison)
        if isinstance(bits, int) and bits == 1 and b * ch < 2 ** 24:
            nz = x.sum((0, 1)).to(torch.int64)
        else:
            nz = (x != 0).sum((0, 1))
        nnz = (nz * _window_cover(h, w_, kh, kw, stride, padding, x.device)).sum()
        c.add("row_activations", nnz, nt_out)
        c.add("cell_reads", nnz, n_out)
        self._count_analog(n, nnz, n_out, nt_in, nt_out, bits)
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

    def _count_analog(self, vectors: int, nnz, n_out: int, nt_in: int, nt_out: int, code_bits) -> None:
        """Conversions of a non-spike read: every column of every row tile per vector, a DAC per
        nonzero input and tile; kept apart by kind (values, or small integer codes of
        ``code_bits`` bits) so that the cost model can charge a bit-serial periphery its cycles.
        ``nnz`` and ``code_bits`` may be tensors (counted without a host sync)."""
        c = self.counters
        adc = vectors * n_out * nt_in
        c.add("adc_conversions", adc)
        c.add("dac_conversions", nnz, nt_out)
        if isinstance(code_bits, torch.Tensor) and not (code_bits.device.type == "cpu" and not Counters.defer_cpu):
            # the kind is data: count both ways with weights 0/1 (analog = all - codes)
            is_code = (code_bits > 0).to(torch.int64)
            code_nnz = is_code * nnz
            c.add("code_reads", is_code, vectors)
            c.add("code_cycles", code_bits, vectors)
            c.add("code_cell_reads", code_nnz, n_out)
            c.add("code_adc_conversions", is_code, adc)
            c.add("code_dac_conversions", code_nnz, nt_out)
            c.add("analog_reads", vectors)
            c.add("analog_reads", is_code, -vectors)
            c.add("analog_cell_reads", nnz - code_nnz, n_out)
            c.add("analog_adc_conversions", adc)
            c.add("analog_adc_conversions", is_code, -adc)
            return
        code_bits = int(code_bits)
        if code_bits:
            c.add("code_reads", vectors)
            c.add("code_cycles", vectors * code_bits)
            c.add("code_cell_reads", nnz, n_out)
            c.add("code_adc_conversions", adc)
            c.add("code_dac_conversions", nnz, nt_out)
        else:
            c.add("analog_reads", vectors)
            c.add("analog_cell_reads", nnz, n_out)
            c.add("analog_adc_conversions", adc)

    def forward_events(self, vec: torch.Tensor, row: torch.Tensor, n_vectors: int) -> torch.Tensor:
        """Event-driven read of address events: input spike ``k`` drives row ``row[k]`` of
        vector ``vec[k]`` (sorted by vector, then row). Returns ``[n_vectors, cols]``; the same
        result, counters and noise stream as :meth:`forward` of the dense 0/1 matrix, without
        scanning the silent rows."""
        if vec.shape != row.shape or vec.dim() != 1:
            raise ValueError("forward_events: vec and row must be 1-D tensors of equal length")
        t_in, nt_in = self.tile[0], self.n_row_tiles
        c = self.counters
        c.add("forward_reads", n_vectors)
        nnz = int(vec.numel())
        c.add("row_activations", nnz * self.n_col_tiles)
        c.add("cell_reads", nnz * self.cols)
        if nnz:
            slot = vec * nt_in + torch.div(row, t_in, rounding_mode="floor") if nt_in > 1 else vec
            c.add("adc_conversions", (slot[1:] != slot[:-1]).sum() + 1, self.cols)
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
        scale, a number or ``[1, batch, 1]``); the tiles are summed digitally. Noise, ADC and the
        tile sum run as one fused kernel. The noise of a partial sum is the counter-based normal
        number (:mod:`neurosal.kernels`) of its place in the array's read stream (:meth:`_read_key`),
        so every read path (dense, event-driven, convolution) draws the same numbers, and reading
        vectors in one call or in several (the engine's chunks) does too."""
        sr = self.read_noise
        bits = self.adc_bits
        step = inv = None
        if self._col_gain is not None and not transposed:        # the column converters' mismatch
            fs = self.adc_range if adc_fs is None else adc_fs
            part = torch.addcmul(self._col_offset * fs, part, self._col_gain)
        if bits is not None:
            levels = 2 ** (bits - 1) - 1
            fs = self.adc_range if adc_fs is None else adc_fs
            if isinstance(fs, torch.Tensor):
                step = fs / levels
            else:        # a number (a calibrated range: it changes, so it goes in as data)
                step = torch.tensor(fs / levels, dtype=part.dtype, device=part.device)
                inv = torch.tensor(levels / fs, dtype=part.dtype, device=part.device)
        sig = key = None
        if sr > 0:
            # sum over the tile's rows of two independent device noises per weight
            sig = (sr * math.sqrt(2.0)) * l2
            key = self._read_key(part)
        if self._calib is not None and not transposed:      # calibration (not a hot path): in steps
            if sig is not None:
                part = _add_noise.eager(part, sig, key)
            record_calibration(self._calib, part, adc_fs, self.adc_range)
            return _adc_sum.eager(part, levels, step, inv) if bits is not None else part.sum(0)
        if sig is not None and bits is not None:
            return _noise_adc_sum(part, sig, key, levels, step, inv)
        if sig is not None:
            return _noise_sum(part, sig, key)
        if bits is not None:
            return _adc_sum(part, levels, step, inv)
        return part.sum(0)

    def _read_key(self, part: torch.Tensor) -> torch.Tensor:
        """The key of a read's noise: partial sum ``(tile k, vector b, column j)`` of
        ``part [nt, batch, n_out]`` is number ``(p + b) nt n_out + k n_out + j`` of the array's read
        stream, ``p`` the vectors read before (:attr:`read_position`; saved in checkpoints). The
        stream's key is drawn once from the array's seed (its own stream, apart from the writes')."""
        nt, batch, n_out = part.shape
        base = self._noise_key.get(part.device)
        if base is None:
            base = torch.tensor(self._noise_words, dtype=torch.int64, device=part.device)
            self._noise_key[part.device] = base
        off = (self.read_position * nt * n_out) % (1 << 64)
        self.read_position += batch
        if off == 0:
            return base
        off -= (1 << 64) if off >= (1 << 63) else 0
        return base + torch.tensor([off, 0], dtype=torch.int64, device=part.device)

    # -- writes --------------------------------------------------------------------------
    def apply_pulses(self, n_plus: torch.Tensor, n_minus: torch.Tensor, *, check: bool = True,
                     max_count: Optional[int] = None, write_cycles=None) -> torch.Tensor:
        """Apply signed pulse counts to the G+ and G- devices (``[rows, cols]`` each).

        Positive counts potentiate (raise G), negative depress; the device model decides
        what each pulse does (nonlinearity, asymmetry, bounds, noise). Returns the number
        of pulses applied (a 0-d tensor on the array's device). ``check=False`` skips the
        finiteness check (the caller checked); ``max_count`` bounds ``|n|`` (lets a device
        whose pulses act one at a time loop without reading the counts back). ``write_cycles``:
        the pulse slots the write takes, where the update scheme sets them (a pulse-train update
        writes every row at once); default: rows one at a time (:meth:`_write_cycles_at`).
        """
        for name, n in (("n_plus", n_plus), ("n_minus", n_minus)):
            if tuple(n.shape) != (self.rows, self.cols):
                raise ValueError(f"{name} has shape {tuple(n.shape)}, crossbar is {(self.rows, self.cols)}")
        t = lambda v: torch.as_tensor(v, device=self.torch_device).to(self.torch_device, self.dtype)  # noqa: E731
        n = torch.stack([t(n_plus), t(n_minus)]).reshape(-1)
        if self._dense_writes():        # every device (zero counts change nothing): no selection
            return self.apply_pulses_at(torch.arange(n.numel(), device=n.device), n, check=check,
                                        max_count=max_count, write_cycles=write_cycles)
        idx = (n != 0).nonzero().squeeze(1)            # NaN != 0: a bad count is passed on and refused
        return self.apply_pulses_at(idx, n[idx], check=check, max_count=max_count, write_cycles=write_cycles)

    def apply_push_pull(self, n: torch.Tensor, *, check: bool = True, max_count: Optional[int] = None,
                        write_cycles=None) -> torch.Tensor:
        """``apply_pulses(n, -n)`` (``+n`` on G+, ``-n`` on G-, ``[rows, cols]``) without building
        the ``[2, rows, cols]`` count tensor: the pulsed cells are found once, in ``n``. The same
        selection, order, result, counters and noise stream as :meth:`apply_pulses`."""
        if tuple(n.shape) != (self.rows, self.cols):
            raise ValueError(f"pulse counts have shape {tuple(n.shape)}, crossbar is {(self.rows, self.cols)}")
        if self._dense_writes():
            return self.apply_pulses(n, -n, check=check, max_count=max_count, write_cycles=write_cycles)
        n = torch.as_tensor(n, device=self.torch_device).to(self.torch_device, self.dtype)
        flat = n.reshape(-1)
        if self.dense_fraction < 1 and self.device.dense_capable():
            if flat.numel() <= self.dense_cells:            # small: one fused pass costs less than selecting
                return self._push_pull_dense(n, check, write_cycles)
            nnz = int(count_nonzero(n))                     # NaN counts as nonzero: refused in the write
            if nnz > self.dense_fraction * flat.numel():
                return self._push_pull_dense(n, check, write_cycles)
        cells = (flat != 0).nonzero().squeeze(1)            # NaN != 0: a bad count is passed on and refused
        v = flat.index_select(0, cells)
        if write_cycles is None and cells.numel():
            write_cycles = self._row_slots(n.abs())          # both devices of a pair: the same |n|
        return self.apply_pulses_at(torch.cat([cells, cells + self.rows * self.cols]), torch.cat([v, -v]),
                                    check=check, max_count=max_count, write_cycles=write_cycles, _cells=cells)

    #: on a CPU, :meth:`apply_push_pull` writes every cell in one fused pass (instead of selecting
    #: the pulsed ones) when more than this fraction of the pairs is pulsed (the same result and
    #: noise either way, see :meth:`Device.pulse_dense`): gathering a cell's state and parameters
    #: by index costs several times a streaming pass (measured on 1024 x 1024 ``severe``,
    #: benchmarks/bench_crossbar.py). 1: never.
    dense_fraction: float = 0.15
    #: ... and always for arrays of at most this many pairs (the selection's fixed cost is larger)
    dense_cells: int = 1 << 14

    def _push_pull_dense(self, n: torch.Tensor, check: bool, write_cycles) -> torch.Tensor:
        applied, pulsed = self.device.pulse_dense(self._state, n, generator=self.generator, time=self.time,
                                                  push_pull=True, what=f"crossbar {self.rows}x{self.cols}",
                                                  check=check)
        c = self.counters
        c.add("pulses", applied)
        c.add("pulsed_cells", pulsed)
        c.add("update_ops", (pulsed > 0).to(torch.int64))
        cycles = self._row_slots(n.abs()) if write_cycles is None else write_cycles
        c.add("write_cycles", cycles * (pulsed > 0))
        self.pulsed = True
        self.version += 1
        return applied

    #: hand every device to the device model, a zero count where nothing is asked, instead of
    #: selecting the pulsed ones by index (``None``: on an accelerator, where the selection would
    #: make the host wait; sparse on a CPU). The same writes and counts; the cycle-to-cycle noise
    #: is drawn for every device, so its stream differs from the sparse one.
    dense_writes: Optional[bool] = None

    def _dense_writes(self) -> bool:
        return self.dense_writes if self.dense_writes is not None else self.torch_device.type != "cpu"

    def apply_pulses_at(self, idx: torch.Tensor, n: torch.Tensor, *, check: bool = True,
                        max_count: Optional[int] = None, write_cycles=None, _cells=None) -> torch.Tensor:
        """Sparse :meth:`apply_pulses`: signed counts ``n`` for the devices at flat indices ``idx``
        (ascending) into the ``[2, rows, cols]`` array (``d * rows * cols + row * cols + col``,
        ``d`` 0 for G+, 1 for G-). Same result, counters and noise stream as the dense call."""
        if idx.numel() == 0:
            return torch.zeros((), dtype=torch.int64, device=self.torch_device)
        applied, pulsed = self.device.pulse_at(self._state, idx, n, generator=self.generator, time=self.time,
                                               return_cells=True, what=f"crossbar {self.rows}x{self.cols}",
                                               check=check, max_count=max_count)
        c = self.counters
        c.add("pulses", applied)
        c.add("pulsed_cells", pulsed)
        c.add("update_ops", (pulsed > 0).to(torch.int64))
        cycles = self._write_cycles_at(idx, n) if write_cycles is None else write_cycles
        c.add("write_cycles", cycles * (pulsed > 0))
        self.pulsed = True
        fresh = self._w is not None and self._cache_version == self.version and self._state.t_prog is None
        self.version += 1
        if fresh:   # refresh the weight cache at the written cells only (no drift to apply)
            # (``_cells``: the pairs written, where the caller knows them: each once)
            cells = idx % (self.rows * self.cols) if _cells is None else _cells
            g = self._state.g.view(2, -1)
            self._w.view(-1).index_put_((cells,), (g[0].index_select(0, cells) - g[1].index_select(0, cells))
                                        / self.g_ref)
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
        return row_max.view(self.n_row_tiles, tr, nct).sum(1).amax().round().to(torch.int64)

    def _row_slots(self, a: torch.Tensor) -> int:
        """Row-sequential time slots of an operation that takes ``a[i, j] >= 0`` slots at cell
        (i, j): per tile, the sum over its rows of the row's largest entry (a row's columns act
        at once); tiles work in parallel, so the slowest tile sets the time."""
        tr, tc = self.tile
        k = self.cols // tc                                      # full column tiles
        parts = []
        if k:
            parts.append(a[:, :k * tc].reshape(self.rows, k, tc).amax(-1))
        if k * tc < self.cols:
            parts.append(a[:, k * tc:].amax(-1, keepdim=True))
        row_max = parts[0] if len(parts) == 1 else torch.cat(parts, 1)          # [rows, col tiles]
        pr = self.n_row_tiles * tr - self.rows
        if pr:
            row_max = F.pad(row_max, (0, 0, 0, pr))
        return row_max.view(self.n_row_tiles, tr, self.n_col_tiles).sum(1).amax().round().to(torch.int64)

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
        self.counters.add("verify_reads", mask.sum(), 2)
        self.counters.add("verify_cycles", self._row_slots(mask.to(self.dtype)))
        return g

    def program(self, target: torch.Tensor, tolerance: float = 0.02, max_pulses: int = 1000,
                max_iterations: int = 500) -> ProgramResult:
        """Write-and-verify: pulse each weight toward ``target`` until ``|w - target| <= tolerance``
        (:func:`~neurosal.crossbar.programming.program`: pulses and verify reads counted)."""
        return program(self, target, tolerance=tolerance, max_pulses=max_pulses, max_iterations=max_iterations)

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything that makes this chip this chip: conductances, D2D draws, RNG, clock. Tensors
        are saved on the CPU (a checkpoint loads on any accelerator) in the array's dtype."""
        return {"state": {k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v)
                          for k, v in self._state.state_dict().items()},
                "rng": self._gens.state_dict(), "read_position": self.read_position, "time": self.time, "counters": self.counters.as_dict(),
                "card": self.device.card.to_dict(), "rows": self.rows, "cols": self.cols,
                "adc_range": self.adc_range, "adc_range_t": self.adc_range_t,
                "initial_weights": self.initial_weights.detach().cpu().clone(), "pulsed": self.pulsed}

    def load_state_dict(self, sd: dict) -> None:
        if (sd["rows"], sd["cols"]) != (self.rows, self.cols):
            raise ValueError(f"checkpoint crossbar is {sd['rows']}x{sd['cols']}, this one {self.rows}x{self.cols}")
        # onto this array's device, in this array's dtype (a float32 checkpoint loads into a
        # float64 network and the reverse; masks and other non-float tensors keep their dtype)
        # (programming times stay float64 whatever the array's dtype: seconds since t = 0)
        conv = lambda k, v: (v.to(self.torch_device, self.dtype if v.is_floating_point() and k != "t_prog" else None)  # noqa: E731
                             if isinstance(v, torch.Tensor) else v)
        self._state = DeviceState(**{k: conv(k, v) for k, v in sd["state"].items()})
        rng = sd["rng"]
        if isinstance(rng, dict):
            self._gens.load_state_dict(rng)
        else:                                   # older checkpoints: the CPU generator's state
            self._gens.load_state_dict({"seed": self.seed, "states": {"cpu": rng}})
        self.time = sd["time"]
        self.read_position = int(sd.get("read_position", 0))
        self.counters.reset()
        self.counters.add_all(sd["counters"])
        self.adc_range = float(sd.get("adc_range", self.adc_range))
        self.adc_range_t = float(sd.get("adc_range_t", self.adc_range_t))
        if "initial_weights" in sd:
            self.initial_weights = sd["initial_weights"].to(self.torch_device, self.dtype)
        self._w, self._cache_version, self.last_write = None, -1, None
        self.pulsed = bool(sd.get("pulsed", True))
        self.version += 1

    def __repr__(self) -> str:
        return (f"Crossbar({self.rows}x{self.cols}, device={self.device.card.name!r}, tile={self.tile}, "
                f"dac_bits={self.dac_bits}, adc_bits={self.adc_bits})")


# ---- the read epilogue: read noise, column ADCs and the digital sum of the row tiles, fused
def _noise(part: torch.Tensor, sig: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    nt, batch, n_out = part.shape       # counter of (k, b, j): (b nt + k) n_out + j, vector-major
    c = torch.arange(part.numel(), dtype=torch.int64, device=part.device).view(batch, nt, n_out).transpose(0, 1)
    return part + sig * normal_at(key, c, part.dtype)


def _adc(part: torch.Tensor, levels: int, step: torch.Tensor, inv) -> torch.Tensor:
    """Round to the nearest of ``levels`` per side of width ``step`` and clip (as :func:`adc_`;
    ``inv``: ``1/step`` where the full scale is one number, multiplied instead of divided)."""
    scaled = part / step if inv is None else part * inv
    return torch.clamp(scaled, -levels, levels).round() * step


_add_noise = fused(_noise)


@fused
def _noise_adc_sum(part, sig, key, levels: int, step, inv):
    return _adc(_noise(part, sig, key), levels, step, inv).sum(0)


@fused
def _noise_sum(part, sig, key):
    return _noise(part, sig, key).sum(0)


@fused
def _adc_sum(part, levels: int, step, inv):
    return _adc(part, levels, step, inv).sum(0)
