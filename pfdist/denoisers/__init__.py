"""Exact denoisers: each is a distribution with ``denoise(x, sigma)`` and ``sample(n)``."""

from pfdist.denoisers.empirical import EmpiricalDenoiser, nearest_neighbors
from pfdist.denoisers.gaussian import Gaussian, gaussian_pfd
from pfdist.denoisers.mixture import GaussianMixture, random_low_rank_mixture

__all__ = [
    "EmpiricalDenoiser",
    "Gaussian",
    "GaussianMixture",
    "gaussian_pfd",
    "nearest_neighbors",
    "random_low_rank_mixture",
]
