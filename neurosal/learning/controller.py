r"""The hybrid rule's digital write controller (Kwon et al.): per array, an update buffer and an
open-loop estimate of every device's position on the card's nominal curve, and the planning of
pulses from them.

The controller knows only what a chip's digital side can know: the device card's nominal curve
and the pulses it sent. It keeps an estimate of every device's normalized conductance
(starting from the weights the chip was initialized to, or from one counted verify read of a
chip written before), plans in closed form the most pulses whose nominal change fits the
buffered update (:meth:`~neurosal.devices.Device.nominal_pulses`), on whichever device of the
pair leaves the smaller remainder, and advances its estimate by what the curve says they did.

May import: :mod:`neurosal.kernels` only (it drives the crossbars it is given).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..kernels import fused

__all__ = ["HybridController", "write_all", "plan", "thresholds"]


def thresholds(device, u_p: torch.Tensor, u_m: torch.Tensor):
    """The smallest nominal one-pulse step to raise and to lower each weight from the estimates
    (a tiny positive number where neither device of the pair can move that way), elementwise."""
    # raising w: G+ up (travel u+) or G- down (travel 1 - u-); lowering: G+ down or G- up
    steps = (device.nominal_step(u_p, True), device.nominal_step(1 - u_m, False),
             device.nominal_step(1 - u_p, False), device.nominal_step(u_m, True))
    tiny = torch.finfo(u_p.dtype).tiny
    out = []
    for a, b in (steps[:2], steps[2:]):
        m = torch.minimum(torch.where(a > 0, a, math.inf), torch.where(b > 0, b, math.inf))
        out.append(torch.where(torch.isinf(m), tiny, m))
    return out


def plan(device, max_pulses: int, b: torch.Tensor, u_p: torch.Tensor, u_m: torch.Tensor):
    """Plan the pulses for buffers ``b`` from estimates ``u_p, u_m`` (any shape, elementwise).

    Returns ``(use_plus, goes_up, n, moved, saturated)``: which device of each pair, whether it
    is potentiated, how many pulses, the nominal travel they make, and whether the pair is at
    the end of its range for this request."""
    raise_w = b > 0
    mag = b.abs()
    # the two candidates, as travel from the bound each leaves: raising w moves G+ up (from
    # Gmin: travel u+) or G- down (from Gmax: travel 1 - u-); lowering the reverse
    v_p = torch.where(raise_w, u_p, 1 - u_p)
    v_m = torch.where(raise_w, 1 - u_m, u_m)
    n_p, new_p = device.nominal_pulses(v_p, mag, raise_w, max_pulses)
    n_m, new_m = device.nominal_pulses(v_m, mag, ~raise_w, max_pulses)
    rem_p, rem_m = mag - (new_p - v_p), mag - (new_m - v_m)
    # best fit: the device whose pulses leave the smaller remainder; on a tie the one with
    # more room (G+ when raising with u+ + u- <= 1, lowering with u+ + u- >= 1)
    s = u_p + u_m
    more_room = torch.where(raise_w, s <= 1, s >= 1)
    use_plus = torch.where((rem_p - rem_m).abs() <= 1e-7, more_room, rem_p < rem_m)
    goes_up = raise_w == use_plus                       # the chosen device is potentiated
    n = torch.where(use_plus, n_p, n_m)
    moved = torch.where(use_plus, new_p - v_p, new_m - v_m)      # >= 0, nominal travel of n pulses
    # the end of the range: the request reaches past both devices' bounds and neither can
    # take one more pulse toward its bound
    saturated = (n_p == 0) & (n_m == 0) & (mag > 0) & (mag >= 1 - v_p) & (mag >= 1 - v_m)
    return use_plus, goes_up, n, moved, saturated


class HybridController:
    r"""The digital write controller of one array under the :class:`Hybrid` rule.

    State (digital, all on the controller; counted as buffer traffic): the update buffer
    ``buffer`` ``[rows, cols]`` (weight units), the estimates ``estimate`` ``[2, rows, cols]``
    of both devices' normalized conductances on the card's nominal curve, and, derived from
    them, the write thresholds: the smallest nominal one-pulse step available to raise
    (``thresholds[0]``) and to lower (``-thresholds[1]``, kept negated) each weight, a tiny
    number where the pair cannot move that way at all. A step plans only the cells whose
    buffer reaches a threshold: the rest cannot be written and cost one comparison.
    """

    def __init__(self, xb, *, max_pulses: int = 16, estimate: Optional[torch.Tensor] = None):
        self.xb, self.max_pulses = xb, int(max_pulses)
        self.buffer = torch.zeros(xb.rows, xb.cols, dtype=xb.dtype, device=xb.torch_device)
        if estimate is None:
            if xb.pulsed:                      # written before: the controller must read it (counted)
                estimate = self.read_estimate(xb)
            else:                              # what the chip was initialized to, as requested
                w0 = xb.initial_weights
                estimate = torch.stack([(1 + w0) / 2, (1 - w0) / 2])
        self.estimate = estimate.to(xb.dtype).clone()
        self._retarget()

    @staticmethod
    def read_estimate(xb) -> torch.Tensor:
        """Estimates from a verify read of every pair (counted), through the nominal bounds."""
        card = xb.device.card
        return ((xb.verify_read() - card.g_min) / card.g_range).clamp(0, 1).to(xb.dtype)

    def follow(self) -> None:
        """Keep the controller's state on the array's device and dtype (after ``net.to(...)``)."""
        xb = self.xb
        if self.buffer.device != xb.torch_device or self.buffer.dtype != xb.dtype:
            self.buffer = self.buffer.to(xb.torch_device, xb.dtype)
            self.estimate = self.estimate.to(xb.torch_device, xb.dtype)
            self.thresholds = self.thresholds.to(xb.torch_device, xb.dtype)

    def _retarget(self) -> None:
        up, down = thresholds(self.xb.device, self.estimate[0], self.estimate[1])
        self.thresholds = torch.stack([up, -down])

    def reanchor(self) -> None:
        """Readback: replace the estimates by what a (counted) read of the array shows."""
        self.estimate = self.read_estimate(self.xb)
        self._retarget()

    def plan(self, b: torch.Tensor, u_p: torch.Tensor, u_m: torch.Tensor):
        """:func:`plan` with this array's device and pulse limit."""
        return plan(self.xb.device, self.max_pulses, b, u_p, u_m)

    #: plan every cell instead of selecting the candidates by index (``None``: on an accelerator,
    #: where the selection would make the host wait for the data; sparse on a CPU). The plan
    #: of a cell below its thresholds is no pulse and no change, so both give the same writes.
    dense: Optional[bool] = None

    def _is_dense(self) -> bool:
        return self.dense if self.dense is not None else self.xb.torch_device.type != "cpu"

    def candidates(self):
        """Flat indices of the cells whose buffer reaches a write threshold (every cell in dense
        mode), and their buffer and estimates (counted as buffer traffic)."""
        buf, est = self.buffer, self.estimate
        hit = ((buf >= self.thresholds[0]) | (buf <= self.thresholds[1])).view(-1)
        # every cell: buffer read-modify-write and its two thresholds compared; a planned cell:
        # both estimates read, buffer, one estimate and both thresholds written
        self.xb.counters.add("buffer_accesses", 4 * buf.numel())
        if self._is_dense():
            self.xb.counters.add("buffer_accesses", hit.sum(), 6)
            idx = torch.arange(buf.numel(), device=buf.device)
            return idx, buf.view(-1), est[0].view(-1), est[1].view(-1), hit
        idx = hit.nonzero().squeeze(1)
        self.xb.counters.add("buffer_accesses", 6 * idx.numel())
        return idx, buf.view(-1)[idx], est[0].view(-1)[idx], est[1].view(-1)[idx], None

    def commit(self, idx, b, u_p, u_m, planned, thresholds, cand=None) -> int:
        """Keep the remainders and advanced estimates of the cells ``idx`` and send their pulses
        (sparse); ``planned`` is :func:`plan`'s result for them; ``cand``: which of them reach a
        threshold (dense mode: the others keep their buffer exactly). Returns the pulses sent."""
        xb, rc = self.xb, self.buffer.numel()
        use_plus, goes_up, n, moved, saturated = planned
        b_new = (b - torch.copysign(moved, b)).masked_fill_(saturated, 0.0)
        b = b_new if cand is None else torch.where(cand, b_new, b)
        hit = n > 0
        dv = torch.where(goes_up, moved, -moved)           # change of the chosen device's u
        self.buffer.view(-1)[idx] = b
        self.estimate[0].view(-1)[idx] = u_p + dv * (hit & use_plus)
        self.estimate[1].view(-1)[idx] = u_m + dv * (hit & ~use_plus)
        self.thresholds[0].view(-1)[idx], self.thresholds[1].view(-1)[idx] = thresholds[0], -thresholds[1]
        xb.counters.add("clipped_cells", saturated.sum())
        # every candidate goes to the array (a cell without a pulse is left alone there): no
        # data-dependent selection, so nothing waits for an accelerator
        signed = torch.where(goes_up, n, -n) * hit
        # G+ devices first, then G-: ascending flat indices into [2, rows, cols]
        minus = (~use_plus).to(idx.dtype)
        order = torch.sort(minus, stable=True).indices
        flat = (idx + rc * minus)[order]
        return xb.apply_pulses_at(flat, signed[order], check=False, max_count=self.max_pulses)

    def write(self) -> int:
        """Turn the buffer into pulses: plan the cells whose buffer reaches a threshold, apply
        their pulses (sparse), keep the remainders. Returns the pulses sent."""
        return write_all([self])


