"""Bias and variance over students with bootstrap intervals, and the model-size verdict.

The decomposition of E_gen over K students (:func:`pfdist.protocol.bias_variance.decompose`,
docs/method.md, §5) depends on the students only through the Gram matrix of their residuals
r_k(x_T) = Psi(Phi_k(x_T)) - Psi(Phi_data(x_T)) on the shared seeds:

    G_jl = E_x <r_j(x), r_l(x)>                                  (K x K)

For students weighted by w (w_k >= 0, sum w = 1; w = 1/K for the K students, counts/K for a
resample of them), with m the w-mean of the students:

    E_bias^2 = |E_x (m - data)|^2 = w^T G w,     mean_k E_gen_k^2 = sum_k w_k G_kk,
    E_var = sum_k w_k G_kk - w^T G w,
    E_var_unbiased = K/(K-1) E_var,              E_bias^2_unbiased = E_bias^2 - E_var_unbiased / K,

the plug-in and finite-K unbiased terms of ``decompose`` (E_bias = sqrt(E_bias^2), the unbiased
one clipped at 0).

Intervals, bootstrap over students: each of B resamples draws K students with replacement
(numpy's PCG64 seeded with ``seed``: the same numbers on every run) and recomputes the terms from
G. The 95% interval is estimate +- t_{0.975, K-1} sqrt(K/(K-1)) sd_boot, sd_boot the standard
deviation of the B values: the bootstrap's standard error, corrected for its (K-1)/K shrinkage of
a variance, with Student's quantile for K students (levels clipped at 0). Percentile intervals
were too narrow with K = 4 students (35 distinct resamples; 7% instead of 2.5% one-sided false
alarms on synthetic students, against 0.5-3.5% for this rule). The intervals describe the
spread over students (datasets, and training seeds with ``seeds="per_student"``); the
Monte-Carlo error over evaluation seeds, which G also carries, is small against it at usual M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from pfdist.errors import PFDistError

NUM_BOOTSTRAP = 2000
CONFIDENCE = 0.95


def residual_gram(teacher: Tensor, students: Sequence[Tensor], *, batch_size: int = 1024) -> np.ndarray:
    """G_jl = E_x <r_j, r_l>, r_k = student_k - teacher (module docstring), in float64.

    teacher: (M, *feature); students: K tensors (M, *feature) on the same seeds -> (K, K)."""
    k = len(students)
    if k < 2:
        raise PFDistError(f"bias-variance needs at least 2 students (got {k}).")
    if any(tuple(s.shape) != tuple(teacher.shape) for s in students):
        raise PFDistError("every student's outputs must have the teacher's shape (same seeds, same descriptor).")
    m = teacher.shape[0]
    gram = torch.zeros(k, k, dtype=torch.float64)
    for i in range(0, m, batch_size):
        t = teacher[i : i + batch_size].double().flatten(1)
        r = torch.stack([s[i : i + batch_size].double().flatten(1) - t for s in students]).flatten(1)  # (K, b F)
        gram += r @ r.T
    return (gram / m).numpy()


def _check_gram(gram: np.ndarray) -> np.ndarray:
    gram = np.asarray(gram, dtype=float)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 2:
        raise PFDistError(f"gram must be a (K, K) matrix with K >= 2 students (got shape {gram.shape}).")
    if not np.all(np.isfinite(gram)) or not np.allclose(gram, gram.T, rtol=1e-9, atol=1e-12):
        raise PFDistError("gram must be finite and symmetric: pass residual_gram(teacher, students).")
    return gram


def _check_num_bootstrap(num_bootstrap: int) -> None:
    if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, int) or num_bootstrap < 100:
        raise PFDistError(f"num_bootstrap must be an integer >= 100 (got {num_bootstrap!r}).")


def _terms(gram: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Plug-in and unbiased terms for each row of weights (B, K), each summing to 1."""
    k = gram.shape[0]
    bias_sq = np.einsum("bj,jl,bl->b", weights, gram, weights)
    var = np.maximum(weights @ np.diag(gram) - bias_sq, 0.0)
    var_u = var * k / (k - 1)
    bias_sq_u = bias_sq - var_u / k
    return {"e_bias": np.sqrt(np.maximum(bias_sq, 0.0)), "e_var": var,
            "e_bias_unbiased": np.sqrt(np.maximum(bias_sq_u, 0.0)), "e_var_unbiased": var_u}


