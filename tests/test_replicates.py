"""Training-dynamics replicates: the mean curve over seeds with its between-seed interval."""

import numpy as np

from pfdist.analysis import detect_dynamics, detect_run_dynamics, mean_over_seeds

EPOCHS = np.arange(10.0, 510.0, 10.0)
SE = 0.003


def rows_of(curves):
    return [dict(student="u8", params=100, n=512, seed=s, epoch=e, e_gen=v, e_gen_stderr=SE, e_mem=1.0,
                 e_mem_stderr=SE, train_loss=0.5)
            for s, curve in enumerate(curves) for e, v in zip(EPOCHS, curve)]


def test_mean_over_seeds_is_the_mean_with_its_standard_error():
    rng = np.random.default_rng(0)
    curves = 1.0 + rng.normal(0, 0.05, (3, EPOCHS.size))
    mean = sorted(mean_over_seeds(rows_of(curves)), key=lambda r: r["epoch"])
    assert len(mean) == EPOCHS.size and all(r["seeds"] == 3 and "seed" not in r for r in mean)
    np.testing.assert_allclose([r["e_gen"] for r in mean], curves.mean(0))
    between = curves.std(0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose([r["e_gen_stderr"] for r in mean], np.maximum(between, SE / np.sqrt(3)))
    one = mean_over_seeds(rows_of(curves[:1]))  # one seed passes through unchanged
    assert [r["e_gen"] for r in one] == list(curves[0]) and all(r["e_gen_stderr"] == SE for r in one)


def test_one_noisy_point_of_one_seed_cannot_make_a_bump():
    rng = np.random.default_rng(1)
    base = 0.75 + 0.45 * np.exp(-EPOCHS / 80)
    curves = base + rng.normal(0, SE, (3, EPOCHS.size))
    curves[0, EPOCHS == 200] += 0.1  # one bad evaluation of one seed
    assert detect_dynamics(EPOCHS, curves[0], e_gen_stderr=np.full(EPOCHS.size, SE)).double_descent is not None
    report = detect_run_dynamics(rows_of(curves))["u8 N=512"]
    assert report.absent, report.reason


def test_a_bump_in_every_seed_is_found_on_the_mean():
    rng = np.random.default_rng(2)
    shape = 0.74 + 0.5 * np.exp(-EPOCHS / 40) + 0.05 * np.exp(-(((EPOCHS - 200) / 50) ** 2))
    curves = shape + rng.normal(0, 0.004, (3, EPOCHS.size))
    report = detect_run_dynamics(rows_of(curves))["u8 N=512"]
    assert report.double_descent is not None and 170 <= report.double_descent.peak_epoch <= 230
