"""Real vs synthetic training data: the verdict is computed from the table, with its error."""

import numpy as np
import pytest

from pfdist.analysis import compare_real_synthetic
from pfdist.errors import PFDistError
from pfdist.protocol import wilson_interval

NS = (8, 32, 128, 512)
M = 1000  # evaluation samples behind each copy share


def _row(rng, n, source, e_mem, share, se=0.01):
    copies = int(rng.binomial(M, share))
    lo, hi = wilson_interval(copies, M)
    return {"student": "unet-8", "params": 5000, "n": n, "train_data": source, "e_mem": e_mem + se * rng.normal(),
            "e_mem_stderr": se, "mem_ratio": copies / M, "mem_ratio_ci_low": lo, "mem_ratio_ci_high": hi,
            "e_gen": 1.0}


def _table(rng, *, real_shift=0.0, share_shift=0.0):
    """Both sides share E_mem 0.9 -> 1.3 and copy share 0.95 -> 0 along N; real data shifted."""
    rows = []
    for n, e_mem, share in zip(NS, (0.9, 1.1, 1.25, 1.3), (0.95, 0.7, 0.1, 0.0)):
        rows.append(_row(rng, n, "teacher", e_mem, share))
        rows.append(_row(rng, n, "digits", e_mem + real_shift, min(max(share + share_shift, 0.0), 1.0)))
    return rows


def test_no_difference_is_rarely_called_one():
    rng = np.random.default_rng(0)
    verdicts = [compare_real_synthetic(_table(rng)).verdict for _ in range(300)]
    assert verdicts.count("no significant difference") >= 282, {v: verdicts.count(v) for v in set(verdicts)}


def test_a_clear_difference_is_detected_with_its_direction():
    rng = np.random.default_rng(1)
    more = compare_real_synthetic(_table(rng, real_shift=-0.08))  # real students closer to their copies
    assert more.verdict == "real memorizes more"
    assert all(c.direction == "more" for c in more.comparisons) and len(more.comparisons) == len(NS)
    assert more.comparisons[0].e_mem_diff == pytest.approx(-0.08, abs=0.05)
    less = compare_real_synthetic(_table(rng, share_shift=-0.2))
    assert less.verdict == "real memorizes less", less.describe()
    mixed = _table(rng, real_shift=-0.08)
    mixed[-1]["e_mem"] += 0.3  # at the largest N real data now memorize less
    assert compare_real_synthetic(mixed).verdict == "mixed"


def test_incomplete_and_bad_tables():
    rng = np.random.default_rng(2)
    rows = _table(rng)
    assert compare_real_synthetic(rows[:1]).verdict == "not measured"
    assert len(compare_real_synthetic(rows[:-1]).comparisons) == len(NS) - 1
    with pytest.raises(PFDistError, match="mem_ratio_ci_low"):
        compare_real_synthetic([{k: v for k, v in r.items() if k != "mem_ratio_ci_low"} for r in rows])
    with pytest.raises(PFDistError, match="two real rows"):
        compare_real_synthetic(rows + rows[1:2])
