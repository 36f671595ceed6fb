"""collapse_report on synthetic MtoG curves with a known collapse, none, and a drifting exponent.

Curves: E_gen = low_s + (1.2 − low_s) sigmoid(−(log2 N − m_s) / w), w = 1, four sizes |θ| = 2^10 …
2^16, log2 N = 4 … 15, Gaussian noise of sd 0.02 (range of E_gen ≈ 0.8). The midpoints m_s are
3 + α log2 |θ| for a collapse, or step by 0.77, 0.38, 0.13 × 2 octaves for a drifting exponent.

Rates use fixed seeds (≈ 0.07 s a report without subsets, so the file stays near ten seconds).
Measured over 200 seeds at this noise: α = 0.5 is called "reproduced" in 91.5% of seeds (the α
interval held 0.5 in 96.5%, the collapse test rejected in 5.5%), α = 0 in none (the test rejected
2.5%), the drift in none (the test rejected 100%). Seeds 0-19 give 19/20 for α = 0.5; the bar of
the 90% rule is 18/20, which another set of 20 seeds would miss about one time in four at a true
rate of 91.5%, so a failure here after a change means: rerun the 200-seed rate before believing
it. α = 0 (reproduced in none of 200, "not reproduced" in 98.5%) and the drift (rejected with
p ~ 1e-8) take 10 seeds each. benchmarks/bench_collapse_rates.py measures the 200-seed rates.
"""

from dataclasses import replace

import numpy as np
import pytest

from pfdist.analysis import collapse_report
from pfdist.analysis.collapse_report import _verdict
from pfdist.errors import PFDistError

LOG_P = np.array([10.0, 12.0, 14.0, 16.0])
LOG_N = np.arange(4.0, 16.0)
SEEDS = range(20)
DRIFT = np.cumsum([8.0, 2 * 0.77, 2 * 0.38, 2 * 0.13])  # neighbour exponents 0.77, 0.38, 0.13


def curves(seed: int, midpoints, sd: float = 0.02, log_p=LOG_P):
    rng = np.random.default_rng(seed)
    log_n, lp = (a.ravel() for a in np.meshgrid(LOG_N, log_p))
    idx = np.searchsorted(log_p, lp)
    low = np.array([0.5, 0.45, 0.42, 0.4])[idx]
    y = low + (1.2 - low) / (1.0 + np.exp(log_n - np.asarray(midpoints)[idx])) + rng.normal(0.0, sd, log_n.size)
    return 2.0 ** log_n, 2.0 ** lp, y


def reports(midpoints, seeds=SEEDS):
    return [collapse_report(*curves(s, midpoints), subsets=False) for s in seeds]


def test_collapse_at_one_half_is_reproduced():
    rs = reports(3.0 + 0.5 * LOG_P)
    assert sum(r.verdict == "reproduced" for r in rs) >= 18
    assert abs(np.median([r.alpha for r in rs]) - 0.5) < 0.02
    assert sum(r.collapse_p < 0.05 for r in rs) <= 3  # the test's size is ~5%
    assert abs(np.median([r.midpoint_slope for r in rs]) - 0.5) < 0.05  # model-free cross-check


def test_no_size_dependence_is_never_reproduced():
    rs = reports(np.full(4, 9.5), range(10))
    assert not any(r.verdict == "reproduced" for r in rs)
    assert sum(r.verdict == "not reproduced" for r in rs) >= 9  # the α interval holds 0
    assert sum(r.collapse_p < 0.05 for r in rs) <= 2
    assert abs(np.median([r.midpoint_slope for r in rs])) < 0.05


def test_drifting_exponent_is_rejected_and_never_reproduced():
    rs = reports(DRIFT, range(10))
    assert not any(r.verdict == "reproduced" for r in rs)
    assert all(r.collapse_p < 0.05 for r in rs)
    assert all(r.verdict == "partly" for r in rs if r.collapse_p < 0.05)


def test_subsets_have_every_size_and_pair():
    r = collapse_report(*curves(0, DRIFT))
    sizes = {int(2 ** p) for p in LOG_P}
    assert set(r.leave_one_out) == sizes
    assert all(set(e.sizes) == sizes - {k} for k, e in r.leave_one_out.items())
    assert len(r.pairwise) == 6 and all(a < b for a, b in r.pairwise)
    # The drift is what the pairs see: the exponent between neighbouring sizes falls 0.77 → 0.38 → 0.13.
    ordered = sorted(sizes)
    neighbours = [r.pairwise[(a, b)].alpha for a, b in zip(ordered, ordered[1:])]
    assert neighbours[0] > neighbours[1] > neighbours[2]  # each pair's α has a standard error ~0.05
    assert np.allclose(neighbours, [0.77, 0.38, 0.13], atol=0.12)
    assert set(r.free_midpoints) == set(r.midpoints) == sizes
    assert np.allclose(sorted(r.free_midpoints.values()), DRIFT, atol=0.15)
    # Subsets do not change the verdict.
    assert r.verdict == collapse_report(*curves(0, DRIFT), subsets=False).verdict


def test_two_sizes_cannot_test_one_alpha():
    r = collapse_report(*curves(1, 3.0 + 0.5 * LOG_P[:2], log_p=LOG_P[:2]))
    assert np.isnan(r.collapse_p) and r.collapse_df[0] == 0
    assert r.leave_one_out == {} and len(r.pairwise) == 1
    assert r.verdict == "partly" and "3 or more sizes" in r.reason


def test_stderr_weights_are_relative():
    n, p, y = curves(2, 3.0 + 0.5 * LOG_P)
    plain = collapse_report(n, p, y, subsets=False)
    weighted = collapse_report(n, p, y, np.full(y.size, 0.02), subsets=False)
    assert weighted.weighted and not plain.weighted
    assert weighted.alpha == pytest.approx(plain.alpha, abs=1e-4)
    assert weighted.collapse_p == pytest.approx(plain.collapse_p, rel=1e-3)


def test_verdict_rules():
    fit = collapse_report(*curves(3, 3.0 + 0.5 * LOG_P), subsets=False).fit
    assert _verdict(replace(fit, alpha_ci=(0.4, 0.6)), 0.5)[0] == "reproduced"
    assert _verdict(replace(fit, alpha_ci=(0.4, 0.6)), 0.01)[0] == "partly"  # test rejects
    assert _verdict(replace(fit, alpha_ci=(0.2, 0.4)), 0.5)[0] == "partly"  # 0.5 outside
    assert _verdict(replace(fit, alpha_ci=(-0.1, 0.6)), 0.5)[0] == "not reproduced"  # holds 0
    assert _verdict(replace(fit, alpha_ci=(0.4, 0.6)), float("nan"))[0] == "partly"  # 2 sizes
    assert _verdict(replace(fit, degenerate=("width w 20 at its bound 20",)), 0.5)[0] == "not measured"


@pytest.mark.parametrize("change, match", [
    (lambda n, p, y: (n[:-1], p, y), "same length"),
    (lambda n, p, y: (n, np.full_like(p, p[0]), y), "at least 2 model sizes"),
    (lambda n, p, y: (n, p, np.where(np.arange(y.size) == 3, np.nan, y)), "non-finite"),
    (lambda n, p, y: (np.where(np.arange(n.size) == 3, np.nan, n), p, y), "positive and finite"),
])
def test_bad_input_is_one_clear_error(change, match):
    with pytest.raises(PFDistError, match=match):
        collapse_report(*change(*curves(0, DRIFT)))