def write_all(controllers) -> int:
    """Write several arrays' buffers: the candidates of all arrays whose device shares a card
    (and pulse limit) are planned together, one set of operations for all of them (the same
    plan as one array at a time, elementwise), then each array keeps its part and gets its
    pulses. Returns the pulses sent."""
    groups: dict = {}
    for c in controllers:
        groups.setdefault((c.xb.device.card, c.max_pulses), []).append(c)
    sent = 0
    for group in groups.values():
        parts = [c.candidates() for c in group]
        sizes = [int(p[0].numel()) for p in parts]
        if not any(sizes):
            continue
        dev, mp = group[0].xb.device, group[0].max_pulses
        b, u_p, u_m = (torch.cat([p[k] for p in parts]) for k in (1, 2, 3))
        # closed-form families: the plan and the new thresholds in one fused pass
        out = (_plan_fused if dev.dense_capable() else _plan_and_thresholds)(dev, mp, b, u_p, u_m)
        planned, thr = out[:5], out[5:]
        splits = [torch.split(t, sizes) for t in (b, u_p, u_m, *planned, *thr)]
        for k, (c, p) in enumerate(zip(group, parts)):
            if sizes[k]:
                sb, sp, sm, *rest = (t[k] for t in splits)
                sent += c.commit(p[0], sb, sp, sm, tuple(rest[:5]), tuple(rest[5:]), cand=p[4])
    return sent


def _plan_and_thresholds(device, max_pulses: int, b, u_p, u_m) -> tuple:
    """:func:`plan` and the thresholds of the estimates it leaves: ``plan(...) + (up, down)``."""
    planned = plan(device, max_pulses, b, u_p, u_m)
    use_plus, goes_up, n, moved, _ = planned
    dv = torch.where(goes_up, moved, -moved) * (n > 0)
    return planned + tuple(thresholds(device, u_p + dv * use_plus, u_m + dv * ~use_plus))


_plan_fused = fused(_plan_and_thresholds)
