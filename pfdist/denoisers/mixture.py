"""Gaussian mixtures, including mixtures of low-rank Gaussians (MoLRG), with exact denoisers."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from pfdist import checks
from pfdist.checks import _short
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.ode import expand_sigma

MAX_FACTOR_VALUES = 1 << 28


class GaussianMixture:
    """sum_k w_k N(mu_k, Sigma_k) on ``shape = means.shape[1:]``, d = prod(shape).

    Give either full covariances ``covs: (K, d, d)`` or low-rank factors ``factors: (K, d, r)``
    (Sigma_k = F_k F_k^T + noise_std_k^2 I). Each component is held in an eigenbasis
    Q_k (d, r) with variances lam_k (r,) plus an isotropic floor iso_k on the complement, so
    singular (low-rank) covariances are exact. The denoiser is the posterior mean

        D(x; sigma) = sum_k softmax_k(log w_k + log N(x; mu_k, Sigma_k + sigma^2 I))
                      [mu_k + Sigma_k (Sigma_k + sigma^2 I)^-1 (x - mu_k)],

    computed with log-sum-exp in ``compute_dtype`` (float64), stable from sigma = 0.002 to 80.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor,
        covs: Tensor | None = None,
        *,
        factors: Tensor | None = None,
        noise_std: float | Tensor = 0.0,
        compute_dtype: torch.dtype = torch.float64,
    ):
        cd = compute_dtype
        weights = checks.tensor("weights", weights, dtype=cd)
        means = checks.tensor("means", means, dtype=means.dtype if isinstance(means, Tensor) and means.is_floating_point() else cd)
        if isinstance(noise_std, Tensor) and noise_std.numel() != 1:
            noise_std = checks.tensor("noise_std", noise_std, dtype=cd)
            if noise_std.ndim != 1 or noise_std.shape[0] != weights.reshape(-1).shape[0] or (noise_std < 0).any():
                raise PFDistError(f"noise_std must be a number >= 0 or one value >= 0 per component (K,); "
                                  f"got {_short(noise_std)}.")
        else:
            noise_std = checks.real("noise_std", float(noise_std) if isinstance(noise_std, Tensor) else noise_std, lo=0.0)
        K = weights.shape[0] if weights.ndim == 1 else -1
        if weights.ndim != 1 or K < 1 or means.shape[0] != K:
            raise PFDistError(
                f"weights must be (K,) and means (K, *shape) with the same K; got weights "
                f"{tuple(weights.shape)} and means {tuple(means.shape)}."
            )
        if (weights < 0).any() or weights.sum() <= 0:
            raise PFDistError("weights must be non-negative with a positive sum.")
        if (covs is None) == (factors is None):
            raise PFDistError("give exactly one of covs (K, d, d) or factors (K, d, r).")
        self.shape = tuple(means.shape[1:])
        d = math.prod(self.shape)
        self.means = means.to(cd).reshape(K, d)
        self.log_weights = torch.log(weights / weights.sum())
        noise_var = torch.as_tensor(noise_std, dtype=cd).expand(K) ** 2
        if covs is not None:
            covs = checks.tensor("covs", covs, dtype=cd)
            if covs.shape != (K, d, d):
                raise PFDistError(f"covs must be (K, d, d) = ({K}, {d}, {d}); got {tuple(covs.shape)}.")
            lam, Q = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))
            if lam.min() < -1e-6 * max(1.0, lam.max().item()):
                raise PFDistError("every covariance must be positive semi-definite.")
            self.eigvecs, self.eigvals = Q, lam.clamp_min(0) + noise_var[:, None]
            self.iso = noise_var.clone()
        else:
            factors = checks.tensor("factors", factors, dtype=cd)
            if factors.ndim != 3 or factors.shape[:2] != (K, d):
                raise PFDistError(f"factors must be (K, d, r) = ({K}, {d}, r); got {tuple(factors.shape)}.")
            Q, S, _ = torch.linalg.svd(factors, full_matrices=False)
            self.eigvecs, self.eigvals = Q, S**2 + noise_var[:, None]
            self.iso = noise_var.clone()
        self.compute_dtype = cd
        self._device_cache: dict = {}

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _on(self, device: torch.device):
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = tuple(
                t.to(device) for t in (self.means, self.eigvecs, self.eigvals, self.iso, self.log_weights)
            )
        return self._device_cache[key]

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Posterior mean; x: (batch, *shape), sigma: float or (batch,), sigma > 0."""
        mu, Q, lam, iso, logw = self._on(x.device)
        flat = x.reshape(x.shape[0], -1).to(self.compute_dtype)
        d, r = flat.shape[1], Q.shape[2]
        s2 = expand_sigma(sigma, flat).to(self.compute_dtype) ** 2  # (batch, 1)
        diff = flat[:, None, :] - mu  # (batch, K, d)
        c = torch.einsum("bkd,kdr->bkr", diff, Q)
        resid = diff - torch.einsum("bkr,kdr->bkd", c, Q)
        var = lam + s2[:, :, None]  # (batch, K, r)
        iso_var = iso + s2  # (batch, K)
        log_p = logw - 0.5 * (
            torch.log(var).sum(-1)
            + (d - r) * torch.log(iso_var)
            + (c**2 / var).sum(-1)
            + (resid**2).sum(-1) / iso_var
        )
        resp = torch.softmax(log_p, dim=1)  # (batch, K)
        post = (
            mu
            + torch.einsum("bkr,kdr->bkd", c * lam / var, Q)
            + (iso / iso_var)[:, :, None] * resid
        )
        out = torch.einsum("bk,bkd->bd", resp, post)
        return out.to(x.dtype).reshape(x.shape)

    __call__ = denoise

    def moments(self) -> tuple[Tensor, Tensor]:
        """The exact mean ``(d,)`` and covariance ``(d, d)``: sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T."""
        w, mu = self.log_weights.exp(), self.means
        eye = torch.eye(mu.shape[1], dtype=mu.dtype, device=mu.device)
        covs = torch.einsum("kdr,kr,ker->kde", self.eigvecs, self.eigvals - self.iso[:, None], self.eigvecs)
        covs = covs + self.iso[:, None, None] * eye
        mean = (w[:, None] * mu).sum(0)
        second = (w[:, None, None] * (covs + mu[:, :, None] * mu[:, None, :])).sum(0)
        return mean, second - mean[:, None] * mean[None, :]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples, ``(n, *shape)`` in float32."""
        cd = self.compute_dtype
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.eigvals.shape[1], generator=generator, dtype=cd)
        e = torch.randn(n, self.means.shape[1], generator=generator, dtype=cd)
        Q = self.eigvecs[k]
        low_rank = torch.einsum("ndr,nr->nd", Q, z * self.eigvals[k].sqrt())
        x = self.means[k] + low_rank + self._complement(e, Q) * self.iso[k, None].sqrt()
        return x.to(torch.float32).reshape(n, *self.shape)

    @staticmethod
    def _complement(e: Tensor, Q: Tensor) -> Tensor:
        """Project e (n, d) onto the orthogonal complement of each Q (n, d, r)."""
        return e - torch.einsum("ndr,nr->nd", Q, torch.einsum("ndr,nd->nr", Q, e))

    def fingerprint(self) -> str:
        return content_hash("GaussianMixture", self.log_weights, self.means, self.eigvecs, self.eigvals, self.iso)

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(K={self.num_components}, shape={self.shape}, "
            f"rank={self.eigvecs.shape[2]})"
        )