def _resample_weights(k: int, num_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, K) weights: counts / K of K draws with replacement from K students."""
    draws = rng.integers(0, k, size=(num_bootstrap, k))
    return np.stack([np.bincount(row, minlength=k) for row in draws]) / k


def _interval(point: float, boot: np.ndarray, k: int) -> tuple[float, float]:
    """point +- t_{0.975, K-1} sqrt(K / (K-1)) sd(boot): the bootstrap standard error, corrected for
    the bootstrap's (K-1)/K shrinkage of a variance, with Student's quantile for K students."""
    from scipy.stats import t as t_dist  # scipy: when analysing, not in the processes that train
    half = float(t_dist.ppf((1 + CONFIDENCE) / 2, k - 1)) * math.sqrt(k / (k - 1)) * float(np.std(boot, ddof=1))
    return point - half, point + half


def _level_interval(point: float, boot: np.ndarray, k: int) -> tuple[float, float]:
    lo, hi = _interval(point, boot, k)
    return max(lo, 0.0), hi


@dataclass(frozen=True)
class BiasVarianceCI:
    """The terms of the decomposition over K students with 95% bootstrap intervals over students.

    ``e_bias`` / ``e_bias_unbiased`` in PFD units, ``e_var`` / ``e_var_unbiased`` squared (the
    paper's units); each ``*_ci`` is (low, high)."""

    k: int
    e_bias: float
    e_bias_ci: tuple[float, float]
    e_var: float
    e_var_ci: tuple[float, float]
    e_bias_unbiased: float
    e_bias_unbiased_ci: tuple[float, float]
    e_var_unbiased: float
    e_var_unbiased_ci: tuple[float, float]
    num_bootstrap: int
    seed: int

    def describe(self, *, unbiased: bool = True) -> str:
        b, v = ("e_bias_unbiased", "e_var_unbiased") if unbiased else ("e_bias", "e_var")
        (bl, bh), (vl, vh) = getattr(self, f"{b}_ci"), getattr(self, f"{v}_ci")
        return (f"bias {getattr(self, b):.3g} (95% CI {bl:.3g}–{bh:.3g}), variance {getattr(self, v):.3g} "
                f"(95% CI {vl:.3g}–{vh:.3g}), K = {self.k}, bootstrap over students")


def bias_variance_ci(gram: np.ndarray, *, num_bootstrap: int = NUM_BOOTSTRAP, seed: int = 0) -> BiasVarianceCI:
    """The terms at w = 1/K and their 95% bootstrap intervals over students (module docstring).
    gram: (K, K) from :func:`residual_gram`."""
    gram = _check_gram(gram)
    _check_num_bootstrap(num_bootstrap)
    k = gram.shape[0]
    point = _terms(gram, np.full((1, k), 1.0 / k))
    boot = _terms(gram, _resample_weights(k, num_bootstrap, np.random.default_rng(seed)))
    values = {name: (float(point[name][0]), _level_interval(float(point[name][0]), boot[name], k)) for name in point}
    return BiasVarianceCI(k, *values["e_bias"], *values["e_var"], *values["e_bias_unbiased"],
                          *values["e_var_unbiased"], num_bootstrap, seed)


def bias_variance_intervals(teacher: Tensor, students: Sequence[Tensor], *, num_bootstrap: int = NUM_BOOTSTRAP,
                            seed: int = 0, batch_size: int = 1024) -> BiasVarianceCI:
    """:func:`bias_variance_ci` of :func:`residual_gram`: the inputs of ``decompose``."""
    return bias_variance_ci(residual_gram(teacher, students, batch_size=batch_size),
                            num_bootstrap=num_bootstrap, seed=seed)


@dataclass(frozen=True)
class SizeTrend:
    """Bias and variance of the largest model minus those of the smallest, with 95% bootstrap
    intervals of each difference by the module's rule (:func:`bias_variance_trend`)."""

    bias_change: float  # E_bias(large) - E_bias(small), PFD units
    bias_change_ci: tuple[float, float]
    var_change: float  # E_var(large) - E_var(small), squared units
    var_change_ci: tuple[float, float]
    estimates: str  # "unbiased" or "plug-in"
    paired: bool

    @property
    def bias_falls(self) -> bool:
        return self.bias_change_ci[1] < 0

    @property
    def var_rises(self) -> bool:
        return self.var_change_ci[0] > 0

    @property
    def verdict(self) -> str:
        """The rule: "reproduced" when both intervals exclude 0 the paper's way (bias falls and
        variance rises), "partly" when one does, else "not reproduced"."""
        return {2: "reproduced", 1: "partly", 0: "not reproduced"}[self.bias_falls + self.var_rises]

    def describe(self) -> str:
        (bl, bh), (vl, vh) = self.bias_change_ci, self.var_change_ci
        return (f"bias change {self.bias_change:+.3g} (95% CI {bl:+.3g} … {bh:+.3g}), variance change "
                f"{self.var_change:+.3g} (95% CI {vl:+.3g} … {vh:+.3g}), {self.estimates} estimates, "
                f"{'paired' if self.paired else 'independent'} bootstrap over students")


def bias_variance_trend(gram_small: np.ndarray, gram_large: np.ndarray, *, paired: bool = True,
                        unbiased: bool = True, num_bootstrap: int = NUM_BOOTSTRAP, seed: int = 0) -> SizeTrend:
    """Does bias fall and variance rise from the smallest to the largest model? (paper, Fig. 3)

    Statistic: E_bias(large) - E_bias(small) and E_var(large) - E_var(small), unbiased finite-K
    estimates (plug-in with ``unbiased=False``), at one N. Error: bootstrap of each
    difference over students; ``paired`` (the default: the sizes' students were trained on the
    same K datasets, student i of each size on dataset i, as ``bias_variance`` does) resamples
    the same dataset indices for both sizes, else each size's students independently; the
    interval is the module's rule with K the smaller of the two sizes' K. Rule: bias
    falls when the 95% interval of its change lies below 0, variance rises when that of its
    change lies above 0; "reproduced" needs both, "partly" one (:attr:`SizeTrend.verdict`).
    gram_small, gram_large: :func:`residual_gram` of each size, (K, K) and (K', K').
    """
    small, large = _check_gram(gram_small), _check_gram(gram_large)
    if paired and small.shape != large.shape:
        raise PFDistError(f"paired students need the same K for both sizes (got {small.shape[0]} and "
                          f"{large.shape[0]}); pass paired=False for students on unrelated datasets.")
    _check_num_bootstrap(num_bootstrap)
    rng = np.random.default_rng(seed)
    w_small = _resample_weights(small.shape[0], num_bootstrap, rng)
    w_large = w_small if paired else _resample_weights(large.shape[0], num_bootstrap, rng)
    b, v = ("e_bias_unbiased", "e_var_unbiased") if unbiased else ("e_bias", "e_var")
    point_s = _terms(small, np.full((1, small.shape[0]), 1 / small.shape[0]))
    point_l = _terms(large, np.full((1, large.shape[0]), 1 / large.shape[0]))
    boot_s, boot_l = _terms(small, w_small), _terms(large, w_large)
    kmin = min(small.shape[0], large.shape[0])
    d_bias, d_var = float(point_l[b][0] - point_s[b][0]), float(point_l[v][0] - point_s[v][0])
    return SizeTrend(d_bias, _interval(d_bias, boot_l[b] - boot_s[b], kmin),
                     d_var, _interval(d_var, boot_l[v] - boot_s[v], kmin),
                     "unbiased" if unbiased else "plug-in", paired)
