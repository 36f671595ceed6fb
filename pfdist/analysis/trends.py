"""Does a metric see a transition across N? The statistics of one curve v(N) with standard errors.

A curve is K values v_1..v_K at increasing N with standard errors s_1..s_K. Two points differ by
z_ij = (v_j − v_i) / √(s_i² + s_j²) combined standard errors. The points are treated as
independent; values of one student at different N share the evaluation seeds (and the teacher's
reference samples), which correlates them positively, so the true error of a difference is
smaller and every test below is conservative.

- **sees the transition**: the values at the smallest and the largest N differ beyond
  ``Z_END`` = 2 combined standard errors (one test per curve).
- **non-monotone**: a significant reversal, i.e. three N, i < j < k, with a significant rise from
  i to j and a significant fall from j to k (or a fall then a rise). A step is significant beyond
  ``z_pairs(K)``, the two-sided 5% normal quantile Bonferroni-corrected for the K(K−1)/2 pairs
  searched.
- **flat at an end (saturates)**: on a curve that sees the transition, its first (last) step
  stays within ``SATURATION`` = 10% of the end-to-end change, its error included:
  |v_2 − v_1| + 2 se(v_2 − v_1) ≤ 0.1 |v_K − v_1| (likewise v_K − v_{K−1}). An unresolved step is
  not called flat: flatness needs the interval, not only the estimate, to be small.

:func:`normalise` puts curves of different units on one axis for drawing: 1 at the smallest N and
0 at the largest when those differ beyond error (a reversal then leaves [0, 1]), else the curve's
own range, min → 0 and max → 1 ("range"); a curve with no change at all is drawn at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from pfdist.errors import PFDistError

Z_END = 2.0
SATURATION = 0.1
FAMILY_LEVEL = 0.05


def z_pairs(k: int) -> float:
    """The normal quantile of a two-sided 5% test Bonferroni-corrected over the k(k−1)/2 pairs of k points."""
    pairs = max(k * (k - 1) // 2, 1)
    return NormalDist().inv_cdf(1 - FAMILY_LEVEL / (2 * pairs))


def _z(v: Sequence[float], s: Sequence[float], i: int, j: int) -> float:
    diff, se = v[j] - v[i], math.hypot(s[i], s[j])
    if se > 0:
        return diff / se
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


@dataclass(frozen=True)
class Trend:
    """One metric of one student against N: the rules' statistics and verdicts (module docstring)."""

    ns: tuple[int, ...]
    values: tuple[float, ...]
    stderrs: tuple[float, ...]
    z_end: float  # (v_K − v_1) in combined standard errors
    sees: bool
    reversal: tuple[int, int, int] | None  # N_i < N_j < N_k of a significant rise then fall (or fall then rise)
    flat_low: bool  # saturated at the smallest N
    flat_high: bool  # saturated at the largest N
    z_reversal: float  # the threshold a reversal's two steps passed

    @property
    def nonmonotone(self) -> bool:
        return self.reversal is not None

    def describe(self) -> str:
        words = [("sees the transition" if self.sees else "does not see the transition") + f" (z = {self.z_end:.3g})"]
        if self.reversal is not None:
            words.append("non-monotone (N = {} → {} → {})".format(*self.reversal))
        ends = [e for e, flat in (("small N", self.flat_low), ("large N", self.flat_high)) if flat]
        if ends:
            words.append("flat at " + " and ".join(ends))
        return ", ".join(words)


def trend(ns: Sequence[int], values: Sequence[float], stderrs: Sequence[float]) -> Trend:
    """The verdicts of one curve (module docstring): ``ns`` increasing, ``values`` and ``stderrs``
    finite, one per N, at least two N."""
    ns, v, s = tuple(int(n) for n in ns), tuple(map(float, values)), tuple(map(float, stderrs))
    if not len(ns) == len(v) == len(s) or len(ns) < 2:
        raise PFDistError(f"a trend needs one value and one standard error per N, at least two N (got {len(ns)} N, "
                          f"{len(v)} values, {len(s)} errors).")
    if any(b <= a for a, b in zip(ns, ns[1:])):
        raise PFDistError(f"a trend needs increasing N (got {list(ns)}).")
    if not all(math.isfinite(x) for x in v + s) or min(s) < 0:
        raise PFDistError("a trend needs finite values and finite, non-negative standard errors; a metric without an "
                          "error gets no verdict.")
    k = len(ns)
    z_end = _z(v, s, 0, k - 1)
    sees = abs(z_end) > Z_END
    limit = z_pairs(k)
    reversal = next(((ns[i], ns[j], ns[m]) for j in range(1, k - 1) for i in range(j) for m in range(j + 1, k)
                     if min(abs(_z(v, s, i, j)), abs(_z(v, s, j, m))) > limit
                     and (v[j] - v[i]) * (v[m] - v[j]) < 0), None)
    span = abs(v[-1] - v[0])

    def flat(i: int, j: int) -> bool:
        return sees and abs(v[j] - v[i]) + Z_END * math.hypot(s[i], s[j]) <= SATURATION * span

    return Trend(ns, v, s, z_end, sees, reversal, flat(0, 1), flat(k - 2, k - 1), limit)


def curve(ns: Sequence[int], values: Sequence[float], stderrs: Sequence[float]) -> Trend | None:
    """:func:`trend`, or None (no verdict) when a value or an error is missing (NaN)."""
    if not all(math.isfinite(float(x)) for x in (*values, *stderrs)):
        return None
    return trend(ns, values, stderrs)


def normalise(t: Trend) -> tuple[tuple[float, ...], str]:
    """(values on a common axis, "ends" or "range"): see the module docstring."""
    v = t.values
    if t.sees:
        return tuple((x - v[-1]) / (v[0] - v[-1]) for x in v), "ends"
    lo, hi = min(v), max(v)
    return tuple((x - lo) / (hi - lo) if hi > lo else 0.0 for x in v), "range"
