"""A Gaussian N(mu, Sigma): exact denoiser and closed-form probability-flow map."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.ode import expand_sigma
from pfdist.settings import FlowSettings


class Gaussian:
    """N(mean, cov) on ``shape = mean.shape``; ``cov: (d, d)`` PSD, d = mean.numel().

    ``D(x; sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)`` and the PF-ODE from sigma_a to
    sigma_b is ``mu + Sigma_b^(1/2) Sigma_a^(-1/2) (x - mu)`` with Sigma_s = Sigma + s^2 I.
    Singular covariances are allowed. Computation runs in ``compute_dtype`` (float64).
    """

    def __init__(self, mean: Tensor, cov: Tensor, *, compute_dtype: torch.dtype = torch.float64):
        mean = checks.tensor("mean", mean, dtype=mean.dtype if isinstance(mean, Tensor) and mean.is_floating_point() else compute_dtype)
        cov = checks.tensor("cov", cov, dtype=compute_dtype)
        if mean.ndim == 0:
            raise PFDistError("mean must have at least one dimension (a list, e.g. [0.0]), got a scalar.")
        d = mean.numel()
        if cov.shape != (d, d):
            raise PFDistError(
                f"cov must be (d, d) = ({d}, {d}) for a mean of shape {tuple(mean.shape)}; "
                f"got {tuple(cov.shape)}."
            )
        cov = cov.to(compute_dtype)
        if not torch.allclose(cov, cov.T, atol=1e-6 * max(1.0, cov.abs().max().item())):
            raise PFDistError("cov must be symmetric positive semi-definite.")
        lam, Q = torch.linalg.eigh(0.5 * (cov + cov.T))
        if lam.min() < -1e-6 * max(1.0, lam.max().item()):
            raise PFDistError(f"cov has a negative eigenvalue ({lam.min().item():.3g}); it must be PSD.")
        self.shape = tuple(mean.shape)
        self.mean = mean.to(compute_dtype).reshape(-1)
        self.cov = cov
        self.eigvals = lam.clamp_min(0)
        self.eigvecs = Q
        self.compute_dtype = compute_dtype

    def _apply(self, x: Tensor, gain: Tensor) -> Tensor:
        """mu + Q diag(gain) Q^T (x - mu), gain: (batch, d) in the eigenbasis."""
        flat = x.reshape(x.shape[0], -1).to(self.compute_dtype)
        Q, mu = self.eigvecs.to(x.device), self.mean.to(x.device)
        c = (flat - mu) @ Q
        out = mu + (gain * c) @ Q.T
        return out.to(x.dtype).reshape(x.shape)

    def _variances(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        s = expand_sigma(sigma, x.reshape(x.shape[0], -1)).to(self.compute_dtype)
        return self.eigvals.to(x.device) + s**2  # (batch, d)

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Posterior mean E[y | y + sigma n = x]; x: (batch, *shape), sigma > 0."""
        lam = self.eigvals.to(x.device)
        return self._apply(x, lam / self._variances(sigma, x))

    __call__ = denoise

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Exact PF-ODE solution from noise level sigma_from to sigma_to (sigma_to may be 0)."""
        lam = self.eigvals.to(x.device)
        gain = torch.sqrt((lam + sigma_to**2) / (lam + sigma_from**2))
        return self._apply(x, gain.expand(x.shape[0], -1))

    def flow_map(self, x_T: Tensor, sigma_max: float = FlowSettings.sigma_max) -> Tensor:
        """Closed-form Phi(x_T) = mu + Sigma^(1/2) (Sigma + T^2 I)^(-1/2) (x_T - mu)."""
        return self.flow(x_T, sigma_max, 0.0)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples, ``(n, *shape)`` in float32."""
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=self.compute_dtype)
        x = self.mean + (z * self.eigvals.sqrt()) @ self.eigvecs.T
        return x.to(torch.float32).reshape(n, *self.shape)

    def fingerprint(self) -> str:
        return content_hash("Gaussian", self.mean, self.cov)

    def __repr__(self) -> str:
        return f"Gaussian(shape={self.shape}, trace={self.eigvals.sum().item():.4g})"


def gaussian_pfd(a: Gaussian, b: Gaussian, *, sigma_max: float = FlowSettings.sigma_max) -> float:
    """Closed-form PFD between two Gaussians (identity descriptor, exact flows).

    Phi_a(x) - Phi_b(x) = c + M x with x ~ N(0, T^2 I), so PFD^2 = |c|^2 + T^2 |M|_F^2.
    """
    if a.shape != b.shape:
        raise PFDistError(f"shapes differ: {a.shape} vs {b.shape}.")
    checks.real("sigma_max", sigma_max, positive=True)  # -T would give T's value under another name
    d = a.mean.numel()
    eye = torch.eye(d, dtype=torch.float64)

    def linear(g: Gaussian) -> tuple[Tensor, Tensor]:
        lam, Q = g.eigvals.double(), g.eigvecs.double()
        A = (Q * torch.sqrt(lam / (lam + sigma_max**2))) @ Q.T
        return A, (eye - A) @ g.mean.double()

    A, ca = linear(a)
    B, cb = linear(b)
    sq = ((ca - cb) ** 2).sum() + sigma_max**2 * ((A - B) ** 2).sum()
    return math.sqrt(sq.item())
