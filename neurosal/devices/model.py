r"""The device model: an array of analog synapse devices, their pulse response and nonidealities.

A device holds a conductance :math:`G \in [G_\min, G_\max]` (siemens) per cell. It changes only
through programming pulses; how much one pulse changes it depends on the present conductance
and on the card's response family (:mod:`neurosal.devices.families`: ``linear``,
``soft-bounds``, ``exponential``, ``power``, ``table``), written on the normalized conductance
:math:`u = (G - G_\min)/(G_\max - G_\min)` and a pulse axis of :math:`P_\max = \text{levels} - 1`
pulses for a full swing.

Nonidealities (any family), drawn from seeded generators, vectorized over the whole array:

* device-to-device variation and stuck-at faults, drawn once per cell
  (:func:`~neurosal.devices.state.fabricate`);
* cycle-to-cycle noise: after :math:`n` pulses
  :math:`G \mathrel{+}= \sigma_{c2c}(G_\max-G_\min)\sqrt{|n|}\,\xi`, drawn only for the cells
  that were pulsed;
* read noise: every read sees :math:`G + \sigma_{read}(G_\max-G_\min)\xi`;
* finite levels: ``levels`` pulse states per swing (the pulse axis is discrete);
* drift/retention: :math:`G(t) = G_{prog}\,((t-t_{prog})/t_0)^{-\nu}` for
  :math:`t - t_{prog} > t_0`, :math:`\nu` per cell;
* stuck cells ignore their pulses.

May import: :mod:`neurosal.accel`, :mod:`neurosal.cards` and the rest of :mod:`neurosal.devices`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..accel import randn
from ..kernels import fused, new_key, normal_at
from .card import DeviceCard, Drift, Faults, Noise, Variation, load_device
from .family import GeometricFamily, family_class
from .state import DeviceState, fabricate, take

__all__ = ["PulseError", "check_pulses", "Device", "MAX_CURVE_PULSES"]


class PulseError(ValueError):
    """Pulse counts that no chip can apply (NaN or infinite): nothing was written."""


def check_pulses(n: torch.Tensor, what: str) -> None:
    """Raise :class:`PulseError` naming ``what`` unless every pulse count in ``n`` is finite.
    Called before any state changes, so that a bad step leaves the chip exactly as it was."""
    bad = ~torch.isfinite(n)
    if bool(bad.any()):
        k = int(bad.sum())
        raise PulseError(f"{what}: {k} of {n.numel()} pulse counts are not finite (NaN or inf; a NaN or infinite "
                         "gradient, learning rate or card value upstream); nothing was written")


MAX_CURVE_PULSES = 100_000


class Device:
    """A device model: the card, its response family, and vectorized pulses, reads and
    nonidealities.

    Stateless apart from the card: the per-cell state lives in a :class:`DeviceState`
    that :meth:`init_state` creates; :meth:`pulse` updates it in place.
    """

    def __init__(self, card: DeviceCard | str | Path):
        self.card = load_device(card)
        #: the card's response family (the curve and what a controller can plan from it)
        self.family = family_class(self.card.model)(self.card)

    def __repr__(self) -> str:
        return f"Device({self.card.name!r}, model={self.card.model!r}, levels={self.card.levels})"

    # -- state -------------------------------------------------------------------
    def init_state(self, shape, *, generator: torch.Generator | None = None, u0: float | torch.Tensor = 0.0,
                   dtype=torch.float32, device=None) -> DeviceState:
        """A fresh array of cells at normalized conductance ``u0`` with its D2D draws.

        Draw order is fixed (bounds, step, nonlinearity, drift, faults), so the same
        generator seed gives the same chip.
        """
        return fabricate(self.card, self.family, shape, generator=generator, u0=u0, dtype=dtype, device=device)

    # -- what an open-loop controller plans from the nominal curve ------------------------
    def nominal_step(self, v: torch.Tensor, up: bool) -> torch.Tensor:
        """Nominal travel of one pulse from travel ``v`` (0 at the bound), potentiating if ``up``."""
        return self.family.nominal_step(v, up)

    def nominal_pulses(self, v: torch.Tensor, dv: torch.Tensor, up: torch.Tensor, max_pulses: int):
        r"""What an open-loop controller plans from the card's *nominal* curve (no variation,
        no noise). ``v`` is a device's travel from the bound it moves away from (``u`` to
        potentiate, ``1 - u`` to depress; ``up``: bool tensor, the direction per element).
        Returns ``(n, v_new)``: the largest pulse count :math:`n \le` ``max_pulses`` whose
        nominal travel does not exceed ``dv >= 0`` (nor the bound), and the travel it then
        expects. Elementwise and in closed form: for the exponential and soft-bounds curves one
        pulse moves a fixed fraction :math:`1 - r` of the distance to the asymptote :math:`b`, so
        :math:`n = \lfloor \ln(1 - \Delta/(b - v)) / \ln r \rfloor` and
        :math:`v_n = b - (b - v) r^n`; linear: :math:`n = \lfloor \Delta P_{max} \rfloor`; table:
        through the positions on the curve; power: stepped pulse by pulse.
        """
        return self.family.nominal_pulses(v, dv, up, max_pulses)

    # -- public API ----------------------------------------------------------------
    def respond(self, g, n, *, g_min, g_max, pmax, p_up, p_down):
        """Nominal response (no noise): conductance after ``n`` signed pulses, elementwise."""
        return self.family.respond(g, n, g_min=g_min, g_max=g_max, pmax=pmax, p_up=p_up, p_down=p_down)

    def pulse(self, st: DeviceState, n: torch.Tensor, *, generator: torch.Generator | None = None,
              time: float | None = None, return_cells: bool = False):
        """Apply signed pulse counts ``n`` (same shape as the array) in place.

        Positive counts potentiate, negative depress. Only the pulsed cells are touched
        (the work and the noise draws scale with the number of pulsed cells). Stuck cells
        ignore their pulses. Returns the number of pulses applied (and, with
        ``return_cells``, the number of cells pulsed).
        """
        n = torch.as_tensor(n, device=st.g.device)
        if n.shape != st.g.shape:
            raise ValueError(f"pulse counts have shape {tuple(n.shape)}, the array is {tuple(st.g.shape)}")
        flat_n = n.reshape(-1)
        idx = (flat_n != 0).nonzero().squeeze(1)
        return self.pulse_at(st, idx, flat_n[idx], generator=generator, time=time, return_cells=return_cells)

    def pulse_at(self, st: DeviceState, idx: torch.Tensor, n: torch.Tensor, *,
                 generator: torch.Generator | None = None, time: float | None = None, return_cells: bool = False,
                 what: str = "device array", check: bool = True, max_count: Optional[int] = None):
        """Apply signed pulse counts ``n`` to the cells at flat indices ``idx`` (into ``st.g``,
        ascending), in place: the sparse form of :meth:`pulse`, with the same result and noise
        stream. Counts must be finite: :class:`PulseError` (naming ``what``) before anything
        changes (``check=False``: the caller has checked). Returns the pulses applied (and, with
        ``return_cells``, the cells pulsed) as 0-d int64 tensors on the array's device. Nothing
        here waits for an accelerator, except the power law's pulse-by-pulse loop when
        ``max_count`` (a bound on ``|n|``) is not given: it then reads the largest count back."""
        if idx.shape != n.shape or idx.dim() != 1:
            raise ValueError("pulse_at: idx and n must be 1-D tensors of equal length")
        nn = n.to(st.g.dtype)
        if check:
            check_pulses(nn, what)
        if idx.numel() == 0:
            z = torch.zeros((), dtype=torch.int64, device=st.g.device)
            return (z, z) if return_cells else z
        if self.dense_capable():
            # closed-form families: gathers, response and noise in one fused pass over the cells
            c2c = self.card.noise.c2c
            key = new_key(generator, st.g.device) if c2c > 0 else None
            g_new, keep, total, pulsed = _sparse_pulse(self.family, st.g, idx, nn, *_per_cell(st), st.stuck, key, c2c)
            st.g.view(-1).index_copy_(0, idx, g_new)
            if st.t_prog is not None and time is not None:
                t = st.t_prog.view(-1)
                t.index_copy_(0, idx, torch.where(keep, torch.full_like(g_new, time).to(t.dtype),
                                                  t.index_select(0, idx)))
            return (total, pulsed) if return_cells else total
        # stuck cells and zero counts take no pulse: their count becomes 0 and their state is kept
        keep = nn != 0
        if st.stuck is not None:
            keep &= ~st.stuck.reshape(-1)[idx]
        nn = torch.where(keep, nn, torch.zeros_like(nn))
        g_flat = st.g.view(-1)
        up = nn > 0
        cnt = nn.abs()
        gmin = take(st.g_min, idx)
        gmin = gmin.to(nn.dtype) if isinstance(gmin, torch.Tensor) else gmin
        gmax = take(st.g_max, idx)
        rng = (gmax.to(nn.dtype) if isinstance(gmax, torch.Tensor) else gmax) - gmin
        u = ((g_flat.index_select(0, idx) - gmin) / rng).clamp_(0, 1)
        pmax = take(st.pmax, idx)
        # the family moves both directions at once, each cell with its own parameters (a stepwise
        # family loops to max_count on an accelerator instead of reading the counts back)
        k = None if max_count is None or n.device.type == "cpu" else int(max_count)
        u_new = self.family.move_cells(u, cnt, up, pmax, take(st.p_up, idx), take(st.p_down, idx), k_max=k)
        self._set_cells(st, idx, u_new, cnt, gmin, rng, generator, time, keep)
        total = cnt.sum().round().to(torch.int64)
        return (total, keep.sum()) if return_cells else total

    def dense_capable(self) -> bool:
        """Whether :meth:`pulse_dense` can write this family (closed-form multi-pulse response)."""
        return isinstance(self.family, GeometricFamily)

    def pulse_dense(self, st: DeviceState, n: torch.Tensor, *, generator: torch.Generator | None = None,
                    time: float | None = None, push_pull: bool = False, what: str = "device array",
                    check: bool = True):
        """Every cell at once: signed counts ``n`` shaped like ``st.g`` (``push_pull``: ``[rows, cols]``
        for an array of shape ``[2, rows, cols]``, ``+n`` on half 0 and ``-n`` on half 1), in one
        fused pass over the array (no selection of the pulsed cells). The same result and noise
        as :meth:`pulse_at` on the nonzero counts (each cell's noise is the counter-based number of
        its flat index), up to float rounding. Returns ``(pulses applied, cells pulsed)``."""
        if not self.dense_capable():
            raise ValueError(f"pulse_dense: the {self.card.model!r} family has no closed-form multi-pulse response")
        nn = n.to(st.g.dtype)
        if check:
            check_pulses(nn, what)
        c2c = self.card.noise.c2c
        key = new_key(generator, st.g.device) if c2c > 0 else None
        return _dense_pulse(self.family, st.g, nn, *_per_cell(st), st.stuck,
                            st.t_prog if time is not None else None, key, c2c,
                            torch.tensor(0.0 if time is None else time, dtype=torch.float64, device=st.g.device),
                            push_pull)

    def _set_cells(self, st: DeviceState, idx, u_new, cnt, gmin, rng, generator, time, keep=None) -> None:
        """Write the cells ``idx``: the nominal response ``u_new`` of ``cnt >= 0`` pulses plus
        cycle-to-cycle noise (sigma sqrt(cnt), drawn for these cells), stamped with ``time``;
        cells where ``keep`` is False (no pulse, or stuck) keep their state."""
        c2c = self.card.noise.c2c
        g_flat = st.g.view(-1)
        if c2c > 0:
            # the cell's own counter-based number (its flat index): the same draw whichever cells
            # are pulsed with it, sparse or dense
            g_new = _c2c_response(u_new, cnt, idx, new_key(generator, u_new.device), c2c, gmin, rng)
        else:
            g_new = gmin + u_new * rng
        if keep is not None:
            g_new = torch.where(keep, g_new, g_flat.index_select(0, idx))
        g_flat.index_copy_(0, idx, g_new.to(g_flat.dtype))
        if st.t_prog is not None and time is not None:
            t = st.t_prog.view(-1)
            if keep is not None:
                t.index_copy_(0, idx, torch.where(keep, torch.full_like(g_new, time).to(t.dtype), t.index_select(0, idx)))
            else:
                t.index_fill_(0, idx, time)

    def read(self, st: DeviceState, *, generator: torch.Generator | None = None, time: float | None = None,
             noise: bool = True) -> torch.Tensor:
        """Conductances as read now: drift applied at ``time`` and read noise (if ``noise``)."""
        g = self.drifted(st, time) if time is not None else st.g
        sr = self.card.noise.read
        if noise and sr > 0:
            z = randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
            g = g + sr * (torch.as_tensor(st.g_max, device=g.device) - torch.as_tensor(st.g_min, device=g.device)) * z
        return g

    def drifted(self, st: DeviceState, time: float) -> torch.Tensor:
        r"""Drifted conductance :math:`G((t - t_{prog})/t_0)^{-\nu}` (for elapsed time > t0)."""
        if st.t_prog is None or self.card.drift.nu == 0:
            return st.g
        elapsed = (time - st.t_prog).clamp_min(self.card.drift.t0)
        factor = (elapsed / self.card.drift.t0).pow(-torch.as_tensor(st.nu, dtype=torch.float64, device=elapsed.device))
        g = st.g * factor.to(st.g.dtype)
        if st.stuck is not None:
            g = torch.where(st.stuck, st.g, g)
        return g

    def step_size(self, g, sign: int, *, g_min=None, g_max=None, pmax=None, p_up=None, p_down=None):
        """Nominal conductance change of one pulse at conductance ``g`` (S; signed)."""
        return self.nominal_change(g, torch.full_like(g, float(sign)), g_min=g_min, g_max=g_max, pmax=pmax,
                                   p_up=p_up, p_down=p_down)

    def nominal_change(self, g, n, *, g_min=None, g_max=None, pmax=None, p_up=None, p_down=None):
        """Nominal conductance change (S) of ``n`` signed pulses from conductance ``g``, read off
        the card's nominal curve (no noise, no device-to-device knowledge), elementwise."""
        c = self.card
        su, sd = self.family.nominal_shape()
        kw = dict(g_min=c.g_min if g_min is None else g_min, g_max=c.g_max if g_max is None else g_max,
                  pmax=c.pmax if pmax is None else pmax, p_up=su if p_up is None else p_up,
                  p_down=sd if p_down is None else p_down)
        return self.respond(g, n, **kw) - g

    def curve(self, pulses: int | None = None, *, dtype=torch.float64) -> tuple[np.ndarray, np.ndarray]:
        """Nominal device (no noise, no variation): potentiation from Gmin by ``pulses``
        pulses, then depression by ``pulses`` pulses. Returns two arrays of ``pulses + 1``
        conductances (S), starting values included."""
        c = self.card
        n = c.pmax if pulses is None else int(pulses)
        if not 1 <= n <= MAX_CURVE_PULSES:
            raise ValueError(f"pulses {n}: not allowed; allowed: 1 to {MAX_CURVE_PULSES:,d} (one pulse at a time "
                             "through the device model)")
        nominal = dataclasses.replace(c, noise=Noise(), variation=Variation(), faults=Faults(), drift=Drift())
        dev = Device(nominal)
        st = dev.init_state((1,), u0=0.0, dtype=dtype)
        up = [st.g.clone()]
        for _ in range(n):
            dev.pulse(st, torch.ones(1, device=st.g.device))
            up.append(st.g.clone())
        down = [st.g.clone()]
        for _ in range(n):
            dev.pulse(st, -torch.ones(1, device=st.g.device))
            down.append(st.g.clone())
        return torch.cat(up).numpy(), torch.cat(down).numpy()

    def symmetry_point(self, *, cells: int = 4096, pulses: Optional[int] = None, seed: int = 0) -> dict:
        r"""Where a device settles under random up/down pulses: its *symmetry point*.

        * ``u``, ``g``: the nominal device's :math:`u^*` (and :math:`G^*`, S) where one up step
          equals one down step, :math:`\Delta u_\uparrow(u^*) = |\Delta u_\downarrow(u^*)|` (the
          fixed point of the mean drift under random +-1 pulses: Gokmen & Haensch, Front.
          Neurosci. 14, 103 (2020)); found by bisection on the card's nominal curve. ``None``
          where the steps are equal everywhere (a linear, symmetric device has no symmetry point:
          it random-walks between its hard bounds).
        * ``simulated``: a fabricated array of ``cells`` differential pairs (this card's
          variation, faults and noise, seeded) started at mid-range and given ``pulses``
          (default :math:`10 P_\max`, at most 4000) random push-pull +-1 pulses each (+1: G+ up and G- down):
          the mean and spread of each device's :math:`u`, and of the pair weight
          :math:`w = (G^+ - G^-)/G_{ref}`. Their pair weights are where a Tiki-Taka fast array
          drifts when its updates carry no signal: 0 for identical devices, a per-pair offset
          with device-to-device variation.
        """
        c = self.card
        k = min(10 * c.pmax, 4000) if pulses is None else int(pulses)
        if cells < 1 or k < 1:
            raise ValueError(f"symmetry_point needs cells >= 1 and pulses >= 1, got {cells} and {k}")
        u = torch.linspace(0.0, 1.0, 4001, dtype=torch.float64, device="cpu")
        su, sd = self.family.nominal_shape()
        kw = dict(g_min=0.0, g_max=1.0, pmax=c.pmax, p_up=su, p_down=sd)
        f = lambda x: (self.family.respond(x, torch.ones_like(x), **kw) - x) - (  # noqa: E731
            x - self.family.respond(x, -torch.ones_like(x), **kw))
        fu = f(u)
        u_star = None
        inner = (u > 2.0 / c.pmax) & (u < 1 - 2.0 / c.pmax)      # away from the clip at the bounds
        if not bool(inner.any()):
            inner = torch.ones_like(u, dtype=torch.bool)
        if float(fu[inner].abs().max()) > 1e-6 / c.pmax:
            s = torch.sign(fu)
            cross = ((s[:-1] > 0) & (s[1:] <= 0)).nonzero()
            if cross.numel():
                i = int(cross[0, 0])
                lo, hi = u[i:i + 1].clone(), u[i + 1:i + 2].clone()
                for _ in range(60):
                    mid = (lo + hi) / 2
                    pos = f(mid) > 0
                    lo, hi = torch.where(pos, mid, lo), torch.where(pos, hi, mid)
                u_star = float((lo + hi) / 2)
            elif bool((fu > 0).all()):
                u_star = 1.0       # up steps always larger: the device climbs to its top
            elif bool((fu < 0).all()):
                u_star = 0.0
        gen = torch.Generator(device="cpu").manual_seed(seed)
        st = self.init_state((2, cells), generator=gen, u0=0.5, dtype=torch.float64, device="cpu")
        idx = torch.arange(2 * cells, device="cpu")
        for _ in range(k):
            s = torch.randint(0, 2, (cells,), generator=gen, device="cpu").to(torch.float64) * 2 - 1
            self.pulse_at(st, idx, torch.cat([s, -s]), generator=gen, check=False)
        gmin = torch.as_tensor(st.g_min, dtype=torch.float64)
        gmax = torch.as_tensor(st.g_max, dtype=torch.float64)
        uu = ((st.g - gmin) / (gmax - gmin)).clamp(0, 1)
        w = (st.g[0] - st.g[1]) / c.g_range
        return {"u": u_star, "g": None if u_star is None else c.g_min + u_star * c.g_range,
                "simulated": {"cells": int(cells), "pulses": int(k), "seed": int(seed),
                              "u_mean": float(uu.mean()), "u_std": float(uu.std()),
                              "w_mean": float(w.mean()), "w_std": float(w.std())}}

    def describe(self) -> dict:
        """A JSON-ready summary of the card with derived figures."""
        c = self.card
        d = c.to_dict()
        d["pmax"] = c.pmax
        d["on_off"] = c.on_off
        self.family.describe(d)
        return d


