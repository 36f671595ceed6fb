"""Early learning and double descent judged in their regime and with the training loss."""

import math

import numpy as np
import pytest

from pfdist.analysis import classify_regime, judge_dynamics, loss_trend
from pfdist.errors import PFDistError

EPOCHS = np.arange(0, 52, 2.0)
SE = 0.005


def _run(e_gen, loss, share, *, seed=0, se=SE):
    """Rows of one run: E_gen(epoch) and the train loss with noise, the copy share with a 95% interval."""
    rng = np.random.default_rng(seed)
    rows = []
    for e, g, ell, s in zip(EPOCHS, e_gen(EPOCHS), loss(EPOCHS), share(EPOCHS)):
        half = 1.96 * math.sqrt(max(s * (1 - s), 1e-4) / 1000)
        rows.append({"student": "s", "params": 10, "n": 64, "epoch": float(e), "e_gen": g + se * rng.normal(),
                     "e_gen_stderr": se, "train_loss": ell * (1 + 0.01 * rng.normal()), "mem_ratio": s,
                     "mem_ratio_ci_low": max(s - half, 0.0), "mem_ratio_ci_high": min(s + half, 1.0)})
    return rows


def _early(e):  # descends to a minimum near epoch 16, then rises by 0.25
    return 1.2 - 0.4 * (1 - np.exp(-e / 6)) + 0.25 * np.clip(e - 16, 0, None) / 34


def _falling(e):
    return np.exp(-e / 30)


def _flat(e):
    return np.full_like(e, 0.5)


def _partial_copies(e):  # the copy share climbs to 0.4: between the plateaus
    return 0.4 * e / e[-1]


def test_early_learning_with_falling_loss_in_the_transition_regime_is_detected():
    v = judge_dynamics(_run(_early, _falling, _partial_copies))
    assert v.regime.label == "transition" and v.report.early_learning
    assert v.early_learning == "detected", v.reason
    assert v.early_learning_loss.falling and v.early_learning_loss.first_epoch == v.report.min_epoch


def test_rising_e_gen_with_a_flat_loss_is_not_early_learning():
    for seed in range(20):
        v = judge_dynamics(_run(_early, _flat, _partial_copies, seed=seed))
        assert v.report.early_learning and v.regime.label == "transition"
        assert v.early_learning != "detected", v.reason


def test_outside_the_transition_regime_there_is_no_verdict():
    generalizes = judge_dynamics(_run(_early, _falling, lambda e: np.zeros_like(e)))
    assert generalizes.regime.label == "generalization"
    assert generalizes.early_learning == "not in the transition regime"
    copies = judge_dynamics(_run(_early, _falling, lambda e: np.full_like(e, 0.96)), memorization=(0.94, 0.97))
    assert copies.regime.label == "memorization" and copies.early_learning == "not in the transition regime"
    # The same run judged at its first trained epoch (copy share 0.016 there): still transition.
    assert judge_dynamics(_run(_early, _falling, _partial_copies), at="first").regime.label == "transition"


def _bump(e):  # 0.80 at epoch 14, a bump to 0.86 near 26, then 0.74 by 50
    return 1.2 - 0.4 * (1 - np.exp(-e / 4)) + 0.07 * np.exp(-((e - 26) / 5) ** 2) - 0.06 * np.clip(e - 30, 0, None) / 20


def test_double_descent_is_judged_the_same_way():
    no_copies = lambda e: np.zeros_like(e)  # noqa: E731
    v = judge_dynamics(_run(_bump, _falling, no_copies, se=0.003))
    assert v.report.double_descent is not None and v.double_descent == "detected", v.reason
    bump_in_loss = lambda e: np.exp(-e / 30) * (1 + 0.5 * np.exp(-((e - 26) / 5) ** 2))  # noqa: E731
    assert judge_dynamics(_run(_bump, bump_in_loss, no_copies, se=0.003)).double_descent == "not detected"
    elsewhere = judge_dynamics(_run(_bump, _falling, _partial_copies, se=0.003))
    assert elsewhere.double_descent == "not in the generalization regime"
    assert judge_dynamics(_run(_bump, _falling, _partial_copies, se=0.003),
                          double_descent_regime="transition").double_descent == "detected"


def test_a_flat_noisy_loss_is_called_falling_at_the_nominal_rate():
    rng, calls = np.random.default_rng(5), 0
    for _ in range(400):
        trend = loss_trend(EPOCHS, 0.5 * np.exp(0.02 * rng.normal(size=EPOCHS.size)), start=10, end=50)
        calls += trend.falling
    assert calls <= 20, calls  # one-sided 2.5%: about 10 of 400
    assert loss_trend(EPOCHS, _falling(EPOCHS), start=10, end=50).slope == pytest.approx(-1 / 30)
    assert loss_trend(EPOCHS, _falling(EPOCHS), start=10, end=13) is None  # two epochs: no trend


def test_regime_rule_and_bad_input():
    assert classify_regime(0.5, (0.4, 0.6)).label == "transition"
    assert classify_regime(0.0, (1e-19, 0.004)).label == "generalization"
    assert classify_regime(0.5, (0.0, 1.0)).label == "undetermined"
    assert classify_regime(1.0, (0.9, 1.1), generalization=(0.5, 0.6), memorization=(1.05, 1.2)).label == "memorization"
    with pytest.raises(PFDistError, match="below the memorization plateau"):
        classify_regime(0.5, (0.4, 0.6), generalization=1.0, memorization=0.0)
    rows = _run(_early, _falling, _partial_copies)
    with pytest.raises(PFDistError, match="one run"):
        judge_dynamics(rows + [dict(rows[0], n=128)])
    with pytest.raises(PFDistError, match="no interval"):
        judge_dynamics([{k: v for k, v in r.items() if not k.startswith("mem_ratio_")} for r in rows])
    with pytest.raises(PFDistError, match="at must be"):
        judge_dynamics(rows, at="middle")
