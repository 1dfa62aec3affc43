r"""In-array stochastic pulse-train update (Gokmen & Vlasov, Front. Neurosci. 10, 333 (2016)).

The outer product of an update never exists digitally. For each sample :math:`n` the row
periphery turns every input :math:`x_i` into a train of ``BL`` slots, each carrying a pulse with
probability :math:`p_i = C_x |x_i|`, and the column periphery turns every error :math:`\delta_j`
into one with :math:`q_j = C_\delta |\delta_j|`. A device changes by one pulse in each slot where
its row and its column pulse together (a *coincidence*), in the direction
:math:`-\mathrm{sign}(x_i\delta_j)` of the SGD step. Rows and columns are independent, so the
expected coincidences are

.. math:: E[n_{ij}] = BL\,p_i\,q_j = BL\,C_x C_\delta\,|x_i \delta_j| = \eta |x_i\delta_j| / \Delta w_{min}

when :math:`C_x C_\delta = \eta / (BL\,\Delta w_{min})`: the pulse count of the outer product in
expectation. *Update management* (Gokmen & Vlasov; aihwkit's ``update_management``) balances
the two trains per sample, :math:`C_x = \sqrt{\eta/(BL\,\Delta w_{min})}\sqrt{\delta_{max}/x_{max}}`,
:math:`C_\delta = \sqrt{\eta/(BL\,\Delta w_{min})}\sqrt{x_{max}/\delta_{max}}`, so that neither
probability saturates before the other; a probability above 1 is clipped to 1 (that sample's
update is then smaller than asked; the clipped trains are counted).

The whole array is updated at once: a sample takes ``2 BL`` pulse slots (a potentiation and a
depression phase), whatever its size. The periphery draws ``BL`` bits per row and per column
and sample (``pulse_bits``), which the cost model prices.

May import: nothing of neurosal.
"""

from __future__ import annotations

import math

import torch

__all__ = ["coincidences"]


def coincidences(x: torch.Tensor, d: torch.Tensor, *, scale: float, bl: int, generator: torch.Generator):
    r"""Coincidence counts of the stochastic pulse trains of ``x`` ``[N, rows]`` (inputs, one row
    per sample) and ``d`` ``[N, cols]`` (errors :math:`\partial L/\partial y`), for the SGD step
    :math:`\Delta w = -\text{scale}\,\Delta w_{min}\sum_n x_n^T d_n` in pulses
    (``scale`` :math:`= \eta/\Delta w_{min}`).

    Returns ``(n_up, n_down, clipped)``: potentiating and depressing coincidences per cell
    ``[rows, cols]`` (summed over the samples; float tensors of whole numbers) and the number of
    samples whose probabilities had to be clipped at 1 (a 0-d tensor).
    """
    if x.dim() != 2 or d.dim() != 2 or x.shape[0] != d.shape[0]:
        raise ValueError(f"pulse-train update needs x [N, rows] and d [N, cols] with the same N, got "
                         f"{tuple(x.shape)} and {tuple(d.shape)}")
    if not (isinstance(bl, int) and 1 <= bl <= 4096):
        raise ValueError(f"bl (pulse-train length) must be an integer 1..4096, got {bl!r}")
    if not (scale >= 0 and math.isfinite(scale)):
        raise ValueError(f"pulse-train scale (lr / dw_min) must be finite and >= 0, got {scale}")
    n = x.shape[0]
    ax, ad = x.abs(), d.abs()
    xm = ax.amax(1, keepdim=True)
    dm = ad.amax(1, keepdim=True)
    ok = (xm > 0) & (dm > 0)
    xm1, dm1 = torch.where(ok, xm, torch.ones_like(xm)), torch.where(ok, dm, torch.ones_like(dm))
    c = math.sqrt(scale / bl)
    p = (c * ax * (dm1 / xm1).sqrt()).where(ok, torch.zeros_like(ax))        # [N, rows]
    q = (c * ad * (xm1 / dm1).sqrt()).where(ok, torch.zeros_like(ad))        # [N, cols]
    clipped = ((p.amax(1) > 1) | (q.amax(1) > 1)).sum()
    p, q = p.clamp(max=1.0), q.clamp(max=1.0)
    a = (torch.rand((n, bl, x.shape[1]), generator=generator, dtype=x.dtype, device=x.device) < p[:, None, :])
    b = (torch.rand((n, bl, d.shape[1]), generator=generator, dtype=x.dtype, device=x.device) < q[:, None, :])
    a = a.to(x.dtype).reshape(n * bl, -1)
    b = b.to(x.dtype).reshape(n * bl, -1)
    sx = torch.sign(x).repeat_interleave(bl, 0)
    sd = torch.sign(d).repeat_interleave(bl, 0)
    total = a.t() @ b                               # every coincidence
    net = -((a * sx).t() @ (b * sd))                # signed: + potentiates, - depresses
    n_up = ((total + net) / 2).round_()
    n_down = ((total - net) / 2).round_()
    return n_up, n_down, clipped


def apply_pulse_trains(xb, x: torch.Tensor, d: torch.Tensor, *, scale: float, bl: int,
                       generator: torch.Generator, down_first: bool = False):
    """Update crossbar ``xb`` in place by the pulse trains of ``x`` ``[N, rows]`` and ``d``
    ``[N, cols]`` (:func:`coincidences`): each coincidence is one push-pull pulse pair (G+ up and
    G- down to raise the weight, the reverse to lower it). The potentiating and the depressing
    phase are applied one after the other (``down_first`` swaps them: a caller alternates, so
    that the order's second-order bias on a nonlinear device cancels; a batch of one sample has
    one sign per cell and no order). Counts the trains' bits (``pulse_bits``) and ``BL`` pulse
    slots per sample and phase for the whole array (``write_cycles``). Returns
    ``(pulses applied, clipped samples)``."""
    n_up, n_down, clipped = coincidences(x, d, scale=scale, bl=bl, generator=generator)
    n = x.shape[0]
    xb.counters.add("pulse_bits", n * bl * (xb.rows + xb.cols))
    cap = n * bl
    phases = [(n_up, 1.0), (n_down, -1.0)]
    if down_first:
        phases.reverse()
    total = torch.zeros((), dtype=torch.int64, device=x.device)
    for cnt, sign in phases:
        m = cnt * sign
        total = total + xb.apply_pulses(m, -m, check=False, max_count=cap, write_cycles=n * bl)
    return total, clipped
