"""The metrics PFD is compared with: sample statistics in a feature space Ψ, and exact Gaussian ones.

Sample-based (``a``, ``b``: ``(n, *shape)`` tensors, each row flattened to one feature vector;
pass descriptors Ψ(x) to measure in Ψ, raw samples for pixel space; computed in float64):

- :func:`frechet_distance`: FID's formula on any features, the *squared* Fréchet distance of
  Gaussian fits, as FID reports it.
- :func:`kid`: KID, the unbiased MMD² with the cubic polynomial kernel, averaged over subsets.
- :func:`memorization_ratio`: Gu et al.'s nearest-neighbour rule |x − NN1| / |x − NN2| < 1/3.
- :func:`reproducibility_score`, :func:`generalization_score`: the RP and GL scores of Zhang et
  al., cosine similarity above 0.6 between paired samples / to the nearest training point.

Exact, for Gaussian teachers and students (:class:`pfdist.Gaussian`): :func:`gaussian_w2` and
:func:`gaussian_kl`. Definitions: docs/method.md, "Baseline metrics".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pfdist import checks
from pfdist.denoisers import Gaussian, nearest_neighbors
from pfdist.errors import PFDistError

__all__ = [
    "KIDResult",
    "MemorizationResult",
    "frechet_distance",
    "gaussian_kl",
    "gaussian_w2",
    "generalization_score",
    "kid",
    "memorization_ratio",
    "reproducibility_score",
]


def _features(name: str, x: Tensor, *, min_rows: int = 1, why: str = "") -> Tensor:
    """(n, *shape) -> (n, d) float64, finite, n >= min_rows."""
    if not isinstance(x, Tensor):
        raise PFDistError(f"{name} must be a tensor of shape (n, *shape), got {type(x).__name__}.")
    x = checks.tensor(name, x)
    if x.ndim < 2 or x[0].numel() == 0:
        raise PFDistError(f"{name} must have shape (n, *shape), one sample per row; got shape {list(x.shape)}.")
    if x.shape[0] < min_rows:
        raise PFDistError(f"{name} has {x.shape[0]} samples; {why or f'at least {min_rows} are needed'}.")
    return x.reshape(x.shape[0], -1)


def _same_features(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise PFDistError(f"a and b must have the same number of features per sample; got {a.shape[1]} and "
                          f"{b.shape[1]}. Compute both with the same descriptor.")


def _threshold(name: str, value: float, lo: float, hi: float) -> float:
    value = checks.real(name, value)
    if not lo < value < hi:
        raise PFDistError(f"{name} must lie strictly between {lo:g} and {hi:g}, got {value}.")
    return value


def _psd_sqrt(S: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    lam, Q = torch.linalg.eigh(0.5 * (S + S.T))
    return (Q * lam.clamp_min(0).sqrt()) @ Q.T


def _frechet_sq(mu_a: Tensor, S_a: Tensor, mu_b: Tensor, S_b: Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), all in float64.

    The cross term is the trace of the square root of the symmetric PSD matrix
    S_a^1/2 S_b S_a^1/2, i.e. the sum of the square roots of its (clipped) eigenvalues: real by
    construction, with no complex parts to discard (scipy.linalg.sqrtm of S_a S_b can return them).
    """
    root_a = _psd_sqrt(S_a)
    middle = root_a @ S_b @ root_a
    cross = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0).sqrt().sum()
    value = ((mu_a - mu_b) ** 2).sum() + torch.trace(S_a) + torch.trace(S_b) - 2 * cross
    return max(value.item(), 0.0)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Squared Fréchet distance between Gaussian fits of two feature sets: FID's formula in any Ψ.

        FD² = |mu_a − mu_b|² + tr(S_a + S_b − 2 (S_a^1/2 S_b S_a^1/2)^1/2)

    a: (n_a, *shape), b: (n_b, *shape), rows flattened to features; mu and S are the sample mean
    and the unbiased (1/(n−1)) covariance, as FID computes them. Returns the *squared* distance,
    as FID reports it (its square root is the 2-Wasserstein distance between the two fits;
    :func:`gaussian_w2` for known Gaussians). The matrix square root is taken by
    eigen-decomposition of the symmetric S_a^1/2 S_b S_a^1/2, so it is real and stable even for
    singular covariances (fewer samples than features). The estimate is biased upwards by
    O(d/n) for n samples of d features; compare values at equal n.
    """
    why = "a covariance needs at least 2"
    a = _features("a", a, min_rows=2, why=why)
    b = _features("b", b, min_rows=2, why=why)
    _same_features(a, b)
    if min(a.shape[0], b.shape[0]) < a.shape[1]:  # fewer samples than features: work in sample space
        return _frechet_sq_samples(a, b)
    return _frechet_sq(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1),
                       b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))


def _frechet_sq_samples(a: Tensor, b: Tensor) -> float:
    """The same FD² from the centred samples A (n_a, d), B (n_b, d), in O(n_a n_b d) instead of O(d³).

    With S_a = AᵀA / (n_a − 1) and S_b = BᵀB / (n_b − 1), the eigenvalues of S_a^1/2 S_b S_a^1/2
    are the nonzero eigenvalues of S_a S_b, i.e. the squared singular values of A Bᵀ / √((n_a − 1)(n_b − 1)):
    the cross term is that matrix's nuclear norm, and tr S = |A|²_F / (n − 1).
    """
    A, B = a - a.mean(0), b - b.mean(0)
    scale = math.sqrt((a.shape[0] - 1) * (b.shape[0] - 1))
    cross = torch.linalg.svdvals(A @ B.T).sum() / scale
    traces = (A ** 2).sum() / (a.shape[0] - 1) + (B ** 2).sum() / (b.shape[0] - 1)
    value = ((a.mean(0) - b.mean(0)) ** 2).sum() + traces - 2 * cross
    return max(value.item(), 0.0)


@dataclass(frozen=True)
class KIDResult:
    """KID over subsets: ``mean`` and ``std`` (population std, as torch-fidelity and clean-fid report
    it) of the unbiased MMD² estimates in ``values`` (one per subset, float64)."""

    mean: float
    std: float
    values: Tensor
    subset_size: int


def _unbiased_mmd2(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD² with k(x, y) = (x·y / d + 1)^3 for equal-size x, y: (m, d), m >= 2."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return (within - 2 * k_xy.mean()).item()


def kid(a: Tensor, b: Tensor, *, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> KIDResult:
    """Kernel inception distance (Bińkowski et al. 2018) in any Ψ: the unbiased MMD² with the cubic
    polynomial kernel k(x, y) = (x·y / d + 1)^3, d = features per sample.

    a: (n_a, *shape), b: (n_b, *shape). Each of ``subsets`` draws ``subset_size`` rows of a and of
    b without replacement (default min(1000, n_a, n_b), torch-fidelity's and clean-fid's 1000)
    and computes the unbiased estimate on them; the result holds their mean and std. The draws
    are a function of ``seed`` alone: same seed, same numbers. Can be slightly negative when the
    two sets come from one distribution (the estimator is unbiased).
    """
    why = "the unbiased MMD² needs at least 2"
    a = _features("a", a, min_rows=2, why=why)
    b = _features("b", b, min_rows=2, why=why)
    _same_features(a, b)
    subsets = checks.size("subsets", subsets, 100_000, "each subset costs subset_size² kernel evaluations")
    largest = min(a.shape[0], b.shape[0])
    if subset_size is None:
        subset_size = min(1000, largest)
    subset_size = checks.integer("subset_size", subset_size, lo=2)
    if subset_size > largest:
        raise PFDistError(f"subset_size = {subset_size} is more than the samples of the smaller set ({largest}); "
                          f"use subset_size <= {largest} or more samples.")
    g = torch.Generator().manual_seed(checks.seed("seed", seed))
    values = []
    for _ in range(subsets):
        ia = torch.randperm(a.shape[0], generator=g)[:subset_size]
        ib = torch.randperm(b.shape[0], generator=g)[:subset_size]
        values.append(_unbiased_mmd2(a[ia], b[ib]))
    values_t = torch.tensor(values, dtype=torch.float64)
    return KIDResult(mean=values_t.mean().item(), std=values_t.std(unbiased=False).item(), values=values_t,
                     subset_size=subset_size)


def copy_features(x: Tensor) -> Tensor:
    """What Gu et al.'s copy rule compares: images (n, C, H, W), C in {1, 3}, in [-1, 1] (EDM's
    convention) as the 8-bit images they would be saved as, 0..255 in float64 for the ℓ2 distance;
    other data (vectors) as they are, in float64."""
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return torch.round((x.double().clamp(-1, 1) + 1) * 127.5)
    return x.double()


@dataclass(frozen=True)
class MemorizationResult:
    """Gu et al.'s memorization rule per sample: ``distance_ratio`` = |x − NN1| / |x − NN2| ((n,),
    float64; 0 for an exact copy), ``memorized`` = distance_ratio < threshold ((n,), bool) and
    ``ratio``, the fraction memorized."""

    ratio: float
    memorized: Tensor
    distance_ratio: Tensor
    threshold: float


def memorization_ratio(samples: Tensor, train: Tensor, *, threshold: float = 1 / 3) -> MemorizationResult:
    """Fraction of samples that copy a training point (Gu et al. 2023, "On memorization in diffusion
    models"): x is memorized when |x − NN1(x)| < threshold · |x − NN2(x)|, NN1 and NN2 its nearest
    and second-nearest training points in ℓ2 (of the features given: pixels, or Ψ).

    samples: (n, *shape), train: (N, *shape), N >= 2; threshold in (0, 1), 1/3 by default.
    """
    samples = _features("samples", samples)
    train = _features("train", train, min_rows=2, why="the rule needs a nearest and a second-nearest point")
    if samples.shape[1] != train.shape[1]:
        raise PFDistError(f"samples and train must have the same number of features per sample; got "
                          f"{samples.shape[1]} and {train.shape[1]}.")
    threshold = _threshold("threshold", threshold, 0.0, 1.0)
    dist, _ = nearest_neighbors(samples, train, k=2)
    d1, d2 = dist[:, 0], dist[:, 1]
    distance_ratio = torch.where(d2 > 0, d1 / d2.clamp_min(torch.finfo(d2.dtype).tiny), torch.zeros_like(d1))
    memorized = distance_ratio < threshold
    return MemorizationResult(ratio=memorized.double().mean().item(), memorized=memorized,
                              distance_ratio=distance_ratio, threshold=threshold)


def _unit_rows(name: str, x: Tensor) -> Tensor:
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise PFDistError(f"{name} has a zero feature vector (row {int((norms[:, 0] == 0).nonzero()[0])}); cosine "
                          f"similarity is undefined for it. Use a descriptor whose features are never all zero.")
    return x / norms


def reproducibility_score(a: Tensor, b: Tensor, *, threshold: float = 0.6) -> float:
    """RP score (Zhang et al., "The emergence of reproducibility and generalizability in diffusion
    models"): the fraction of same-seed pairs whose cosine similarity exceeds ``threshold``.

    a, b: (n, *shape), row i of each made from the same seed (e.g. two maps' outputs, or their
    descriptors Ψ). Higher means the two models produce the same samples.
    """
    a, b = _features("a", a), _features("b", b)
    _same_features(a, b)
    if a.shape[0] != b.shape[0]:
        raise PFDistError(f"a and b must hold the same seeds, one per row; got {a.shape[0]} and {b.shape[0]} rows.")
    threshold = _threshold("threshold", threshold, -1.0, 1.0)
    cos = (_unit_rows("a", a) * _unit_rows("b", b)).sum(1)
    return (cos > threshold).double().mean().item()


def generalization_score(samples: Tensor, train: Tensor, *, threshold: float = 0.6) -> float:
    """GL score (Zhang et al., same paper): 1 − the fraction of samples whose most similar training
    point has cosine similarity above ``threshold``. Higher means fewer copies.

    samples: (n, *shape), train: (N, *shape), compared as feature vectors (e.g. descriptors Ψ).
    """
    samples, train = _features("samples", samples), _features("train", train)
    if samples.shape[1] != train.shape[1]:
        raise PFDistError(f"samples and train must have the same number of features per sample; got "
                          f"{samples.shape[1]} and {train.shape[1]}.")
    threshold = _threshold("threshold", threshold, -1.0, 1.0)
    # On unit vectors |u - v|^2 = 2 - 2 cos, so the nearest neighbour is the most similar point.
    dist, _ = nearest_neighbors(_unit_rows("samples", samples), _unit_rows("train", train), k=1)
    best_cos = 1 - dist[:, 0] ** 2 / 2
    return 1 - (best_cos > threshold).double().mean().item()


def _same_gaussian_shape(g1: Gaussian, g2: Gaussian) -> None:
    for name, g in (("g1", g1), ("g2", g2)):
        if not isinstance(g, Gaussian):
            raise PFDistError(f"{name} must be a pfdist.Gaussian, got {type(g).__name__}.")
    if g1.shape != g2.shape:
        raise PFDistError(f"g1 and g2 must have the same shape; got {g1.shape} and {g2.shape}.")


def gaussian_w2(g1: Gaussian, g2: Gaussian) -> float:
    """Exact 2-Wasserstein distance W2 (not squared) between two Gaussians:

        W2² = |mu_1 − mu_2|² + tr(S_1 + S_2 − 2 (S_1^1/2 S_2 S_1^1/2)^1/2)

    the population value of :func:`frechet_distance` (which returns the square). Singular
    covariances are allowed.
    """
    _same_gaussian_shape(g1, g2)
    sq = _frechet_sq(g1.mean.double(), g1.cov.double(), g2.mean.double(), g2.cov.double())
    return math.sqrt(sq)


def gaussian_kl(g1: Gaussian, g2: Gaussian) -> float:
    """Exact KL(g1 ‖ g2) in nats between two Gaussians with positive-definite covariances:

        KL = ½ [tr(S_2⁻¹ S_1) + (mu_2 − mu_1)ᵀ S_2⁻¹ (mu_2 − mu_1) − d + ln det S_2 − ln det S_1]

    Not symmetric: g1 is the distribution the expectation is under. A singular covariance is
    refused (the divergence is then infinite unless both live on one subspace).
    """
    _same_gaussian_shape(g1, g2)
    for name, g in (("g1", g1), ("g2", g2)):
        lam = g.eigvals
        if lam.min() <= 1e-12 * max(lam.max().item(), 1e-300):
            raise PFDistError(f"{name} has a singular covariance (smallest eigenvalue {lam.min().item():.3g}); "
                              f"KL needs positive-definite covariances. Add a small multiple of the identity.")
    d = g1.mean.numel()
    lam_1, lam_2, Q_2 = g1.eigvals.double(), g2.eigvals.double(), g2.eigvecs.double()
    inv_2 = (Q_2 / lam_2) @ Q_2.T
    diff = (g2.mean - g1.mean).double()
    trace = (inv_2 * g1.cov.double()).sum()  # tr(S_2^-1 S_1), both symmetric
    logdet = lam_2.log().sum() - lam_1.log().sum()
    kl = 0.5 * (trace + diff @ inv_2 @ diff - d + logdet)
    return max(kl.item(), 0.0)
