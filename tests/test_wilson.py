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
