"""Real 8x8 handwritten digits (scikit-learn's ``load_digits``) and an exact mixture fitted to them.

The 1 797 images ship inside the scikit-learn wheel (``pip install pfdist[digits]``), so an
image study runs offline. Pixels take the integer values 0..16; ``x / 8 - 1`` maps them to
[-1, 1], the range EDM trains images in.

The control teacher is one probabilistic PCA Gaussian per digit class (Tipping & Bishop 1999,
maximum likelihood): with the class covariance S_k = U diag(lam) U^T (lam descending),

    Sigma_k = U_r (diag(lam_1..r) - s_k^2 I) U_r^T + s_k^2 I,   s_k^2 = mean(lam_{r+1..d}),

i.e. the top-r variances are kept exactly and the rest are replaced by their mean. Weights are
the class frequencies, means the class means. Its denoiser and flow are exact.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from pfdist.denoisers import GaussianMixture
from pfdist.errors import PFDistError

SHAPE = (1, 8, 8)
NUM_DIGITS = 1797
# Trained by ``pfdist teacher digits`` (pfdist.experiments.digits_teacher); loaded as ``pfdist:digits-unet``.
DIGITS_TEACHER = Path(__file__).parent / "teachers" / "digits-unet.safetensors"


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise PFDistError(
            "the digits data ship with scikit-learn, which is not installed; "
            "run `pip install pfdist[digits]` (or `pip install scikit-learn`)."
        ) from None
    return sk_load_digits()


def load_digits() -> Tensor:
    """The 1 797 scikit-learn digits as images in [-1, 1]: ``(1797, 1, 8, 8)`` float32."""
    data = _sklearn_digits().data
    return torch.as_tensor(data, dtype=torch.float32).reshape(-1, *SHAPE) / 8 - 1


def load_digit_labels() -> Tensor:
    """The class (0..9) of each image of :func:`load_digits`: ``(1797,)`` int64."""
    return torch.as_tensor(_sklearn_digits().target, dtype=torch.int64)


def ppca(x: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """Maximum-likelihood probabilistic PCA of ``x: (n, d)``.

    Returns ``(mean (d,), factors (d, rank), floor_variance ())`` with
    ``factors factors^T + floor I`` the fitted covariance (module docstring).
    """
    n, d = x.shape
    if not 1 <= rank < d:
        raise PFDistError(f"rank must be in [1, {d - 1}] for {d}-dimensional data (got {rank}).")
    x = x.to(torch.float64)
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / n  # maximum likelihood (1/n)
    lam, U = torch.linalg.eigh(cov)
    lam, U = lam.flip(0).clamp_min(0), U.flip(1)
    floor = lam[rank:].mean()
    factors = U[:, :rank] * (lam[:rank] - floor).clamp_min(0).sqrt()
    return mean, factors, floor


def digits_mixture(rank: int = 8) -> GaussianMixture:
    """A 10-component Gaussian mixture on ``(1, 8, 8)``: one rank-``rank`` PPCA per digit class.

    An exact control teacher for the digits: same shape and range, exact denoiser and flow.
    """
    x = load_digits().reshape(NUM_DIGITS, -1)
    labels = load_digit_labels()
    means, factors, floors, counts = [], [], [], []
    for k in range(10):
        mean, f, floor = ppca(x[labels == k], rank)
        means.append(mean)
        factors.append(f)
        floors.append(floor)
        counts.append(float((labels == k).sum()))
    return GaussianMixture(torch.tensor(counts, dtype=torch.float64), torch.stack(means).reshape(10, *SHAPE),
                           factors=torch.stack(factors), noise_std=torch.stack(floors).sqrt())
