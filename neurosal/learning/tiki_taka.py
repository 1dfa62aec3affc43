r"""The Tiki-Taka family: a fast array takes the updates, a slow array holds the weights.

``ttv2`` — Tiki-Taka v2 (T. Gokmen, "Enabling training of neural networks on noisy hardware",
Front. Artif. Intell. 4, 699148 (2021)). Every analog layer has a second array :math:`A` (the
same device card and periphery, initialized to zero) beside the array :math:`C` that the
network reads (:math:`W = C`; TTv2's :math:`\gamma = 0`). Per training step:

1. forward through :math:`C`, errors back through :math:`C` (transposed reads), as ``bp``;
2. the SGD update goes to :math:`A`, not :math:`C`: :math:`A \mathrel{+}= -\eta\,x^T\delta`
   as pulses (``update='rounded'``: the digital gradient rounded stochastically to pulse
   counts; ``'pulse-train'``: in-array coincidences, :mod:`neurosal.crossbar.pulse_train`);
3. ``transfer_rows`` rows of :math:`A` (inputs :math:`k`, in turn) are read through the
   periphery with one-hot inputs (counted reads, read noise, ADC with a range of one full-scale
   weight) and accumulated in a digital buffer :math:`H` per weight, in units of one pulse of
   :math:`C`: :math:`H_k \mathrel{+}= \beta\,\hat A_k / \Delta w_{min}` (``transfer_lr`` = :math:`\beta`);
4. where :math:`|H| \ge 1` one pulse (``max_transfer``) goes to :math:`C` in the sign of
   :math:`H`, and :math:`H` keeps the rest (:math:`H \mathrel{-}= n`).

An asymmetric device drifts under updates of zero mean toward its symmetry point (``neurosal
devices show`` reports it), so :math:`A` is a leaky integrator of the gradient whose leak is
the device's own asymmetry: the asymmetry that biases pulse SGD becomes a low-pass filter.
Here a weight is a differential pair: :math:`A`'s zero is the balance of its two devices, which
random pulses move to :math:`w^* = (G^{+*} - G^{-*})/G_{ref}`, an offset per pair where the
devices' symmetry points differ (device-to-device variation). TTv2 transfers that offset.

``c-ttv2`` — chopped TTv2 (M. J. Rasch, F. Carta, O. Fagbohungbe, T. Gokmen, "Fast and robust
analog in-memory deep neural network training", Nat. Commun. 15, 7133 (2024); aihwkit
``ChoppedTransferCompound``): a sign :math:`c_k = \pm 1` per input row *chops* what is written
to :math:`A` (:math:`A \mathrel{+}= -\eta\,(c \odot x)^T\delta`) and is undone on the read,
:math:`H_k \mathrel{+}= \beta c_k \hat A_k/\Delta w_{min}`; after each read of row :math:`k`
its chopper flips with probability ``chop_prob``. An offset of :math:`A` enters :math:`H`
with alternating signs and averages out; the gradient does not.

``agad`` — AGAD (same paper; aihwkit ``DynamicTransferCompound``): the chopper flips regularly,
every :math:`1/\text{chop\_prob}` reads of a row, and no reference is assumed at all: the
reference is computed on the fly as the mean reading of the row over the previous chopper
period, :math:`H_k \mathrel{+}= \beta c_k (\hat A_k - \bar A_k^{prev})/\Delta w_{min}` (no
transfer until a row has a reference). Not modelled from the paper: its significance test on
the running variance and its tail weighting of a chopper period.

Rates and sizes are the training options ``lr`` (the fast array's rate), ``transfer_rows``,
``transfer_lr``, ``chop_prob`` (defaults 8 rows per step, 0.1, and 0.1 for c-ttv2 / 0.5 for
agad: tuned on 5,000 MNIST images, one epoch, on ag-a-si, extreme-nonlinear and
asymmetric-soft-bounds). The periodic reads, the pulses on both arrays and the buffer
accesses are counted on the layer's counters (both arrays share the layer's card and are priced
as its unit); :meth:`TikiTaka.stats` keeps them apart.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.cost`,
:mod:`neurosal.accel`, :mod:`.rule`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..accel import Generators, all_finite
from ..cost import Schedule, phase
from ..kernels import stochastic_round
from ..crossbar import Crossbar, PulseError, analog_layers, apply_pulse_trains, record_outer
from .rule import Rule, loss_and_gradients, register, rule_parameters

__all__ = ["TTv2", "ChoppedTTv2", "AGAD", "TikiTaka"]

#: the fast array's chip seed, offset from its layer's
_A_SEED = 104_729


class TikiTaka(Rule):
    """Shared machinery of the Tiki-Taka family (see the module's docstring)."""

    order = 8
    options = ("update", "bl", "transfer_rows", "transfer_lr", "chop_prob")
    schedule = Schedule("bp", cell_state_words=1)        # the transfer buffer H
    chopper = "none"            # 'none', 'random' (c-ttv2) or 'regular' (agad)
    on_the_fly = False          # agad: the reference is the previous chopper period's mean reading
    default_chop = 0.1          # chop_prob when the option is left out

    def __init__(self, net, *, lr: float, seed: int = 0, update: str = "rounded", bl: int = 31,
                 transfer_rows: int = 8, transfer_lr: float = 0.1, chop_prob: Optional[float] = None,
                 max_pulses: int = 64, max_transfer: int = 1, **_):
        for name, v in (("lr", lr), ("transfer_lr", transfer_lr)):
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        chop_prob = self.default_chop if chop_prob is None else chop_prob
        if not 0 < chop_prob <= 1:
            raise ValueError(f"chop_prob must be in (0, 1], got {chop_prob}")
        if transfer_rows < 1:
            raise ValueError(f"transfer_rows must be >= 1, got {transfer_rows}")
        if update not in ("rounded", "pulse-train"):
            raise ValueError(f"update must be 'rounded' or 'pulse-train', got {update!r}")
        self.net, self.lr, self.update, self.bl = net, float(lr), update, int(bl)
        self.transfer_rows, self.transfer_lr, self.chop_prob = int(transfer_rows), float(transfer_lr), float(chop_prob)
        self.max_pulses, self.max_transfer = int(max_pulses), int(max_transfer)
        self.period = max(1, round(1.0 / self.chop_prob))
        self.layers = analog_layers(net)
        if update == "pulse-train":
            record_outer(self.layers)
        self._gens = Generators(seed + 31)
        self.fast, self.state = [], []
        for layer in self.layers:
            c = layer.crossbar
            a = Crossbar(c.rows, c.cols, c.device, tile=c.tile, dac_bits=c.dac_bits, adc_bits=c.adc_bits,
                         adc_range=1.0, seed=c.seed + _A_SEED, dtype=c.dtype, torch_device=c.torch_device)
            a.initialize(torch.zeros(c.rows, c.cols, dtype=c.dtype, device=c.torch_device))
            a.counters = c.counters          # priced with its layer (same card, same periphery)
            self.fast.append(a)
            z = dict(dtype=c.dtype, device=c.torch_device)
            st = {"H": torch.zeros(c.rows, c.cols, **z), "chop": torch.ones(c.rows, **z), "ptr": 0}
            if self.on_the_fly:
                st.update(ref=torch.zeros(c.rows, c.cols, **z), acc=torch.zeros(c.rows, c.cols, **z),
                          reads=torch.zeros(c.rows, **z), has_ref=torch.zeros(c.rows, dtype=torch.bool,
                                                                              device=c.torch_device))
            self.state.append(st)
        analog = {id(layer.weight) for layer in self.layers}
        self.digital = [p for p in rule_parameters(net) if id(p) not in analog]
        self.steps = 0
        self._stats = {"fast_pulses": 0, "transfer_pulses": 0, "transfer_reads": 0}

    # -- one step -------------------------------------------------------------------------
    def step(self, x, y, *, coding: str, steps: int, seed: int) -> float:
        loss = loss_and_gradients(self.net, x, y, coding=coding, steps=steps, seed=seed)
        with torch.no_grad(), phase("update"):
            trains = []
            for layer in self.layers:
                if layer.record_outer is not None and layer.record_outer:
                    trains.append((torch.cat([a for a, _ in layer.record_outer]),
                                   torch.cat([b for _, b in layer.record_outer])))
                    layer.record_outer.clear()
                else:
                    trains.append(None)
            check = [p.grad for p in list(self.digital) + [layer.weight for layer in self.layers]
                     if p.grad is not None] + [t for tr in trains if tr is not None for t in tr]
            if not all_finite(check):
                raise PulseError("a gradient or an update vector is not finite (NaN or inf); nothing was written")
            for p in self.digital:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.lr)
            for layer, a, st, tr in zip(self.layers, self.fast, self.state, trains):
                self._update_fast(layer, a, st, tr)
                self._transfer(layer, a, st)
            self.steps += 1
        return loss.detach()

    def _update_fast(self, layer, a: Crossbar, st: dict, tr) -> None:
        """The SGD step onto A, chopped by the row signs ``st['chop']`` (all +1 for ttv2)."""
        chop = st["chop"]
        gen = self._gens.get(a.torch_device)
        if tr is not None:                                       # pulse trains of c*x and the errors
            x, d = tr
            x = x.to(a.dtype) * chop
            applied, _ = apply_pulse_trains(a, x, d.to(a.dtype), scale=self.lr / layer.dw_min, bl=self.bl,
                                            generator=gen, down_first=bool(self.steps % 2))
        elif layer.weight.grad is not None:
            n = stochastic_round(layer.weight.grad.t().to(a.dtype) * chop[:, None], -self.lr / layer.dw_min, gen)
            n = n.clamp_(-self.max_pulses, self.max_pulses)
            applied = a.apply_push_pull(n, check=False, max_count=self.max_pulses)
        else:
            return
        self._stats["fast_pulses"] += applied

    def _transfer(self, layer, a: Crossbar, st: dict) -> None:
        """Read the next ``transfer_rows`` rows of A, accumulate them in H, pulse C where
        |H| >= 1, then move the choppers of the rows read."""
        c = layer.crossbar
        k = min(self.transfer_rows, c.rows)
        rows = (torch.arange(k, device=c.torch_device) + st["ptr"]) % c.rows
        st["ptr"] = (st["ptr"] + k) % c.rows
        e = torch.zeros(k, c.rows, dtype=a.dtype, device=a.torch_device)
        e[torch.arange(k, device=a.torch_device), rows] = 1.0
        read = a.forward(e)                                    # [k, cols]: rows of A through the periphery
        self._stats["transfer_reads"] += k
        chop = st["chop"][rows][:, None]
        dw = 2.0 / c.device.card.pmax                          # one pulse pair of C, array units
        if self.on_the_fly:
            ok = st["has_ref"][rows][:, None]
            val = torch.where(ok, chop * (read - st["ref"][rows]), torch.zeros_like(read))
            st["acc"][rows] += read
            st["reads"][rows] += 1
        else:
            val = chop * read
        h = st["H"]
        h[rows] += val * (self.transfer_lr / dw)
        n = torch.trunc(h[rows]).clamp_(-self.max_transfer, self.max_transfer)
        h[rows] -= n
        c.counters.add("buffer_accesses", 2 * k * c.cols)     # H read and written
        # only the rows read can be written: their cells' flat indices, G+ then G-, ascending
        # (the same selection and order as a dense call, without scanning the whole array)
        order = torch.argsort(rows)
        r_sorted, n_sorted = rows[order], n[order].to(c.dtype)
        cells = (r_sorted[:, None] * c.cols + torch.arange(c.cols, device=c.torch_device)).reshape(-1)
        nz = n_sorted.reshape(-1) != 0
        cells, cnt = cells[nz], n_sorted.reshape(-1)[nz]
        idx = torch.cat([cells, cells + c.rows * c.cols])
        self._stats["transfer_pulses"] += c.apply_pulses_at(idx, torch.cat([cnt, -cnt]), check=False,
                                                            max_count=self.max_transfer)
        # choppers
        if self.chopper == "random":
            flip = torch.rand(k, generator=self._gens.get(a.torch_device), dtype=a.dtype,
                              device=a.torch_device) < self.chop_prob
            st["chop"][rows] = torch.where(flip, -st["chop"][rows], st["chop"][rows])
        elif self.chopper == "regular":
            flip = st["reads"][rows] >= self.period
            cnt = st["reads"][rows].clamp_min(1)[:, None]
            st["ref"][rows] = torch.where(flip[:, None], st["acc"][rows] / cnt, st["ref"][rows])
            st["has_ref"][rows] |= flip
            st["acc"][rows] = torch.where(flip[:, None], torch.zeros_like(read), st["acc"][rows])
            st["reads"][rows] = torch.where(flip, torch.zeros_like(st["reads"][rows]), st["reads"][rows])
            st["chop"][rows] = torch.where(flip, -st["chop"][rows], st["chop"][rows])

    # -- what it did, and checkpoints ---------------------------------------------------------
    def stats(self) -> dict:
        """Pulses on the fast arrays, transfer pulses on C, and rows of A read, since the start."""
        return {k: int(v) for k, v in self._stats.items()}

    def state_dict(self) -> dict:
        fast = []
        for a in self.fast:
            sd = a.state_dict()
            sd.pop("counters")                   # the layer's (shared) counters are saved with it
            fast.append(sd)
        return {"fast": fast, "generator": self._gens.state_dict(), "steps": self.steps, "stats": self.stats(),
                "state": [{k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
                          for st in self.state]}

    def load_state_dict(self, sd: dict) -> None:
        for a, f in zip(self.fast, sd["fast"]):
            keep = a.counters.as_dict()
            a.load_state_dict({**f, "counters": {}})
            a.counters.reset()
            a.counters.add_all(keep)
        for st, saved in zip(self.state, sd["state"]):
            for k, v in saved.items():
                st[k] = v.to(st[k].device, st[k].dtype) if isinstance(v, torch.Tensor) else v
        self._gens.load_state_dict(sd["generator"])
        self.steps = int(sd["steps"])
        self._stats = dict(sd["stats"])


@register
class TTv2(TikiTaka):
    """Tiki-Taka v2 (Gokmen 2021): fast array A, digital buffer H, transfers to C."""

    name = "ttv2"


@register
class ChoppedTTv2(TikiTaka):
    """Chopped TTv2 (Rasch et al. 2024): random choppers cancel A's offsets."""

    name = "c-ttv2"
    order = 9
    chopper = "random"


@register
class AGAD(TikiTaka):
    """AGAD (Rasch et al. 2024): regular choppers and an on-the-fly reference."""

    name = "agad"
    order = 10
    chopper = "regular"
    on_the_fly = True
    default_chop = 0.5