def _with_c2c(u_new, cnt, idx, key, c2c: float, gmin, rng):
    """Conductance after the nominal response ``u_new`` of ``cnt`` pulses plus cycle-to-cycle
    noise :math:`\\sigma_{c2c}\\sqrt{cnt}\\,\\xi` (the counter-based normal of each cell's flat index
    ``idx``; none where ``key`` is None), clamped to the cell's range."""
    if key is None:
        return gmin + u_new * rng
    return gmin + (u_new + c2c * cnt.sqrt() * normal_at(key, idx, u_new.dtype)).clamp(0, 1) * rng


_c2c_response = fused(_with_c2c)


def _pulses(n, stuck):
    """``(keep, up, cnt)`` of signed pulse counts ``n``: the cells that change (pulsed and not
    stuck), the direction and the number of pulses of each (0 where a cell keeps its state)."""
    keep = n != 0
    if stuck is not None:
        keep = keep & ~stuck
    nn = torch.where(keep, n, torch.zeros_like(n))
    return keep, nn > 0, nn.abs()


def _write(family, g0, cnt, up, gmin, rng, pmax, p_up, p_down, key, idx, c2c: float):
    """The elementwise write of cells at conductance ``g0``: the family's closed-form response
    to ``cnt`` pulses (``up`` or down), cycle-to-cycle noise, clamped. Shared by the dense and
    the sparse write, so that they are the same write."""
    u = ((g0 - gmin) / rng).clamp(0, 1)
    u_new = family.move_cells(u, cnt, up, pmax, p_up, p_down)
    return _with_c2c(u_new, cnt, idx, key, c2c, gmin, rng)


