"""Bias and variance over students with bootstrap intervals, and the model-size verdict."""

import numpy as np
import pytest
import torch

from pfdist.analysis import bias_variance_ci, bias_variance_intervals, bias_variance_trend, residual_gram
from pfdist.errors import PFDistError
from pfdist.protocol.bias_variance import decompose


def _students(rng, k, bias_field, var, *, m, f):
    """K students = data + a shared bias field + independent noise of variance ``var`` per sample."""
    return [torch.from_numpy(bias_field + np.sqrt(var / f) * rng.normal(size=(m, f))) for _ in range(k)]


def test_point_values_are_decompose_s():
    rng = np.random.default_rng(0)
    teacher = torch.from_numpy(rng.normal(size=(40, 3, 2)))
    students = [teacher + torch.from_numpy(rng.normal(0.3, 0.5, size=(40, 3, 2))) for _ in range(5)]
    bv, ci = decompose(teacher, students, batch_size=7), bias_variance_intervals(teacher, students, batch_size=9)
    assert ci.e_bias == pytest.approx(bv.e_bias, rel=1e-10) and ci.e_var == pytest.approx(bv.e_var, rel=1e-10)
    assert ci.e_var_unbiased == pytest.approx(bv.e_var_unbiased, rel=1e-10)
    assert ci.e_bias_unbiased == pytest.approx(bv.e_bias_unbiased, rel=1e-10)
    for name in ("e_bias", "e_var", "e_bias_unbiased", "e_var_unbiased"):
        lo, hi = getattr(ci, f"{name}_ci")
        assert 0 <= lo < getattr(ci, name) < hi
    again = bias_variance_ci(residual_gram(teacher, students, batch_size=9), seed=0)
    assert again == ci  # seeded: the same intervals on every call
    assert bias_variance_ci(residual_gram(teacher, students), seed=1).e_var_ci != ci.e_var_ci


def test_interval_covers_the_true_variance():
    """K = 6 students with independent noise of known variance: the interval of the unbiased
    E_var holds it in about 95% of repetitions (at least 88% of 200)."""
    rng, m, f, var, hits = np.random.default_rng(1), 64, 2, 0.3, 0
    teacher = torch.zeros(m, f)
    for rep in range(200):
        ci = bias_variance_ci(residual_gram(teacher, _students(rng, 6, 0.5, var, m=m, f=f)), seed=rep,
                              num_bootstrap=500)
        hits += ci.e_var_unbiased_ci[0] <= var <= ci.e_var_unbiased_ci[1]
    assert hits / 200 >= 0.88, hits


def test_no_effect_is_rarely_called_a_trend():
    """Two sizes with the same bias and variance (students of size i and j on dataset i share part
    of their noise): each direction is claimed in at most ~2.5% (6% allowed) of 200 repetitions,
    the finding "reproduced" in under 2%."""
    rng, m, f, k = np.random.default_rng(2), 32, 2, 4
    teacher, counts = torch.zeros(m, f), {"bias": 0, "var": 0, "reproduced": 0}
    for rep in range(200):
        field = torch.from_numpy(rng.normal(size=(m, f)) * 0.7)
        small = _students(rng, k, field.numpy(), 0.3, m=m, f=f)
        large = [field + 0.5 * (s - field) + torch.from_numpy(np.sqrt(0.75 * 0.3 / f) * rng.normal(size=(m, f)))
                 for s in small]
        trend = bias_variance_trend(residual_gram(teacher, small), residual_gram(teacher, large), seed=rep,
                                    num_bootstrap=500)
        counts["bias"] += trend.bias_falls
        counts["var"] += trend.var_rises
        counts["reproduced"] += trend.verdict == "reproduced"
    assert counts["bias"] <= 12 and counts["var"] <= 12 and counts["reproduced"] <= 4, counts


@pytest.mark.parametrize("k", [4, 8])
def test_the_paper_s_effect_is_detected(k):
    """Bias 0.78 -> 0.68 and variance 0.063 -> 0.099 (the paper's numbers at N = 2^16) with K
    students on 256 seeds: reproduced in at least 45 of 50 repetitions."""
    rng, m, f, found = np.random.default_rng(3), 256, 4, 0
    teacher = torch.zeros(m, f)
    for rep in range(50):
        u = rng.normal(size=(m, f))
        u /= np.sqrt((u**2).sum() / m)
        small, large = _students(rng, k, 0.78 * u, 0.063, m=m, f=f), _students(rng, k, 0.68 * u, 0.099, m=m, f=f)
        trend = bias_variance_trend(residual_gram(teacher, small), residual_gram(teacher, large), seed=rep,
                                    num_bootstrap=500)
        assert trend.bias_change == pytest.approx(-0.10, abs=0.03)
        found += trend.verdict == "reproduced"
    assert found >= 45, found


def test_bad_input_says_what_to_do():
    g = np.eye(3)
    with pytest.raises(PFDistError, match="paired=False"):
        bias_variance_trend(g, np.eye(4))
    assert not bias_variance_trend(g, np.eye(4) * 2, paired=False).bias_falls
    with pytest.raises(PFDistError, match="symmetric"):
        bias_variance_ci(np.triu(np.ones((3, 3))))
    with pytest.raises(PFDistError, match="num_bootstrap"):
        bias_variance_ci(g, num_bootstrap=10)
    with pytest.raises(PFDistError, match="at least 2 students"):
        residual_gram(torch.zeros(3, 2), [torch.zeros(3, 2)])
