"""Preconditioning (Karras et al. 2022, Table 1): a network F becomes a denoiser

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)[, class_labels]).

``EDMPrecond`` is EDM's own choice; ``VPPrecond``, ``VEPrecond`` and ``iDDPMPrecond`` are the
VP, VE and improved-DDPM columns, under which EDM's published baselines were trained. Each
exposes the sigma range it was trained on as ``sigma_min`` / ``sigma_max``. The network is the
submodule ``model`` (EDM's name, so snapshot weights load by key).
"""

from __future__ import annotations

import math

import torch
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


class Precond(nn.Module):
    """Shared forward of the preconditioners; subclasses define :meth:`coefficients`.

    ``model(x, c_noise[, class_labels=..., augment_labels=...])`` takes ``x: (batch, *shape)`` and
    ``c_noise: (batch,)``; class labels are passed when ``label_dim > 0``. ``config`` is the JSON
    config that rebuilds the network (set by :func:`pfdist.nets.build_network`).
    """

    sigma_min: float = 0.0
    sigma_max: float = math.inf

    def __init__(self, model: nn.Module, *, label_dim: int = 0, config: dict | None = None):
        super().__init__()
        self.model = model
        self.label_dim = int(label_dim)
        self.config = config

    def coefficients(self, sigma: Tensor) -> tuple[Tensor | float, Tensor | float, Tensor | float, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        """x: (batch, *shape); sigma: float, 0-d, (1,) or (batch,) tensor; class_labels:
        (batch, label_dim), zeros when None. Returns (batch, *shape)."""
        if x.ndim < 2:
            raise PFDistError(f"x must be (batch, *shape); got shape {tuple(x.shape)}.")
        if isinstance(sigma, Tensor) and (sigma.ndim > 1 or sigma.numel() not in (1, x.shape[0])):
            raise PFDistError(
                f"sigma must be a float or a (batch,) tensor with batch={x.shape[0]}; "
                f"got shape {tuple(sigma.shape)}."
            )
        sigma = expand_sigma(sigma, x).expand(x.shape[0], *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        kwargs = {}
        if self.label_dim:
            if class_labels is None:
                class_labels = x.new_zeros(x.shape[0], self.label_dim)
            kwargs["class_labels"] = class_labels.to(x.dtype).reshape(-1, self.label_dim)
        elif class_labels is not None:
            raise PFDistError("this network is unconditional (label_dim = 0); pass class_labels=None.")
        if augment_labels is not None:
            kwargs["augment_labels"] = augment_labels.to(x.dtype)
        F_x = self.model(c_in * x, c_noise.reshape(-1), **kwargs)
        return c_skip * x + c_out * self.prediction(F_x)

    def prediction(self, F_x: Tensor) -> Tensor:
        """The part of the network's output that D uses."""
        return F_x

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, label_dim={self.label_dim}"


class EDMPrecond(Precond):
    """EDM's preconditioning: unit-variance network inputs and targets for data of std sigma_data."""

    def __init__(self, model: nn.Module, sigma_data: float = 0.5, *, sigma_min: float = 0.0,
                 sigma_max: float = math.inf, label_dim: int = 0, config: dict | None = None):
        super().__init__(model, label_dim=label_dim, config=config)
        if not sigma_data > 0:
            raise PFDistError(f"sigma_data must be positive, got {sigma_data}.")
        self.sigma_data = float(sigma_data)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def coefficients(self, sigma):
        return precond_coefficients(sigma, self.sigma_data)

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}, " + super().extra_repr()


class VPPrecond(Precond):
    """Variance preserving (Song et al. 2021): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1),
    c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1), c_noise = (M - 1) t(sigma)."""

    def __init__(self, model: nn.Module, *, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000,
                 epsilon_t: float = 1e-5, label_dim: int = 0, config: dict | None = None):
        super().__init__(model, label_dim=label_dim, config=config)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = float(beta_d), float(beta_min), int(M), float(epsilon_t)
        self.sigma_min, self.sigma_max = self.sigma(self.epsilon_t), self.sigma(1.0)

    def sigma(self, t: float) -> float:
        return math.sqrt(math.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t))

    def sigma_inv(self, sigma: Tensor) -> Tensor:
        return ((self.beta_min**2 + 2 * self.beta_d * (1 + sigma**2).log()).sqrt() - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        return 1.0, -sigma, 1 / (sigma**2 + 1).sqrt(), (self.M - 1) * self.sigma_inv(sigma)


class VEPrecond(Precond):
    """Variance exploding (Song et al. 2021): c_skip = 1, c_out = sigma, c_in = 1, c_noise = log(sigma / 2)."""

    def __init__(self, model: nn.Module, *, sigma_min: float = 0.02, sigma_max: float = 100.0,
                 label_dim: int = 0, config: dict | None = None):
        super().__init__(model, label_dim=label_dim, config=config)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def coefficients(self, sigma):
        return 1.0, sigma, 1.0, (0.5 * sigma).log()


class iDDPMPrecond(Precond):
    """Improved DDPM (Nichol and Dhariwal 2021): sigma snapped to the nearest of M + 1 levels u_j
    of the cosine schedule, c_noise = M - 1 - j, c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2+1).
    The network predicts 2x the image channels (mean and variance); D uses the first half."""

    def __init__(self, model: nn.Module, *, img_channels: int, C_1: float = 0.001, C_2: float = 0.008,
                 M: int = 1000, label_dim: int = 0, config: dict | None = None):
        super().__init__(model, label_dim=label_dim, config=config)
        self.img_channels = int(img_channels)
        self.C_1, self.C_2, self.M = float(C_1), float(C_2), int(M)
        u = torch.zeros(self.M + 1, device="cpu")  # computed here even when built on the meta device
        for j in range(self.M, 0, -1):  # u_{j-1} from u_j, as in EDM Table 1
            ratio = max(self.alpha_bar(j - 1) / self.alpha_bar(j), self.C_1)
            u[j - 1] = math.sqrt((float(u[j]) ** 2 + 1) / ratio - 1)
        self.register_buffer("u", u)
        self.sigma_min, self.sigma_max = float(u[self.M - 1]), float(u[0])

    def alpha_bar(self, j: int) -> float:
        return math.sin(0.5 * math.pi * j / self.M / (self.C_2 + 1)) ** 2

    def coefficients(self, sigma):
        index = (sigma.reshape(-1, 1).to(self.u.dtype) - self.u.reshape(1, -1)).abs().argmin(1)
        c_noise = (self.M - 1 - index).to(sigma.dtype)
        return 1.0, -sigma, 1 / (sigma**2 + 1).sqrt(), c_noise

    def prediction(self, F_x: Tensor) -> Tensor:
        return F_x[:, : self.img_channels]
