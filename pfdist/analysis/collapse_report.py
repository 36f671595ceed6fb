"""Is the MtoG collapse real? α with its interval, α on subsets of sizes, a test of one α.

:func:`pfdist.analysis.collapse.fit_collapse` fits one exponent α to all sizes. A single α with a
wide interval can hide curves that do not collapse: the exponent between neighbouring sizes may
drift, and a worse fit widens the interval, which then holds 0.5 more easily. The report adds the
evidence a referee asks for:

- **Subsets.** α and its interval without each size (``leave_one_out``) and for each pair of sizes
  (``pairwise``). A real collapse gives the same α on every subset.
- **Collapse test** (nested models, F-test; Bates & Watts 1988, §3.5). Restricted: the collapse fit,
  one sigmoid in log2 N − α log2 |θ|, with a shared width and memorization plateau and a floor per
  size (4 + S parameters for S sizes). Free: the same plateaus and width, but the midpoint of each
  size free (2 + 2S parameters). One α is the free model with the S midpoints on a line in
  log2 |θ|, so the test has S − 2 degrees of freedom and needs at least 3 sizes::

      F = ((RSS_restricted − RSS_free) / (S − 2)) / (RSS_free / (points − 2 − 2S))

  ``collapse_p`` is the upper tail of F(S − 2, points − 2 − 2S); small p rejects one α.
- **Model-free cross-check.** Each size's midpoint N*: where its curve (mean over repeats at one N)
  first falls through half-way between its own largest and smallest value, linearly interpolated
  in log2 N. The slope of log2 N* on log2 |θ| (ordinary least squares, Student-t interval with
  S − 2 degrees of freedom) is a second estimate of α that assumes no sigmoid.

Weights: with ``e_gen_stderr`` both fits are weighted least squares (residuals divided by the
standard errors, as in ``fit_collapse``) and the F statistic uses weighted residual sums of
squares. The residual variance is estimated from the free fit, so the standard errors set relative
weights only. The cross-check is unweighted.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

import numpy as np

from pfdist.analysis.collapse import _W_BOUNDS, CollapseFit, _validate, fit_collapse
from pfdist.errors import PFDistError

PAPER_ALPHA = 0.5
REJECT_P = 0.05


@dataclass(frozen=True)
class AlphaEstimate:
    """α of a collapse fit on a subset of sizes; NaN with ``note`` when it could not be fitted."""

    sizes: tuple[int, ...]
    alpha: float
    alpha_ci: tuple[float, float]
    note: str = ""  # why there is no estimate, or why the fit is degenerate


@dataclass(frozen=True)
class CollapseReport:
    """The collapse of E_gen on N / |θ|^α, tested (module docstring).

    Verdict rules (the 95% profile interval of α from the fit on all sizes, and the collapse test):

    - "not measured": the fit on all sizes is degenerate (:attr:`CollapseFit.degenerate`).
    - "reproduced": the α interval excludes 0, contains 0.5, **and** the collapse test does not
      reject one α (``collapse_p`` ≥ 0.05).
    - "partly": the α interval excludes 0 (E_gen's transition moves with size) but 0.5 is outside
      it, or the collapse test rejects one α (p < 0.05), or it cannot be run (2 sizes). A failed
      collapse test gives at most "partly", whatever the interval.
    - "not reproduced": the α interval includes 0 (no size dependence shown).

    Leave-one-out, pairwise α and the cross-check are evidence shown beside the verdict; they do
    not enter it.
    """

    fit: CollapseFit  # the shared-α fit on all sizes
    alpha: float
    alpha_ci: tuple[float, float]
    leave_one_out: dict[int, AlphaEstimate]  # dropped size -> α on the others (3+ sizes)
    pairwise: dict[tuple[int, int], AlphaEstimate]  # (smaller, larger) size -> α of that pair
    collapse_f: float
    collapse_df: tuple[int, int]
    collapse_p: float  # NaN with 2 sizes: the test has no degrees of freedom
    free_midpoints: dict[int, float]  # log2 N* per size, free model
    midpoints: dict[int, float]  # log2 N* per size, interpolated half-way crossing (NaN if none)
    midpoint_slope: float  # slope of log2 N* on log2 |θ|, a model-free α
    midpoint_slope_ci: tuple[float, float]  # Student-t 95%; NaN with fewer than 3 midpoints
    weighted: bool  # usable e_gen_stderr given: weighted least squares
    verdict: str
    reason: str = ""  # the rule that decided the verdict

    def describe(self) -> str:
        lo, hi = self.alpha_ci
        p = "n/a" if np.isnan(self.collapse_p) else f"{self.collapse_p:.2g}"
        slo, shi = self.midpoint_slope_ci
        return (f"α = {self.alpha:.2f} (95% CI {lo:.2f}–{hi:.2f}), one-α test p = {p}, "
                f"midpoint slope {self.midpoint_slope:.2f} ({slo:.2f}–{shi:.2f})")


def _verdict(fit: CollapseFit, p: float) -> tuple[str, str]:
    lo, hi = fit.alpha_ci
    if fit.degenerate:
        return "not measured", "degenerate fit: " + "; ".join(fit.degenerate)
    if lo <= 0:
        return "not reproduced", "α interval includes 0"
    if np.isnan(p):
        return "partly", "collapse test needs 3 or more sizes"
    if p < REJECT_P:
        return "partly", f"collapse test rejects one α (p = {p:.2g} < {REJECT_P})"
    if not lo <= PAPER_ALPHA <= hi:
        return "partly", f"α interval excludes {PAPER_ALPHA}"
    return "reproduced", f"α interval holds {PAPER_ALPHA}, excludes 0; collapse test p = {p:.2g} ≥ {REJECT_P}"


def _free_fit(fit: CollapseFit, log_n: np.ndarray, size_idx: np.ndarray, y: np.ndarray,
              weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-size midpoints, shared width and plateau, a floor per size -> (midpoints, weighted RSS).

    Starts from the collapse fit, so RSS_free ≤ RSS_restricted up to the solver's tolerance."""
    from scipy.special import expit  # scipy: imported when fitting, not by the processes that train
    from scipy.optimize import least_squares
    s = len(fit.sizes)
    m0 = fit.midpoint + fit.alpha * np.log2(np.asarray(fit.sizes, dtype=float))
    phi0 = np.concatenate([m0, [fit.width, fit.plateau_high], fit.plateau_low])
    spread = np.ptp(y)
    lower = np.concatenate([np.full(s, -np.inf), [_W_BOUNDS[0]], np.full(1 + s, y.min() - spread)])
    upper = np.concatenate([np.full(s, np.inf), [_W_BOUNDS[1]], np.full(1 + s, y.max() + spread)])

    def residuals(phi):
        m, w, high, low = phi[:s][size_idx], phi[s], phi[s + 1], phi[s + 2:][size_idx]
        return (low + (high - low) * expit(-(log_n - m) / w) - y) * weight

    res = least_squares(residuals, np.clip(phi0, lower, upper), bounds=(lower, upper), method="trf",
                        x_scale="jac")
    return res.x[:s], 2.0 * float(res.cost)


def _half_way(log_n: np.ndarray, y: np.ndarray) -> float:
    """log2 N where the curve (mean over repeats) first falls through half-way between its extremes."""
    grid = np.unique(log_n)
    curve = np.array([y[log_n == v].mean() for v in grid])
    level = 0.5 * (curve.max() + curve.min())
    for i in range(grid.size - 1):
        if curve[i] >= level > curve[i + 1]:
            return float(grid[i] + (curve[i] - level) / (curve[i] - curve[i + 1]) * (grid[i + 1] - grid[i]))
    return float("nan")


def _slope(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, tuple[float, float]]:
    """OLS slope of y on x with its Student-t interval (NaN when fewer than 3 finite points)."""
    from scipy.stats import t as t_dist  # scipy: imported when fitting, not by the processes that train
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return float("nan"), (float("nan"), float("nan"))
    xc = x - x.mean()
    b = float(xc @ (y - y.mean()) / (xc @ xc))
    if x.size < 3:
        return b, (float("nan"), float("nan"))
    resid = y - y.mean() - b * xc
    se = np.sqrt(resid @ resid / (x.size - 2) / (xc @ xc))
    h = float(t_dist.ppf(0.5 + confidence / 2, x.size - 2) * se)
    return b, (b - h, b + h)


def _subset_alpha(n, params, y, se, keep: Sequence[int], **kwargs: Any) -> AlphaEstimate:
    mask = np.isin(params, keep)
    try:
        f = fit_collapse(n[mask], params[mask], y[mask], e_gen_stderr=None if se is None else se[mask], **kwargs)
    except PFDistError as e:
        return AlphaEstimate(tuple(int(k) for k in keep), float("nan"), (float("nan"), float("nan")), str(e))
    return AlphaEstimate(f.sizes, f.alpha, f.alpha_ci, "; ".join(f.degenerate))


def collapse_report(
    n: Sequence[float] | np.ndarray,
    params: Sequence[float] | np.ndarray,
    e_gen: Sequence[float] | np.ndarray,
    e_gen_stderr: Sequence[float] | np.ndarray | None = None,
    *,
    subsets: bool = True,
    confidence: float = 0.95,
    alpha_bounds: tuple[float, float] = (-1.0, 1.5),
) -> CollapseReport:
    """Fit the collapse, refit it on subsets of sizes and test one α (module docstring).

    n, params, e_gen, e_gen_stderr: (points,), as for ``fit_collapse``; at least 2 sizes with 3
    values of N each. ``subsets=False`` skips the leave-one-out and pairwise fits (they do not
    enter the verdict), for simulation studies. ``alpha_bounds`` reach below 0 so that α = 0 (no
    size dependence) is inside them, not a degenerate fit on a bound.
    """
    from scipy.stats import f as f_dist  # scipy: imported when fitting, not by the processes that train
    n_arr, p_arr, y, weight = _validate(n, params, e_gen, e_gen_stderr)
    se = None if e_gen_stderr is None else np.asarray(e_gen_stderr, dtype=float).ravel()
    kwargs = dict(confidence=confidence, alpha_bounds=alpha_bounds)
    fit = fit_collapse(n_arr, p_arr, y, e_gen_stderr=se, **kwargs)
    sizes = np.asarray(fit.sizes, dtype=float)
    size_idx = np.searchsorted(sizes, p_arr)
    log_n, log_p = np.log2(n_arr), np.log2(sizes)

    # Collapse test: restricted (one α) against free midpoints.
    rss_r = float(np.sum(((fit.predict(n_arr, p_arr) - y) * weight) ** 2))
    free_m, rss_f = _free_fit(fit, log_n, size_idx, y, weight)
    df1, df2 = sizes.size - 2, y.size - 2 - 2 * sizes.size
    if df1 > 0 and df2 > 0 and rss_f > 0:
        f_stat = max(rss_r - rss_f, 0.0) / df1 / (rss_f / df2)
        p = float(f_dist.sf(f_stat, df1, df2))
    else:
        f_stat, p = float("nan"), float("nan")

    half = np.array([_half_way(log_n[size_idx == i], y[size_idx == i]) for i in range(sizes.size)])
    slope, slope_ci = _slope(log_p, half, confidence)

    loo, pairs = {}, {}
    if subsets:
        keys = [int(s) for s in fit.sizes]
        if len(keys) >= 3:
            loo = {k: _subset_alpha(n_arr, p_arr, y, se, [j for j in keys if j != k], **kwargs)
                   for k in keys}
        pairs = {(a, b): _subset_alpha(n_arr, p_arr, y, se, [a, b], **kwargs)
                 for a, b in combinations(keys, 2)}

    verdict, reason = _verdict(fit, p)
    return CollapseReport(
        fit=fit, alpha=fit.alpha, alpha_ci=fit.alpha_ci, leave_one_out=loo, pairwise=pairs,
        collapse_f=float(f_stat), collapse_df=(int(df1), int(df2)), collapse_p=p,
        free_midpoints={int(s): float(m) for s, m in zip(fit.sizes, free_m)},
        midpoints={int(s): float(m) for s, m in zip(fit.sizes, half)},
        midpoint_slope=slope, midpoint_slope_ci=slope_ci,
        weighted=se is not None and bool(np.any(np.isfinite(se) & (se > 0))),
        verdict=verdict, reason=reason)
