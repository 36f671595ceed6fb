"""Descriptor spaces of a run: their names, the collapse fit of E_gen in each, and the ideal
copier's plateau (how flat the exact empirical flow's E_gen stays across N in each space).

A run measures every error in the preset's descriptors; the primary one fills the unsuffixed
columns of the tables and the others the columns suffixed ``_<name>`` (see
``pfdist.experiments.tables``). The copier is the reference that says whether a space can show
memorization at all: in a space where it saturates (flat E_gen across N), a falling E_gen means
generalization; in pixel space its E_gen falls as training points fill the space.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pfdist.analysis.collapse import CollapseFit, collapse_rows, fit_collapse_rows
from pfdist.errors import PFDistError


def column(name: str, space: str, spaces: Sequence[str]) -> str:
    """``e_gen`` of the primary space, ``e_gen_<space>`` of the others."""
    return name if space == spaces[0] else f"{name}_{space}"


def run_spaces(run_dir: str | os.PathLike) -> tuple[str, ...]:
    """Descriptor names of a run from its config.json, primary first (("pixels",) for older runs)."""
    path = Path(run_dir) / "config.json"
    try:
        specs = json.loads(path.read_text())["preset"].get("descriptors") or ["pixels"]
    except (OSError, ValueError, KeyError, TypeError):
        return ("pixels",)
    return tuple("pixels" if s in ("pixels", "identity") else s.get("name", s.get("type")) for s in specs)


def fit_spaces(rows: Sequence[dict[str, Any]], spaces: Sequence[str]) -> dict[str, CollapseFit | None]:
    """The collapse fit of E_gen in every space whose column the scaling rows have (None: not
    fittable), on the main architecture family (:func:`~pfdist.analysis.collapse.collapse_rows`)."""
    rows = collapse_rows(rows)
    fits: dict[str, CollapseFit | None] = {}
    for space in spaces:
        col = column("e_gen", space, spaces)
        if not rows or col not in rows[0]:
            continue
        try:
            fits[space] = fit_collapse_rows(rows, column=col)
        except PFDistError as e:
            warnings.warn(f"no collapse fit of E_gen in {space} space: {e}", stacklevel=2)
            fits[space] = None
    return fits


FLAT = 1.1  # a copier is flat when its E_gen varies by at most 10% across N
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Plateau:
    """The ideal copier's E_gen across N in one space: flat (ratio near 1) in a saturating space.

    ``ratio_ci``: 95% delta-method interval of high / low from the two points' standard errors
    (the two are independent Monte-Carlo estimates): ratio · (1 ± 1.96 · √((se_h/h)² + (se_l/l)²)).
    """

    space: str
    low: float
    high: float
    n_low: int  # N at the lowest E_gen
    n_high: int
    ratio: float  # high / low
    ratio_ci: tuple[float, float] = (math.nan, math.nan)

    @property
    def verdict(self) -> str:
        """The rule: "flat" when the ratio's 95% interval reaches FLAT (1.1) or below, "not flat"
        when all of it lies above; "no interval" without standard errors (no verdict)."""
        lo = self.ratio_ci[0]
        if not math.isfinite(lo):
            return "no interval"
        return "flat" if lo <= FLAT else "not flat"

    def describe(self) -> str:
        ci = (f" (95% CI {self.ratio_ci[0]:.3f}–{self.ratio_ci[1]:.3f})" if math.isfinite(self.ratio_ci[0]) else "")
        return f"max/min {self.ratio:.3f}{ci}: {self.verdict} (flat: the interval reaches {FLAT} or below)"


def copier_plateaus(rows: Sequence[dict[str, Any]], spaces: Sequence[str]) -> dict[str, Plateau]:
    """max / min of the copier's E_gen over N per space, from rows of copier.csv, with its interval."""
    out = {}
    for space in spaces:
        col = column("e_gen", space, spaces)
        se_col = f"{col}_stderr"
        points = [(r[col], r["n"], r.get(se_col, math.nan)) for r in rows
                  if col in r and isinstance(r[col], float) and math.isfinite(r[col])]
        if points:
            (low, n_low, se_l), (high, n_high, se_h) = min(points), max(points)
            ratio = high / low if low > 0 else math.inf
            rel = math.hypot(se_h / high, se_l / low) if low > 0 and high > 0 else math.nan
            ci = (ratio * (1 - Z95 * rel), ratio * (1 + Z95 * rel)) if math.isfinite(rel) else (math.nan, math.nan)
            out[space] = Plateau(space, low, high, n_low, n_high, ratio, ci)
    return out
