"""Where E_mem saturates and E_gen reaches its floor along N, and the gap between them in octaves.

Paper, Finding 1: E_mem rises with N and saturates 2^3–2^4 times earlier in N than E_gen falls
to its floor. Per model size, from its scaling rows (N on a grid, E with standard errors):

- **Plateau level**: the inverse-variance mean of the values within 2 combined standard errors
  of the extreme (max E_mem, min E_gen), with its standard error se_p; the level, not the
  extreme itself, which noise pushes out (the largest of several equal values sits above them).
- **Reached**: N is on E_mem's plateau when E_mem(N) >= level - 2 sqrt(se_N^2 + se_p^2), on
  E_gen's floor when E_gen(N) <= level + 2 sqrt(se_N^2 + se_p^2). ``n`` is the first N on it;
  ``n_before`` the grid N below (None when ``n`` is the first N: reached there or earlier);
  ``n_stays`` the first N from which every N up to the extreme's is on it (>= ``n``: a noisy
  curve can touch the plateau before it gets there; what it does after its extreme, e.g. E_mem
  falling again, is not its saturation). The curve gets there in (n_before, n_stays]; in log2,
  -inf when ``n_before`` is None and +inf when only the largest N is on it (it may go on
  moving beyond the grid).
- **Gap**: log2 N_gen - log2 N_mem (octaves) at the first N on each, and its range from the two
  brackets: (log2 gen.n_before - log2 mem.n_stays, log2 gen.n_stays - log2 mem.n_before).
- **Rises**: max E_mem - E_mem(smallest N) > 2 sqrt(se_first^2 + se_max^2).
- **Order**: "earlier" when the gap range lies above 0 (E_mem saturates before E_gen reaches
  its floor, whatever the grid hides), "later" when it lies below 0, else "undetermined".
- **Verdict** (:func:`saturation_verdict`): "reproduced" when every size rises and saturates
  earlier, "not reproduced" when no size rises or none is earlier, else "partly".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pfdist.analysis.collapse import by_size
from pfdist.errors import PFDistError

Z = 2.0
PAPER_GAP = (3.0, 4.0)  # octaves


@dataclass(frozen=True)
class Reached:
    """Where a curve reaches its plateau within Z combined standard errors (module docstring)."""

    n: int
    n_before: int | None  # None: reached at the first N
    n_stays: int
    level: float  # the plateau's level
    n_extreme: int
    n_last: int  # the largest N of the grid

    @property
    def log2_bracket(self) -> tuple[float, float]:
        """(log2 n_before, log2 n_stays), -inf / +inf at the open ends."""
        return (-math.inf if self.n_before is None else math.log2(self.n_before),
                math.inf if self.n == self.n_last else math.log2(self.n_stays))


@dataclass(frozen=True)
class MemorizationGap:
    params: int
    mem: Reached  # E_mem's plateau
    gen: Reached  # E_gen's floor
    rises: bool

    @property
    def gap_range(self) -> tuple[float, float]:
        """Octaves: (log2 gen.n_before - log2 mem.n_stays, log2 gen.n_stays - log2 mem.n_before)."""
        (gen_lo, gen_hi), (mem_lo, mem_hi) = self.gen.log2_bracket, self.mem.log2_bracket
        return gen_lo - mem_hi, gen_hi - mem_lo

    @property
    def gap(self) -> float:
        """log2 N_gen - log2 N_mem at the first N on each (octaves)."""
        return math.log2(self.gen.n) - math.log2(self.mem.n)

    @property
    def order(self) -> str:
        """Which comes first: "earlier" (E_mem saturates first), "later" or "undetermined"."""
        lo, hi = self.gap_range
        return "earlier" if lo > 0 else "later" if hi < 0 else "undetermined"

    @property
    def paper_gap_in_range(self) -> bool:
        """Whether the gap range overlaps the paper's 3–4 octaves."""
        lo, hi = self.gap_range
        return lo <= PAPER_GAP[1] and hi >= PAPER_GAP[0]

    def describe(self) -> str:
        lo, hi = self.gap_range
        return (f"E_mem saturates at N = {self.mem.n}, E_gen floor at N = {self.gen.n}: gap {self.gap:+.3g} octaves "
                f"(range {lo:+.3g} … {hi:+.3g}; {self.order})")


def reached(ns: Sequence[int], values: Sequence[float], stderrs: Sequence[float], *, extreme: str) -> Reached:
    """Where values (sorted by N) reach their "max" or "min" within Z combined standard errors."""
    if extreme not in ("max", "min"):
        raise PFDistError(f"extreme must be 'max' or 'min' (got {extreme!r}).")
    n, y, se = (np.asarray(a, dtype=float) for a in (ns, values, stderrs))
    if not n.size or n.shape != y.shape or n.shape != se.shape:
        raise PFDistError(f"ns, values and stderrs must have one value per N (got {n.size}, {y.size}, {se.size}).")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(se)) and np.all(se >= 0)):
        raise PFDistError("E and its standard errors must be finite at every N; "
                          "rerun the evaluation of the rows without.")
    if np.any(np.diff(n) <= 0):
        raise PFDistError("N must be strictly increasing within a size; pass one row per (size, N).")
    sign = 1.0 if extreme == "max" else -1.0  # work on a curve that rises to its plateau
    i = int(np.argmax(sign * y))
    near = sign * (y[i] - y) <= Z * np.hypot(se, se[i])
    weights = 1.0 / np.maximum(se[near], 1e-12 * max(1.0, float(np.max(np.abs(y))))) ** 2
    level = float(np.sum(weights * y[near]) / np.sum(weights))
    on = sign * (level - y) <= Z * np.hypot(se, math.sqrt(1.0 / np.sum(weights)))
    on[i] = True
    first = int(np.argmax(on))
    stays = next(j for j in range(i + 1) if on[j : i + 1].all())
    return Reached(int(n[first]), None if first == 0 else int(n[first - 1]), int(n[stays]), level, int(n[i]),
                   int(n[-1]))


def memorization_gap(rows: Sequence[dict[str, Any]]) -> list[MemorizationGap]:
    """Per size (smallest model first): E_mem's saturation, E_gen's floor and the gap (module
    docstring). rows: scaling rows with params, n, e_mem, e_mem_stderr, e_gen, e_gen_stderr; at
    least 3 N per size."""
    out = []
    for params, group in by_size(rows, least=3, what="saturation"):
        col = {c: np.array([float(r.get(c, math.nan)) for r in group])
               for c in ("e_mem", "e_mem_stderr", "e_gen", "e_gen_stderr")}
        ns = [int(r["n"]) for r in group]
        mem = reached(ns, col["e_mem"], col["e_mem_stderr"], extreme="max")
        gen = reached(ns, col["e_gen"], col["e_gen_stderr"], extreme="min")
        i_max = ns.index(mem.n_extreme)
        se_rise = math.hypot(col["e_mem_stderr"][0], col["e_mem_stderr"][i_max])
        rises = col["e_mem"][i_max] - col["e_mem"][0] > Z * se_rise
        out.append(MemorizationGap(params, mem, gen, bool(rises)))
    return out


def saturation_verdict(gaps: Sequence[MemorizationGap]) -> str:
    """The finding's verdict from :func:`memorization_gap` (module docstring's rule)."""
    if not gaps:
        return "not measured"
    rises, earlier = [g.rises for g in gaps], [g.order == "earlier" for g in gaps]
    if all(rises) and all(earlier):
        return "reproduced"
    return "partly" if any(rises) and any(earlier) else "not reproduced"
