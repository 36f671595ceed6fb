"""EDM preconditioning (Karras et al. 2022, Table 1): any backbone F becomes a denoiser D."""

from __future__ import annotations

from torch import Tensor, nn

from pfdist.errors import PFDistError
from pfdist.ode import expand_sigma


def precond_coefficients(
    sigma: Tensor, sigma_data: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM Table 1 coefficients ``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma``."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


class EDMPrecond(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)  (EDM eq. 7, Table 1).

    ``backbone(x, c_noise)`` takes ``x: (batch, *shape)`` and ``c_noise: (batch,)`` and returns
    a tensor shaped like ``x``. ``config`` is the JSON config that rebuilds the network
    (set by :func:`pfdist.nets.build_network`; needed by ``save_denoiser``).
    """

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5, config: dict | None = None):
        super().__init__()
        if not sigma_data > 0:
            raise PFDistError(f"sigma_data must be positive, got {sigma_data}.")
        self.backbone = backbone
        self.sigma_data = float(sigma_data)
        self.config = config

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """x: (batch, *shape); sigma: float, 0-d, (1,) or (batch,) tensor. Returns (batch, *shape)."""
        if x.ndim < 2:
            raise PFDistError(f"x must be (batch, *shape); got shape {tuple(x.shape)}.")
        if isinstance(sigma, Tensor) and (sigma.ndim > 1 or sigma.numel() not in (1, x.shape[0])):
            raise PFDistError(
                f"sigma must be a float or a (batch,) tensor with batch={x.shape[0]}; "
                f"got shape {tuple(sigma.shape)}."
            )
        sigma = expand_sigma(sigma, x).expand(x.shape[0], *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in, c_noise = precond_coefficients(sigma, self.sigma_data)
        F_x = self.backbone(c_in * x, c_noise.reshape(-1))
        return c_skip * x + c_out * F_x

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}"
