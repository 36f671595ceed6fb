"""Do students trained on real images memorize more or less than on teacher samples?

The paper's appendix trains the same students on N real images and on N samples of the teacher
and finds similar memorization. A run's ``real_vs_synthetic.csv`` holds, per (student, N), one
row with ``train_data`` = "teacher" and one with the real data's name; E_mem and the copy share
(``mem_ratio``) refer to each student's own training set. Lower E_mem (closer to the copier) and
a higher copy share both mean more memorization.

Statistics, real minus synthetic at each (student, N), the two students being independent:

- dE_mem = E_mem(real) - E_mem(synthetic), standard error sqrt(se_real^2 + se_synthetic^2);
- dshare = share(real) - share(synthetic), standard error likewise, each share's taken from its
  95% Wilson interval as (high - low) / (2 x 1.96) (defined at 0 and at every copy, where the
  binomial p(1-p)/M is 0).

Rule: with m = 2 x (number of pairs) tests, a difference is significant when |d| > z se with
z = Phi^-1(1 - 0.025 / m) (Bonferroni: a false alarm anywhere in the table has chance at most
5%). At each pair: "more" (real data memorize more) when a significant difference says so and
none the opposite, "less" the reverse, "conflicting" when the two disagree, else "none". The
verdict: "real memorizes more" / "real memorizes less" when some pair says so and none the
opposite, "mixed" when both occur or a pair conflicts, "no significant difference" otherwise (what the paper's
"similar" predicts; not a proof of equality: :meth:`RealVsSyntheticVerdict.describe` quotes each
difference with its error so that its size can be judged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Sequence

from pfdist.errors import PFDistError

Z_95 = 1.959963984540054
SYNTHETIC = "teacher"
REQUIRED = ("student", "params", "n", "train_data", "e_mem", "e_mem_stderr", "mem_ratio", "mem_ratio_ci_low",
            "mem_ratio_ci_high")


@dataclass(frozen=True)
class Comparison:
    """Real minus synthetic for one (student, N), with the table's significance level ``z``."""

    student: str
    params: int
    n: int
    e_mem_diff: float
    e_mem_diff_se: float
    share_diff: float
    share_diff_se: float
    z: float

    def _says(self, diff: float, se: float, more_when_positive: bool) -> int:
        """+1: real memorizes more, -1: less, 0: not significant."""
        if not abs(diff) > self.z * se:
            return 0
        return 1 if (diff > 0) == more_when_positive else -1

    @property
    def direction(self) -> str:
        """The pair's reading: "more", "less", "conflicting" or "none" (module docstring)."""
        says = {self._says(self.e_mem_diff, self.e_mem_diff_se, False),
                self._says(self.share_diff, self.share_diff_se, True)} - {0}
        readings = {frozenset(): "none", frozenset({1}): "more", frozenset({-1}): "less"}
        return readings.get(frozenset(says), "conflicting")

    def describe(self) -> str:
        return (f"{self.student} N = {self.n}: ΔE_mem {self.e_mem_diff:+.3g} ± {self.e_mem_diff_se:.2g}, "
                f"Δcopy share {self.share_diff:+.3g} ± {self.share_diff_se:.2g} ({self.direction})")


@dataclass(frozen=True)
class RealVsSyntheticVerdict:
    comparisons: tuple[Comparison, ...]
    z: float  # the Bonferroni threshold in standard errors
    verdict: str  # module docstring; "not measured" without a complete pair

    def describe(self) -> str:
        if not self.comparisons:
            return "no (student, N) with both real and synthetic training data"
        return (f"real − synthetic, ± 1 standard error; significant beyond {self.z:.2f} SE (Bonferroni over "
                f"{2 * len(self.comparisons)} tests): " + "; ".join(c.describe() for c in self.comparisons))


def _share_se(row: dict[str, Any]) -> float:
    return (float(row["mem_ratio_ci_high"]) - float(row["mem_ratio_ci_low"])) / (2 * Z_95)


def _pairs(rows: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(real, synthetic) rows per (params, student, N), sorted; incomplete pairs are left out."""
    sides: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        missing = [c for c in REQUIRED if c not in r]
        if missing:
            raise PFDistError(f"real_vs_synthetic rows need columns {', '.join(missing)}; regenerate the table.")
        side = "synthetic" if r["train_data"] == SYNTHETIC else "real"
        key = (int(r["params"]), str(r["student"]), int(r["n"]))
        if side in sides.setdefault(key, {}):
            raise PFDistError(f"two {side} rows for {key[1]} at N = {key[2]}; pass one run's table.")
        sides[key][side] = r
    return [(s["real"], s["synthetic"]) for _, s in sorted(sides.items()) if len(s) == 2]


def compare_real_synthetic(rows: Sequence[dict[str, Any]]) -> RealVsSyntheticVerdict:
    """Real vs synthetic training data at each (student, N) and the verdict (module docstring).

    rows: ``real_vs_synthetic.csv`` rows (student, params, n, train_data, e_mem, e_mem_stderr,
    mem_ratio, mem_ratio_ci_low, mem_ratio_ci_high)."""
    pairs = _pairs(rows)
    if not pairs:
        return RealVsSyntheticVerdict((), math.nan, "not measured")
    z = NormalDist().inv_cdf(1 - 0.025 / (2 * len(pairs)))
    comparisons = []
    for real, syn in pairs:
        se_mem = math.hypot(float(real["e_mem_stderr"]), float(syn["e_mem_stderr"]))
        if not math.isfinite(se_mem):
            raise PFDistError(f"{real['student']} at N = {real['n']} has no E_mem standard error; "
                              "rerun its evaluation.")
        comparisons.append(Comparison(
            str(real["student"]), int(real["params"]), int(real["n"]), float(real["e_mem"]) - float(syn["e_mem"]),
            se_mem, float(real["mem_ratio"]) - float(syn["mem_ratio"]), math.hypot(_share_se(real), _share_se(syn)), z))
    found = {c.direction for c in comparisons}
    if "conflicting" in found or {"more", "less"} <= found:
        verdict = "mixed"
    elif "more" in found:
        verdict = "real memorizes more"
    elif "less" in found:
        verdict = "real memorizes less"
    else:
        verdict = "no significant difference"
    return RealVsSyntheticVerdict(tuple(comparisons), z, verdict)
