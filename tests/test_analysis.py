"""Collapse fit and dynamics detection on synthetic curves with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from pfdist.analysis import collapse_x, detect_dynamics, detect_run_dynamics, dynamics_key, fit_collapse
from pfdist.errors import PFDistError

SIZES = np.array([2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22])
FLOORS = np.array([0.82, 0.79, 0.77, 0.75])  # smaller models have a higher floor (paper)
HIGH, MIDPOINT, WIDTH = 1.22, 0.0, 1.0


def synthetic_collapse(alpha, *, noise=0.01, seed=0, floors=FLOORS, log2_n=np.arange(6, 17)):
    """Points drawn from the fitted model itself, with Gaussian noise of known stderr."""
    n, params = (a.ravel() for a in np.meshgrid(2.0 ** log2_n, SIZES))
    low = np.repeat(floors, len(log2_n))
    e_gen = low + (HIGH - low) * expit(-(collapse_x(n, params, alpha) - MIDPOINT) / WIDTH)
    e_gen = e_gen + np.random.default_rng(seed).normal(0.0, noise, e_gen.shape)
    return n, params, e_gen, np.full(e_gen.shape, noise)


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_fit_recovers_alpha_within_ci(alpha):
    n, params, e_gen, se = synthetic_collapse(alpha, seed=1)
    fit = fit_collapse(n, params, e_gen, e_gen_stderr=se)
    lo, hi = fit.alpha_ci
    assert lo <= alpha <= hi
    assert not lo <= alpha - 0.2 <= hi and not lo <= alpha + 0.2 <= hi
    assert fit.midpoint_ci[0] <= MIDPOINT <= fit.midpoint_ci[1]
    assert fit.sizes == tuple(int(s) for s in SIZES) and fit.n_points == n.size and fit.n_sizes == 4
    np.testing.assert_allclose(fit.plateau_low, FLOORS, atol=0.03)
    assert abs(fit.plateau_high - HIGH) < 0.03 and fit.r2 > 0.97 and fit.rmse < 0.015
    np.testing.assert_allclose(fit.predict(n, params), e_gen, atol=0.04)


def test_fit_noise_free_is_exact_and_shared_floor_option():
    n, params, e_gen, _ = synthetic_collapse(0.5, noise=0.0, floors=np.full(4, 0.78))
    fit = fit_collapse(n, params, e_gen, per_size_floor=False)
    assert abs(fit.alpha - 0.5) < 1e-4 and abs(fit.midpoint - MIDPOINT) < 1e-3 and fit.r2 > 0.9999
    assert fit.alpha_ci[0] <= fit.alpha <= fit.alpha_ci[1] and len(set(fit.plateau_low)) == 1


def test_fit_without_stderr():
    n, params, e_gen, _ = synthetic_collapse(0.5, seed=2)
    fit = fit_collapse(n, params, e_gen)
    assert fit.alpha_ci[0] <= 0.5 <= fit.alpha_ci[1]


def test_collapse_x():
    assert collapse_x(2 ** 10, 2 ** 20, 0.5) == 0.0
    np.testing.assert_allclose(collapse_x([64, 128], 2 ** 10, 0.3), [3.0, 4.0])


def test_fit_errors_are_clear():
    n, params, e_gen, se = synthetic_collapse(0.5)
    one = params == SIZES[0]
    with pytest.raises(PFDistError, match="at least 2 model sizes"):
        fit_collapse(n[one], params[one], e_gen[one])
    few = np.isin(n, [64, 128])
    with pytest.raises(PFDistError, match="at least 3 values of N"):
        fit_collapse(n[few], params[few], e_gen[few])
    with pytest.raises(PFDistError, match="same length"):
        fit_collapse(n, params[:-1], e_gen)
    with pytest.raises(PFDistError, match="positive"):
        fit_collapse(-n, params, e_gen)
    with pytest.raises(PFDistError, match="too few points"):
        sel = np.isin(n, [64, 1024, 65536]) & np.isin(params, SIZES[:2])
        fit_collapse(n[sel], params[sel], e_gen[sel])
    fit = fit_collapse(n, params, e_gen, e_gen_stderr=se)
    with pytest.raises(PFDistError, match="no fitted floor"):
        fit.predict(1024, 12345)


EPOCHS = np.arange(10.0, 510.0, 10.0)


def u_shape(e):
    """Transition regime (paper: min ~0.83 at epoch ~85, ~1.08 by 500)."""
    return np.where(e < 85, 0.83 + 0.4 * ((85 - e) / 85) ** 2, 0.83 + 0.25 * (1 - np.exp(-(e - 85) / 150)))


def double_descent(e):
    """Generalization regime (paper: ~0.80 at ~110, bump near 200, ~0.76 at 500)."""
    return 0.74 + 0.5 * np.exp(-e / 40) + 0.05 * np.exp(-(((e - 200) / 50) ** 2))


@pytest.mark.parametrize("noise", [0.0, 0.004])
def test_early_learning(noise):
    y = u_shape(EPOCHS) + np.random.default_rng(0).normal(0, noise, EPOCHS.size)
    r = detect_dynamics(EPOCHS, y, e_gen_stderr=np.full(EPOCHS.size, 0.003))
    assert r.kind == "early_learning" and r.early_learning and r.double_descent is None
    assert 60 <= r.min_epoch <= 120 and r.depth > 0.2 and not r.absent


@pytest.mark.parametrize("noise", [0.0, 0.004])
def test_double_descent(noise):
    y = double_descent(EPOCHS) + np.random.default_rng(1).normal(0, noise, EPOCHS.size)
    r = detect_dynamics(EPOCHS, y, e_gen_stderr=np.full(EPOCHS.size, 0.003))
    assert r.kind == "double_descent" and not r.early_learning
    dd = r.double_descent
    assert 100 <= dd.first_min_epoch < dd.peak_epoch < dd.second_min_epoch
    assert 170 <= dd.peak_epoch <= 230 and dd.second_min_value < dd.first_min_value < dd.peak_value


def test_monotone_and_flat_are_absent():
    r = detect_dynamics(EPOCHS, 0.75 + 0.45 * np.exp(-EPOCHS / 80), e_gen_stderr=np.full(EPOCHS.size, 0.003))
    assert r.absent and "no significant rise" in r.reason and r.min_epoch == EPOCHS[-1]
    rng = np.random.default_rng(2)
    for seed_se in (None, np.full(EPOCHS.size, 0.01)):
        for _ in range(20):
            r = detect_dynamics(EPOCHS, 1.23 + rng.normal(0, 0.01, EPOCHS.size), e_gen_stderr=seed_se)
            assert r.absent, r.reason
    assert "too few epochs" in detect_dynamics([1, 2, 3], [1.0, 0.5, 1.0]).reason


def test_dynamics_errors_and_rows():
    with pytest.raises(PFDistError, match="strictly increasing"):
        detect_dynamics([1, 1, 2], [1.0, 1.0, 1.0])
    with pytest.raises(PFDistError, match="same length"):
        detect_dynamics([1, 2], [1.0])
    with pytest.raises(PFDistError, match="finite"):
        detect_dynamics([1, 2], [1.0, np.nan])
    rows = [dict(student="w8", params=100, n=64, epoch=e, e_gen=v, e_gen_stderr=0.003)
            for e, v in zip(EPOCHS[::-1], u_shape(EPOCHS)[::-1])]
    reports = detect_run_dynamics(rows)
    assert list(reports) == [dynamics_key("w8", 64)] and reports["w8 N=64"].early_learning
