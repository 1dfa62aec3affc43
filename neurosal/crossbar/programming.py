r"""Write-and-verify programming: the conductance-tuning protocol that on-chip training without
verify (the hybrid rule) avoids, and the baseline that programs software-trained weights.

Each iteration verify-reads the pairs not yet within tolerance (two device reads per weight,
with read noise, counted with their row cycles), estimates the pulses needed from the nominal
step at the conductance read, and applies them to :math:`G^+` (raise :math:`w`) or :math:`G^-`
(lower it), moving whichever device of the pair has more room; a weight stops when
:math:`|w - w_{target}| \le` ``tolerance`` or after ``max_pulses`` pulses.

May import: nothing of neurosal (it drives a :class:`~neurosal.crossbar.array.Crossbar` it is given).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ProgramResult", "program"]


@dataclass
class ProgramResult:
    """What a write-and-verify programming run cost and achieved."""

    pulses: int
    verify_reads: int
    iterations: int
    converged: float          # fraction of weights within tolerance
    max_error: float          # largest |w - target| at the end (weight units)


def program(xb, target: torch.Tensor, tolerance: float = 0.02, max_pulses: int = 1000,
            max_iterations: int = 500) -> ProgramResult:
    """Write-and-verify ``xb`` toward the weights ``target`` (see the module docstring)."""
    target = torch.as_tensor(target, dtype=xb.dtype, device=xb.torch_device)
    if target.shape != (xb.rows, xb.cols):
        raise ValueError(f"target has shape {tuple(target.shape)}, crossbar is {(xb.rows, xb.cols)}")
    if not tolerance > 0:
        raise ValueError("tolerance must be > 0")
    st = xb.state
    card = xb.device.card
    spent = torch.zeros(xb.rows, xb.cols, dtype=torch.int64, device=xb.torch_device)
    active = torch.ones(xb.rows, xb.cols, dtype=torch.bool, device=xb.torch_device)
    pulses = verify = 0                     # tensors once counted: read at the end
    it = 0
    while it < max_iterations:
        it += 1
        g_read = xb.verify_read(active)
        verify = verify + 2 * active.sum()
        w = (g_read[0] - g_read[1]) / xb.g_ref
        err = target - w
        active = active & (err.abs() > tolerance) & (spent < max_pulses)
        if st.stuck is not None:
            active = active & ~(st.stuck[0] & st.stuck[1])
        if not bool(active.any()):        # the loop's end: a read-back by nature, as on a chip
            break
        # plan from what was read, on the card's nominal curve (the controller knows no
        # device-to-device draws)
        u = ((g_read - card.g_min) / card.g_range).clamp(0, 1)
        raise_w = err > 0
        # move whichever device of the pair has more room in the needed direction
        # (raise w: G+ up or G- down; lower w: G+ down or G- up); keeps pairs centred
        use_plus = torch.where(raise_w, (1 - u[0]) >= u[1], u[0] >= (1 - u[1]))
        up_step = xb.device.step_size(g_read, +1) / xb.g_ref
        dn_step = xb.device.step_size(g_read, -1) / xb.g_ref
        step = torch.where(use_plus, torch.where(raise_w, up_step[0], dn_step[0].abs()),
                           torch.where(raise_w, dn_step[1].abs(), up_step[1]))
        step = step.clamp_min(0.1 / card.pmax)
        n = (err.abs() / step).round().clamp(1, max(1, card.pmax // 4))
        n = torch.minimum(n, (max_pulses - spent).clamp_min(0).to(n.dtype))
        n = torch.where(active, n, torch.zeros_like(n))
        sgn = torch.where(raise_w, 1.0, -1.0)
        n_plus = torch.where(use_plus, sgn * n, torch.zeros_like(n))
        n_minus = torch.where(use_plus, torch.zeros_like(n), -sgn * n)
        pulses = pulses + xb.apply_pulses(n_plus, n_minus)
        spent += n.to(torch.int64)
    w_final = xb.weights()
    err = (target - w_final).abs()
    return ProgramResult(pulses=int(pulses), verify_reads=int(verify), iterations=it,
                         converged=float((err <= tolerance).float().mean()), max_error=float(err.max()))
