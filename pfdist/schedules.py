"""Noise-level grids for the probability-flow ODE."""

from __future__ import annotations

import torch
from torch import Tensor

from pfdist.errors import PFDistError


def edm_sigmas(
    steps: int,
    *,
    sigma_min: float,
    sigma_max: float,
    rho: float,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """EDM's rho-schedule (Karras et al. 2022, eq. 5) with a final 0 appended.

    sigma_i = (sigma_max^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..steps-1, then sigma_steps = 0. Returns ``(steps + 1,)``, decreasing. The defaults
    live in :class:`pfdist.FlowSettings` (``FlowSettings().sigmas()``).
    """
    if steps < 2:
        raise PFDistError(f"steps must be at least 2 (got {steps}); see FlowSettings for EDM's default.")
    if not 0 < sigma_min < sigma_max:
        raise PFDistError(
            f"need 0 < sigma_min < sigma_max (got sigma_min={sigma_min}, sigma_max={sigma_max})."
        )
    if rho <= 0:
        raise PFDistError(f"rho must be positive (got {rho}); see FlowSettings for EDM's value.")
    i = torch.arange(steps, dtype=torch.float64)
    inv_rho = 1.0 / rho
    sigmas = (sigma_max**inv_rho + i / (steps - 1) * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).to(dtype)
