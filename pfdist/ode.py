"""The probability-flow ODE in EDM's variance-exploding form (sigma(t) = t).

A denoiser is any callable ``D(x, sigma) -> denoised`` with ``x: (batch, *shape)`` and
``sigma`` a float or a ``(batch,)`` tensor. Everything else is written once here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def expand_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast ``sigma`` (float, scalar or ``(batch,)``) to ``(batch, 1, ..., 1)`` matching ``x``."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def score(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    """Score of p_sigma: (D(x; sigma) - x) / sigma^2 (Tweedie)."""
    return (denoised - x) / expand_sigma(sigma, x) ** 2


def velocity(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    """PF-ODE velocity dx/dsigma = (x - D(x; sigma)) / sigma (EDM eq. 4 with sigma(t) = t)."""
    return (x - denoised) / expand_sigma(sigma, x)
