"""The copy share's interval is scipy's Wilson interval, which is the textbook closed form."""

import math

import pytest

from pfdist.protocol import wilson_interval


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (412, 1000), (1, 1)])
def test_wilson_matches_the_closed_form(k, n):
    z = 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_wilson_of_no_trials_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k, n, confidence", [(0, 10, 0.95), (3, 10, 0.9), (412, 1000, 0.99), (1, 1, 0.95), (7, 7, 0.5)])
def test_wilson_matches_scipy(k, n, confidence):
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k, n, confidence) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_a_training_process_imports_no_scipy_or_matplotlib():
    """A worker's start-up cost: scipy.stats and matplotlib took 1-2 CPU seconds per process."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from pfdist.experiments.engines.job import UnitJob; from pfdist.protocol import wilson_interval; "
            "wilson_interval(3, 10); print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'matplotlib'}))")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**__import__("os").environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