def random_low_rank_mixture(
    shape: int | Sequence[int],
    num_components: int,
    rank: int,
    *,
    scale: float = 1.0,
    mean_scale: float = 0.0,
    noise_std: float = 0.0,
    weights: Sequence[float] | None = None,
    seed: int = 0,
) -> GaussianMixture:
    """A random mixture of low-rank Gaussians: x ~ sum_k w_k N(m_k, scale^2 U_k U_k^T + noise_std^2 I).

    U_k: (d, rank) orthonormal (QR of a Gaussian matrix), m_k ~ N(0, mean_scale^2 I) (0 by
    default, the MoLRG of the paper), equal weights unless given. Any ``shape``, images included.
    """
    shape = checks.shape("shape", shape)
    d = math.prod(shape)
    num_components = checks.integer("num_components", num_components, lo=1)
    rank = checks.integer("rank", rank, lo=1, hi=d)
    scale = checks.real("scale", scale, lo=0.0)
    mean_scale = checks.real("mean_scale", mean_scale, lo=0.0)
    noise_std = checks.real("noise_std", noise_std, lo=0.0)
    seed = checks.seed("seed", seed)
    if num_components * d * rank > MAX_FACTOR_VALUES:
        raise PFDistError(
            f"a mixture of {num_components} rank-{rank} components in d = {d:,} needs {num_components * d * rank:,} "
            f"factor values, more than {MAX_FACTOR_VALUES:,} (2 GiB in float64); use fewer components, a lower "
            "rank or a smaller shape.")
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(num_components, d, rank, generator=g, dtype=torch.float64))[0]
    means = mean_scale * torch.randn(num_components, *shape, generator=g, dtype=torch.float64)
    w = torch.ones(num_components) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    return GaussianMixture(w, means, factors=scale * U, noise_std=noise_std)
