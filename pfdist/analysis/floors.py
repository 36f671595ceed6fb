"""E_gen's floor per model size, with its interval, and whether smaller models sit higher.

Paper, Finding 1: E_gen falls from the unrelated-images level to a floor as N grows, and the
floor is higher for smaller models. From a scaling table (one row per size and N):

- **Floor**: each size's E_gen at its largest N, with the row's 95% interval (``e_gen_ci_low`` /
  ``e_gen_ci_high``, the PFD's Student-t interval mapped through the square root) or, without
  those columns, E_gen +- 1.96 stderr.
- **Falls**: E_gen at the smallest N minus the floor exceeds 1.96 x sqrt(se_first^2 + se_floor^2)
  (independent Monte-Carlo estimates; one-sided at 2.5%).
- **Order** of neighbouring sizes (by parameter count): d = floor(smaller) - floor(larger) with
  standard error sqrt(se_s^2 + se_l^2); "higher" (the smaller model's floor is higher, as in the
  paper) when d > 1.96 se, "lower" when d < -1.96 se, else "indistinguishable".
- **Verdict** (:func:`floor_verdict`): "reproduced" when every size falls and every neighbouring
  pair is "higher"; "not reproduced" when no size falls and no pair is "higher"; else "partly".

The caller picks the rows (the main architecture family: :func:`pfdist.analysis.collapse_rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from pfdist.analysis.collapse import by_size
from pfdist.errors import PFDistError

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Floor:
    params: int
    n: int  # the largest N of this size
    value: float  # E_gen there
    stderr: float
    ci: tuple[float, float]
    n_first: int  # the smallest N
    first: float  # E_gen there
    first_stderr: float

    @property
    def falls(self) -> bool:
        return self.first - self.value > Z_95 * math.hypot(self.first_stderr, self.stderr)

    def describe(self) -> str:
        return f"{self.value:.3g} (95% CI {self.ci[0]:.3g}–{self.ci[1]:.3g}) at N = {self.n}"


@dataclass(frozen=True)
class FloorOrder:
    smaller: int  # parameter counts of the two neighbouring sizes
    larger: int
    difference: float  # floor(smaller) - floor(larger)
    stderr: float

    @property
    def order(self) -> str:
        """The pair's order: "higher", "lower" or "indistinguishable" (module docstring)."""
        if self.difference > Z_95 * self.stderr:
            return "higher"
        return "lower" if self.difference < -Z_95 * self.stderr else "indistinguishable"

    def describe(self) -> str:
        return f"{self.difference:+.3g} ± {self.stderr:.2g} ({self.order})"


def _number(row: dict[str, Any], column: str) -> float:
    value = float(row.get(column, math.nan))
    if not math.isfinite(value):
        raise PFDistError(f"the scaling row of params {row.get('params')}, N = {row.get('n')} has no finite "
                          f"{column}; floors need E_gen and its standard error at each size's smallest and largest N.")
    return value


def floors(rows: Sequence[dict[str, Any]]) -> list[Floor]:
    """Each size's floor (module docstring), smallest model first. rows: scaling rows with
    params, n, e_gen, e_gen_stderr (and optionally e_gen_ci_low / e_gen_ci_high)."""
    out = []
    for params, group in by_size(rows, least=2, what="a floor"):
        first, last = group[0], group[-1]
        value, se = _number(last, "e_gen"), _number(last, "e_gen_stderr")
        if "e_gen_ci_low" in last and "e_gen_ci_high" in last:
            ci = (float(last["e_gen_ci_low"]), float(last["e_gen_ci_high"]))
        else:
            ci = (value - Z_95 * se, value + Z_95 * se)
        out.append(Floor(params, int(last["n"]), value, se, ci, int(first["n"]), _number(first, "e_gen"),
                         _number(first, "e_gen_stderr")))
    return out


def floor_order(sizes: Sequence[Floor]) -> list[FloorOrder]:
    """Neighbouring sizes' floors compared, in the order given (smallest model first)."""
    return [FloorOrder(a.params, b.params, a.value - b.value, math.hypot(a.stderr, b.stderr))
            for a, b in zip(sizes, sizes[1:])]


def floor_verdict(sizes: Sequence[Floor]) -> str:
    """The finding's verdict from :func:`floors` (module docstring's rule); "not measured"
    without sizes."""
    if not sizes:
        return "not measured"
    falls = [f.falls for f in sizes]
    higher = [o.order == "higher" for o in floor_order(sizes)]
    if all(falls) and all(higher):
        return "reproduced"
    return "partly" if any(falls) or any(higher) else "not reproduced"
