"""EDM training loss (Karras et al. 2022, eq. 8 with Table 1's sigma distribution and weight)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from pfdist.ode import expand_sigma

Denoiser = Callable[[Tensor, Tensor], Tensor]


def edm_loss(
    net: Denoiser,
    y: Tensor,
    *,
    generator: torch.Generator,
    sigma_data: float,
    P_mean: float = -1.2,
    P_std: float = 1.2,
) -> Tensor:
    """Per-sample EDM loss ``lambda(sigma) * mean_dims (D(y + sigma n; sigma) - y)^2``, (batch,).

    y: (batch, *shape) clean data. ln sigma ~ N(P_mean, P_std^2), n ~ N(0, I), and
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2. Both draws come from
    ``generator`` only (first the (batch,) normal for ln sigma, then the noise n).

    EDM sums the squared error over dimensions; we average it, so the loss is comparable
    across shapes: for an isotropic Gaussian with variance sigma_data^2 the exact denoiser's
    expected loss is 1 at every sigma, whatever the dimension.
    """
    rnd_normal = torch.randn(y.shape[0], generator=generator, device=y.device, dtype=y.dtype)
    sigma = (rnd_normal * P_std + P_mean).exp()
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    n = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    denoised = net(y + expand_sigma(sigma, y) * n, sigma)
    return weight * (denoised - y).square().reshape(y.shape[0], -1).mean(dim=1)
