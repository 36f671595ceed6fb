"""Collapse of the memorization-to-generalization (MtoG) curves of several model sizes.

The paper's Finding 1: E_gen against log2 N falls from a memorization plateau to a
generalization floor, and the curves of all sizes collapse against N / |theta|^alpha with
alpha ~ 1/2. No formula is published; we fit the smallest model that has those features:

    x = log2 N - alpha log2 |theta|
    E_gen(N, theta) = low_s + (high - low_s) * sigmoid(-(x - m) / w)

- ``alpha``: how the transition point scales with model size (the collapse exponent).
- ``m``: the midpoint, in log2(N / |theta|^alpha) units: the transition sits at N ~ 2^m |theta|^alpha.
- ``w``: the width of the transition, in octaves of N.
- ``high``: the memorization plateau, shared. A model that copies training points is as far from
  the data as unrelated images are, whatever its size (paper: ~1.22 for every size).
- ``low_s``: the generalization floor, one per size by default (paper: smaller models have a
  higher floor); ``per_size_floor=False`` shares it. The floors move only the height of the
  lower plateau; the horizontal shift between sizes, which is what identifies alpha, is untouched.

The plateaus are bounded to [min E - range, max E + range] of the data: without that, a very wide
sigmoid with far-away plateaus mimics a straight line and the intervals never close.

Fit: weighted least squares (``scipy.optimize.least_squares``, residuals divided by the standard
errors when given), from a grid of starts over alpha and w, keeping the lowest cost. log2 |theta|
is centred inside the fit so alpha and m are not collinear; ``midpoint`` is reported uncentred.

Confidence intervals: profile likelihood (Bates & Watts 1988, ch. 6). For a value a of alpha the
other parameters are refitted; a belongs to the interval while the weighted residual sum of squares
stays below RSS_min (1 + F(1, n - p; confidence) / (n - p)). The threshold uses the residual variance of
the fit itself, so standard errors set relative weights only, and a model that misfits real data
gets a wider interval rather than a falsely narrow one. On synthetic collapses (4 sizes x 11 N,
150 seeds, noise 0.01 and 0.03) its 95% interval covered the true alpha 94-96% of the time; a
wild residual bootstrap covered 87-91%. The midpoint's interval is profiled the same way. An
interval that reaches ``alpha_bounds`` is cut there.

Degenerate fits: a fit whose α, width or a plateau ends on its bound, or (for a share, with
``value_range=(0, 1)``) whose plateau leaves the range the quantity can take, is not a fit of the
model to the data but of the bounds; ``CollapseFit.degenerate`` lists why, and reports and figures
show it as "degenerate fit" instead of drawing or tabling it as a result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pfdist.errors import PFDistError

MIN_POINTS_PER_SIZE = 3
_W_BOUNDS = (0.05, 20.0)


def collapse_x(n: Any, params: Any, alpha: float) -> np.ndarray:
    """The collapse coordinate log2(N / |theta|^alpha)."""
    return np.log2(np.asarray(n, dtype=float)) - alpha * np.log2(np.asarray(params, dtype=float))


@dataclass(frozen=True)
class CollapseFit:
    """A fitted MtoG collapse; ``sizes`` and ``plateau_low`` are aligned, sorted by size."""

    alpha: float
    alpha_ci: tuple[float, float]  # profile-likelihood interval at ``confidence``
    midpoint: float  # m, in log2(N / |theta|^alpha) units
    midpoint_ci: tuple[float, float]
    width: float  # w, in octaves of N
    plateau_high: float  # memorization plateau (shared)
    plateau_low: tuple[float, ...]  # generalization floor per size
    sizes: tuple[int, ...]  # distinct parameter counts |theta|
    per_size_floor: bool
    r2: float
    rmse: float
    n_points: int
    n_sizes: int
    confidence: float
    degenerate: tuple[str, ...] = ()  # why the fit is not a result (bounds hit, a share's plateau outside [0, 1])

    @property
    def ok(self) -> bool:
        return not self.degenerate

    def predict(self, n: Any, params: Any) -> np.ndarray:
        """Fitted E_gen at (N, |theta|); ``params`` must be one of the fitted ``sizes``."""
        from scipy.special import expit  # scipy: imported when fitting, not by the processes that train
        n, params = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(params, dtype=float))
        floors = dict(zip(self.sizes, self.plateau_low))
        unknown = sorted({int(p) for p in params.ravel()} - set(floors))
        if unknown:
            raise PFDistError(f"no fitted floor for sizes {unknown}; fitted sizes are {list(self.sizes)}")
        low = np.vectorize(lambda p: floors[int(p)], otypes=[float])(params)
        x = collapse_x(n, params, self.alpha)
        return low + (self.plateau_high - low) * expit(-(x - self.midpoint) / self.width)


def _model(theta: np.ndarray, log_n: np.ndarray, log_p: np.ndarray, low_idx: np.ndarray):
    """Prediction and Jacobian; theta = (alpha, m_centred, w, high, *lows), lows[low_idx] per point."""
    from scipy.special import expit  # scipy: imported when fitting, not by the processes that train
    alpha, m, w, high = theta[:4]
    low = theta[4:][low_idx]
    z = (log_n - alpha * log_p - m) / w
    g = expit(-z)
    dg = (high - low) * g * (1.0 - g) / w  # d pred / d m
    jac = np.zeros((log_n.size, theta.size))
    jac[:, 0] = dg * log_p
    jac[:, 1] = dg
    jac[:, 2] = dg * z
    jac[:, 3] = g
    jac[np.arange(log_n.size), 4 + low_idx] = 1.0 - g
    return low + (high - low) * g, jac


@dataclass(frozen=True)
class _Data:
    log_n: np.ndarray  # (points,) log2 N
    log_p: np.ndarray  # (points,) log2 |theta| - centre
    low_idx: np.ndarray  # (points,) which floor each point uses
    y: np.ndarray
    weight: np.ndarray  # 1 / stderr, or ones
    lower: np.ndarray  # bounds on theta
    upper: np.ndarray
    centre: float


_FIXED_INDEX = {"alpha": 0, "midpoint": 1}


def _fit(d: _Data, theta0: np.ndarray, fix: str | None = None, value: float = 0.0) -> tuple[np.ndarray, float]:
    """Least squares from theta0 -> (theta, weighted RSS). ``fix`` holds alpha or the uncentred midpoint."""
    from scipy.optimize import least_squares  # scipy: imported when fitting, not by the processes that train
    free = np.array([i for i in range(theta0.size) if i != _FIXED_INDEX.get(fix, -1)])

    def full(phi):
        theta = np.empty_like(theta0)
        theta[free] = phi
        if fix == "alpha":
            theta[0] = value
        elif fix == "midpoint":
            theta[1] = value + theta[0] * d.centre
        return theta

    def fun(phi):
        return (_model(full(phi), d.log_n, d.log_p, d.low_idx)[0] - d.y) * d.weight

    def jac(phi):
        j = _model(full(phi), d.log_n, d.log_p, d.low_idx)[1]
        if fix == "midpoint":  # m_centred = value + alpha * centre moves with alpha
            j[:, 0] += d.centre * j[:, 1]
        return j[:, free] * d.weight[:, None]

    lo, hi = d.lower[free], d.upper[free]
    phi0 = np.clip(theta0[free], lo + 1e-9, hi - 1e-9)
    res = least_squares(fun, phi0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac")
    return full(res.x), 2.0 * float(res.cost)


def _profile_interval(d: _Data, theta: np.ndarray, fix: str, estimate: float, threshold: float,
                      limits: tuple[float, float], step: float) -> tuple[float, float]:
    """Where the profiled RSS crosses RSS_min + threshold on each side of ``estimate``."""
    from scipy.optimize import brentq  # scipy: imported when fitting, not by the processes that train
    rss_min = _fit(d, theta)[1]

    def excess(v: float) -> float:
        return _fit(d, theta, fix, v)[1] - rss_min - threshold

    ends = []
    for direction, limit in ((-1.0, limits[0]), (1.0, limits[1])):
        inside, h, end = estimate, step, direction * np.inf
        for _ in range(40):
            trial = inside + direction * h
            at_limit = direction * (trial - limit) >= 0
            trial = limit if at_limit else trial
            if excess(trial) > 0:
                end = brentq(excess, min(inside, trial), max(inside, trial), xtol=1e-4)
                break
            if at_limit:
                end = limit
                break
            inside, h = trial, h * 1.6
        ends.append(float(end))
    return ends[0], ends[1]


def _validate(n, params, e_gen, e_gen_stderr):
    n, params, y = (np.asarray(a, dtype=float).ravel() for a in (n, params, e_gen))
    if not n.size == params.size == y.size:
        raise PFDistError(f"n, params and e_gen must have the same length, got {n.size}, {params.size}, {y.size}")
    for name, a in (("n", n), ("params", params)):
        if not np.all(np.isfinite(a) & (a > 0)):
            raise PFDistError(f"{name} must be positive and finite for every point")
    if not np.all(np.isfinite(y)):
        raise PFDistError("e_gen has non-finite values; drop those points before fitting")
    if y.size and np.ptp(y) == 0:  # a constant (a copy share of 0 everywhere): no transition to place
        raise PFDistError(f"the values are all {y[0]:g}: no transition to fit")
    if e_gen_stderr is None:
        return n, params, y, np.ones_like(y)
    se = np.asarray(e_gen_stderr, dtype=float).ravel()
    if se.size != y.size:
        raise PFDistError(f"e_gen_stderr has {se.size} values for {y.size} points")
    good = np.isfinite(se) & (se > 0)
    if not good.any():
        return n, params, y, np.ones_like(y)
    # A zero or missing stderr would get infinite weight: floor it at a tenth of the median.
    median = np.median(se[good])
    return n, params, y, 1.0 / np.where(good, np.maximum(se, 0.1 * median), median)


def fit_collapse(
    n: Sequence[float] | np.ndarray,
    params: Sequence[float] | np.ndarray,
    e_gen: Sequence[float] | np.ndarray,
    *,
    e_gen_stderr: Sequence[float] | np.ndarray | None = None,
    alpha_bounds: tuple[float, float] = (0.0, 1.5),
    per_size_floor: bool = True,
    confidence: float = 0.95,
    value_range: tuple[float, float] | None = None,
) -> CollapseFit:
    """Fit the MtoG collapse (module docstring) to points (N, |theta|, E_gen).

    n, params, e_gen, e_gen_stderr: (points,). Needs >= 2 distinct sizes with >= 3 points each.
    ``value_range``: the values the quantity can take (a share: (0, 1)); plateaus outside it
    mark the fit degenerate, as do parameters on their bounds.
    """
    from scipy.stats import f as f_dist  # scipy: imported when fitting, not by the processes that train
    n_raw, params_raw, y, weight = _validate(n, params, e_gen, e_gen_stderr)
    sizes, size_idx, counts = np.unique(params_raw, return_inverse=True, return_counts=True)
    if sizes.size < 2:
        raise PFDistError(f"collapse needs at least 2 model sizes (distinct params), got {sizes.size}")
    if counts.min() < MIN_POINTS_PER_SIZE:
        raise PFDistError(
            f"each size needs at least {MIN_POINTS_PER_SIZE} values of N; size {int(sizes[counts.argmin()])} "
            f"has {counts.min()}")
    n_lows = sizes.size if per_size_floor else 1
    n_par = 4 + n_lows
    if y.size < n_par + 2:
        raise PFDistError(f"too few points ({y.size}) for {n_par} parameters; need at least {n_par + 2}")
    lo_a, hi_a = alpha_bounds
    if not lo_a < hi_a:
        raise PFDistError(f"alpha_bounds must be increasing, got {alpha_bounds}")
    if not 0 < confidence < 1:
        raise PFDistError(f"confidence must be in (0, 1), got {confidence}")

    centre = float(np.mean(np.log2(sizes)))
    low_idx = size_idx if per_size_floor else np.zeros_like(size_idx)
    d = _Data(log_n=np.log2(n_raw), log_p=np.log2(params_raw) - centre, low_idx=low_idx, y=y,
              weight=weight, centre=centre,
              lower=np.array([lo_a, -np.inf, _W_BOUNDS[0]] + [y.min() - np.ptp(y)] * (1 + n_lows)),
              upper=np.array([hi_a, np.inf, _W_BOUNDS[1]] + [y.max() + np.ptp(y)] * (1 + n_lows)))

    # Multiple starts: alpha on a grid, m between the high and the low points, two widths.
    high0 = np.max(y)
    lows0 = (np.array([y[size_idx == s].min() for s in range(sizes.size)])
             if per_size_floor else np.array([y.min()]))
    below = y < high0 - 0.5 * np.ptp(y)
    best, best_rss = None, np.inf
    for alpha0 in np.linspace(lo_a, hi_a, 9)[1:-1]:
        u = d.log_n - alpha0 * d.log_p
        m0 = 0.5 * (np.median(u[below]) + np.median(u[~below])) if 0 < below.sum() < y.size else np.median(u)
        for w0 in (0.5, 2.0):
            theta, rss = _fit(d, np.concatenate([[alpha0, m0, w0, high0], lows0]))
            if rss < best_rss:
                best, best_rss = theta, rss
    theta = best
    resid = y - _model(theta, d.log_n, d.log_p, d.low_idx)[0]
    r2 = float(1.0 - np.sum(resid ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300))
    rmse = float(np.sqrt(np.mean(resid ** 2)))

    # Profile-likelihood intervals (module docstring).
    threshold = f_dist.ppf(confidence, 1, y.size - n_par) * best_rss / (y.size - n_par)
    alpha, midpoint = float(theta[0]), float(theta[1] - theta[0] * centre)
    alpha_ci = _profile_interval(d, theta, "alpha", alpha, threshold, alpha_bounds, 0.02)
    # Beyond these the sigmoid is flat over every point, whatever alpha: the interval is open.
    x_lo = d.log_n.min() - hi_a * np.log2(sizes.max()) - 4 * _W_BOUNDS[1]
    x_hi = d.log_n.max() - lo_a * np.log2(sizes.min()) + 4 * _W_BOUNDS[1]
    midpoint_ci = _profile_interval(d, theta, "midpoint", midpoint, threshold, (x_lo, x_hi), 0.1)
    midpoint_ci = (-np.inf if midpoint_ci[0] <= x_lo else midpoint_ci[0],
                   np.inf if midpoint_ci[1] >= x_hi else midpoint_ci[1])

    lows = theta[4:] if per_size_floor else np.repeat(theta[4], sizes.size)
    degenerate = _degenerate(theta, d, value_range)
    return CollapseFit(
        alpha=alpha, alpha_ci=alpha_ci, midpoint=midpoint, midpoint_ci=midpoint_ci,
        width=float(theta[2]), plateau_high=float(theta[3]),
        plateau_low=tuple(float(v) for v in lows), sizes=tuple(int(s) for s in sizes),
        per_size_floor=per_size_floor, r2=r2, rmse=rmse, n_points=int(y.size),
        n_sizes=int(sizes.size), confidence=confidence, degenerate=degenerate)


def _degenerate(theta: np.ndarray, d: _Data, value_range: tuple[float, float] | None) -> tuple[str, ...]:
    """Why a fit is not a result: parameters on their bounds, plateaus outside ``value_range``."""
    reasons = []
    names = ["α", None, "width w", "memorization plateau"] + ["generalization floor"] * (theta.size - 4)
    for i, name in enumerate(names):
        if name is None:
            continue
        span = d.upper[i] - d.lower[i]
        for bound in (d.lower[i], d.upper[i]):
            if abs(theta[i] - bound) <= 1e-3 * span and name not in " ".join(reasons):
                reasons.append(f"{name} {theta[i]:.3g} at its bound {bound:.3g}")
    if value_range is not None:
        lo, hi = value_range
        outside = [v for v in theta[3:] if not lo <= v <= hi]
        if outside:
            reasons.append(f"plateau {outside[0]:.3g} outside [{lo:g}, {hi:g}]")
    return tuple(reasons)


def fit_collapse_rows(rows: Sequence[dict[str, Any]], *, column: str = "e_gen", **kwargs: Any) -> CollapseFit:
    """``fit_collapse`` on rows of ``scaling.csv``: ``column`` against (n, params).

    ``e_gen`` / ``e_mem`` are weighted by their stderr columns; ``mem_ratio`` (the copy share)
    by the half-width of its 95% interval (floored at 0.01) with one shared floor.
    """
    if column == "mem_ratio":
        se = [max((r.get("mem_ratio_ci_high", float("nan")) - r.get("mem_ratio_ci_low", float("nan"))) / 3.92, 0.01)
              if "mem_ratio_ci_high" in r else 0.01 for r in rows]
        kwargs.setdefault("per_size_floor", False)
        kwargs.setdefault("value_range", (0.0, 1.0))
    else:
        se = [row.get(f"{column}_stderr", float("nan")) for row in rows]
    return fit_collapse([r["n"] for r in rows], [r["params"] for r in rows], [r[column] for r in rows],
                        e_gen_stderr=se, **kwargs)


def family(label: str) -> str:
    """A student's family from its label, the label without its trailing size number:
    ``"unet-8"`` -> ``"unet"``, ``"mlp-w256"`` -> ``"mlp-w"``, ``"w16"`` -> ``"w"``."""
    return re.sub(r"\d+$", "", label).rstrip("-_ ") or label


def by_size(rows: Sequence[dict[str, Any]], *, least: int, what: str) -> list[tuple[int, list[dict[str, Any]]]]:
    """[(params, that size's rows sorted by N)], smallest model first; each size needs ``least`` N
    (``what`` names the statistic in the error)."""
    sizes: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        sizes.setdefault(int(r["params"]), []).append(r)
    out = []
    for params, group in sorted(sizes.items()):
        if len(group) < least:
            raise PFDistError(f"size {params} has {len(group)} N; {what} needs at least {least}.")
        out.append((params, sorted(group, key=lambda r: r["n"])))
    return out


def collapse_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a collapse is fitted on: the architecture family with the most sizes (the first
    one listed on a tie). The paper's collapse is within one family; other families in a scaling
    table (e.g. an MLP next to U-Nets) are controls, drawn but not fitted."""
    sizes: dict[str, set] = {}
    for r in rows:
        sizes.setdefault(family(str(r.get("student", ""))), set()).add(r["params"])
    if len(sizes) <= 1:
        return list(rows)
    main = max(sizes, key=lambda f: len(sizes[f]))  # dicts keep order: the first family wins a tie
    return [r for r in rows if family(str(r.get("student", ""))) == main]


def fit_scaling(rows: Sequence[dict[str, Any]]) -> tuple[CollapseFit | None, CollapseFit | None]:
    """The two collapse fits of a scaling table (on :func:`collapse_rows`): (E_gen, copy share);
    None (with a warning) when a fit is not possible, e.g. one size only or too few points."""
    import warnings

    rows = collapse_rows(rows)
    fits: list[CollapseFit | None] = []
    for column in ("e_gen", "mem_ratio"):
        try:
            fits.append(fit_collapse_rows(rows, column=column) if rows else None)
        except PFDistError as e:
            warnings.warn(f"no collapse fit of {column}: {e}", stacklevel=2)
            fits.append(None)
    return fits[0], fits[1]