class _Fixed:
    """The parameters that do not vary from cell to cell (Python numbers), as attributes: a
    compiled kernel takes them as constants of its graph (a number passed as an argument would be
    traced as a symbol, and the families branch on them)."""

    __slots__ = ("gmin", "gmax", "pmax", "p_up", "p_down")

    def __init__(self, *vals):
        for k, v in zip(self.__slots__, vals):
            setattr(self, k, v)


def _per_cell(st: DeviceState) -> tuple:
    """``(fixed, gmin, gmax, pmax, p_up, p_down)`` for the fused kernels: each per-cell tensor, or
    ``None`` where the value is one number (then in ``fixed``)."""
    vals = (st.g_min, st.g_max, st.pmax, st.p_up, st.p_down)
    fixed = _Fixed(*(None if isinstance(v, torch.Tensor) else v for v in vals))
    return (fixed,) + tuple(v if isinstance(v, torch.Tensor) else None for v in vals)


def _resolve(fixed: _Fixed, gmin, gmax, pmax, p_up, p_down) -> tuple:
    return tuple(getattr(fixed, k) if v is None else v
                 for k, v in zip(_Fixed.__slots__, (gmin, gmax, pmax, p_up, p_down)))


@fused
def _dense_pulse(family, g, n, fixed, gmin, gmax, pmax, p_up, p_down, stuck, t_prog, key, c2c: float,
                 time: torch.Tensor, push_pull: bool):
    """:meth:`Device.pulse_dense`'s pass over every cell (in place on ``g`` and ``t_prog``)."""
    gmin, gmax, pmax, p_up, p_down = _resolve(fixed, gmin, gmax, pmax, p_up, p_down)
    if push_pull:
        n = torch.stack([n, -n])
    keep, up, cnt = _pulses(n, stuck)
    idx = None if key is None else torch.arange(g.numel(), dtype=torch.int64, device=g.device).view(g.shape)
    g_new = _write(family, g, cnt, up, gmin, gmax - gmin, pmax, p_up, p_down, key, idx, c2c)
    g.copy_(torch.where(keep, g_new, g))
    if t_prog is not None:
        t_prog.copy_(torch.where(keep, time.to(t_prog.dtype), t_prog))
    return cnt.sum().round().to(torch.int64), keep.sum()


def _at(p, idx):
    return p.reshape(-1)[idx] if isinstance(p, torch.Tensor) else p


@fused
def _sparse_pulse(family, g, idx, n, fixed, gmin, gmax, pmax, p_up, p_down, stuck, key, c2c: float):
    """:meth:`Device.pulse_at`'s cells for a closed-form family: the new conductances of the cells
    ``idx`` (the old one where a cell keeps its state: no pulse, or stuck), which cells were
    written, the pulses applied and the cells pulsed. The same elementwise math as
    :func:`_dense_pulse`, on the gathered cells."""
    gmin, gmax, pmax, p_up, p_down = _resolve(fixed, gmin, gmax, pmax, p_up, p_down)
    keep, up, cnt = _pulses(n, None if stuck is None else _at(stuck, idx))
    g0 = _at(g, idx)
    lo = _at(gmin, idx)
    g_new = _write(family, g0, cnt, up, lo, _at(gmax, idx) - lo, _at(pmax, idx), _at(p_up, idx), _at(p_down, idx),
                   key, idx, c2c)
    return torch.where(keep, g_new, g0), keep, cnt.sum().round().to(torch.int64), keep.sum()
