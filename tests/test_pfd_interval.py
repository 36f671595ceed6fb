"""The interval of a PFD: Student-t for small M, the normal interval in the limit."""

import math

import numpy as np
import pytest
import torch

import pfdist
from pfdist.distance import Z_95, t_quantile_95


def _covers(per_sample: torch.Tensor, true_mean: float) -> bool:
    lo, hi = pfdist.PFDResult.from_per_sample(per_sample, seed=0).ci
    return lo <= math.sqrt(true_mean) <= hi


def test_small_m_interval_covers_at_its_nominal_rate():
    """M = 5 squared distances drawn from N(50, 1): the t interval of their mean covers 95% of
    the time (exact for normal values); the normal quantile's covers about 88%."""
    m, reps, mean = 5, 8000, 50.0
    draws = torch.from_numpy(np.random.default_rng(0).normal(mean, 1.0, (reps, m)))
    coverage = np.mean([_covers(d, mean) for d in draws])
    se = math.sqrt(0.95 * 0.05 / reps)
    assert abs(coverage - 0.95) < 4 * se, coverage
    # The normal quantile on the same draws under-covers, which is what the t quantile fixes.
    s = draws.std(1, unbiased=True) / math.sqrt(m)
    normal = ((draws.mean(1) - mean).abs() <= Z_95 * s).double().mean().item()
    assert normal < 0.90, normal


@pytest.mark.parametrize("df", [1, 2, 4, 10, 50, 99, 100, 150, 1000, 10**6])
def test_t_quantile_matches_scipy_and_tends_to_the_normal_quantile(df):
    stats = pytest.importorskip("scipy.stats")
    assert t_quantile_95(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    assert t_quantile_95(df) > Z_95


def test_large_m_interval_is_the_normal_interval():
    per_sample = torch.from_numpy(np.random.default_rng(1).exponential(2.0, 200_000))
    r = pfdist.PFDResult.from_per_sample(per_sample, seed=0)
    mean, se = per_sample.mean().item(), per_sample.std().item() / math.sqrt(per_sample.numel())
    normal = (math.sqrt(mean - Z_95 * se), math.sqrt(mean + Z_95 * se))
    # t_{0.975, M-1} = 1.96 (1 + (1.96^2 + 1) / (4 M) + ...): 6e-6 wider at M = 200 000.
    assert r.ci == pytest.approx(normal, rel=1e-5)
    assert r.ci[0] < normal[0] and r.ci[1] > normal[1]
    assert abs(t_quantile_95(10**9) - Z_95) < 1e-8
