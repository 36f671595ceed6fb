"""Floors with intervals and E_mem's saturation with the size of the gap, on synthetic curves."""

import math

import numpy as np
import pytest

from pfdist.analysis import floor_order, floor_verdict, floors, memorization_gap, reached, saturation_verdict
from pfdist.errors import PFDistError

NS = [2**k for k in range(1, 15)]
SE = 0.005


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _rows(rng, params, *, mem_mid, gen_mid, floor=0.75, se=SE):
    """E_mem rises 0.9 -> 1.25 around log2 N = mem_mid; E_gen falls 1.22 -> floor around gen_mid."""
    x = np.log2(NS)
    mem = 0.9 + 0.35 * _sigmoid(2 * (x - mem_mid))
    gen = floor + (1.22 - floor) * (1 - _sigmoid(2 * (x - gen_mid)))
    return [{"params": params, "n": n, "e_mem": m + se * rng.normal(), "e_mem_stderr": se,
             "e_gen": g + se * rng.normal(), "e_gen_stderr": se} for n, m, g in zip(NS, mem, gen)]


def test_the_gap_in_octaves_is_measured_with_its_range():
    """E_gen's transition 3.5 octaves after E_mem's: called earlier, the range holds 3.5 (the
    range brackets the grid, it is not a calibrated interval: about 90% here)."""
    rng, inside, earlier = np.random.default_rng(0), 0, 0
    for _ in range(100):
        (g,) = memorization_gap(_rows(rng, 10, mem_mid=4.0, gen_mid=7.5))
        lo, hi = g.gap_range
        assert g.rises and lo <= g.gap <= hi
        inside += lo < 3.5 < hi
        earlier += g.order == "earlier"
    assert inside >= 80 and earlier >= 85, (inside, earlier)


def test_no_gap_is_rarely_called_earlier():
    rng = np.random.default_rng(1)
    gaps = [memorization_gap(_rows(rng, 10, mem_mid=6.0, gen_mid=6.0))[0] for _ in range(100)]
    assert sum(g.order == "earlier" for g in gaps) <= 8
    assert sum(saturation_verdict([g]) == "reproduced" for g in gaps) <= 8
    assert saturation_verdict([]) == "not measured"


def test_reached_brackets_and_open_ends():
    r = reached([1, 2, 4, 8], [0.0, 0.5, 1.0, 1.0], [0.01] * 4, extreme="max")
    assert (r.n, r.n_before, r.n_stays, r.level) == (4, 2, 4, 1.0) and r.log2_bracket == (1.0, 2.0)
    noisy = reached([1, 2, 4, 8, 16], [0.0, 1.0, 0.5, 1.01, 1.0], [0.01] * 5, extreme="max")
    assert (noisy.n, noisy.n_stays) == (2, 8)  # touches the plateau at 2, stays on it from 8
    edge = reached([1, 2, 4], [3.0, 2.0, 1.0], [0.01] * 3, extreme="min")
    assert edge.n == 4 and edge.log2_bracket == (1.0, math.inf)  # may go on falling beyond the grid
    rows = [{"params": 1, "n": n, "e_mem": m, "e_mem_stderr": 0.01, "e_gen": g, "e_gen_stderr": 0.01}
            for n, m, g in zip([1, 2, 4], [1.0, 1.0, 1.0], [3.0, 2.0, 1.0])]
    (g,) = memorization_gap(rows)
    assert g.gap_range == (1.0, math.inf) and not g.rises and g.order == "earlier"
    with pytest.raises(PFDistError, match="at least 3"):
        memorization_gap(rows[:2])
    with pytest.raises(PFDistError, match="finite"):
        reached([1, 2], [1.0, math.nan], [0.1, 0.1], extreme="max")


def _floor_rows(rng, floors_by_size, se=0.01):
    rows = []
    for params, floor in floors_by_size.items():
        for n, value in ((8, 1.22), (4096, floor)):
            rows.append({"params": params, "n": n, "e_gen": value + se * rng.normal(), "e_gen_stderr": se})
    return rows


def test_ordered_floors_are_found_and_equal_ones_rarely():
    rng = np.random.default_rng(2)
    f = floors(_floor_rows(rng, {100: 0.9, 1000: 0.8, 10_000: 0.7}))
    assert [x.params for x in f] == [100, 1000, 10_000] and all(x.falls for x in f)
    assert all(o.order == "higher" for o in floor_order(f)) and floor_verdict(f) == "reproduced"
    assert f[0].ci == pytest.approx((f[0].value - 0.0196, f[0].value + 0.0196), rel=1e-3)
    calls = [floor_order(floors(_floor_rows(rng, {100: 0.8, 1000: 0.8})))[0].order for _ in range(400)]
    assert calls.count("higher") + calls.count("lower") <= 30, calls.count("indistinguishable")  # 5% two-sided
    reversed_ = floors(_floor_rows(rng, {100: 0.7, 1000: 0.9}))
    assert floor_order(reversed_)[0].order == "lower" and floor_verdict(reversed_) == "partly"
    flat = floors(_floor_rows(rng, {100: 1.22, 1000: 1.22}))
    assert floor_verdict(flat) == "not reproduced" and floor_verdict([]) == "not measured"


def test_floor_uses_the_row_s_interval_and_refuses_missing_errors():
    rows = [{"params": 1, "n": 2, "e_gen": 1.2, "e_gen_stderr": 0.01},
            {"params": 1, "n": 4, "e_gen": 0.8, "e_gen_stderr": 0.01, "e_gen_ci_low": 0.78, "e_gen_ci_high": 0.83}]
    assert floors(rows)[0].ci == (0.78, 0.83)
    with pytest.raises(PFDistError, match="e_gen_stderr"):
        floors([rows[0], dict(rows[1], e_gen_stderr=math.nan)])
    with pytest.raises(PFDistError, match="at least 2"):
        floors(rows[:1])
