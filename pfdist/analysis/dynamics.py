"""Shapes of E_gen over training epochs: early learning and epoch-wise double descent.

Paper, Finding 2: in the transition regime E_gen reaches a minimum early then rises while the
train loss keeps falling ("early learning"); in the generalization regime it descends, bumps,
then descends again below the first minimum ("epoch-wise double descent").

Detection, so that noise does not trigger it:

- Smoothing: a light [1, 2, 1] / 4 running mean (edges repeated) picks the epochs; the values
  reported are the measured E_gen at those epochs. The minimum of the smoothed curve can sit at
  another epoch than the raw minimum: the report keeps both (``min_*`` smoothed, ``raw_min_*``).
- Noise per point: ``se_i = max(stderr_i, sigma_scatter)``, where sigma_scatter is the robust
  scatter of the curve around a local line, 1.4826 MAD(second differences) / sqrt(6). The given
  standard errors cover the evaluation noise only; the scatter also catches training noise.
- A difference between epochs i and j is significant when it exceeds
  ``Z * sqrt(se_i^2 + se_j^2)`` with Z = 2.5. Thresholds use the unsmoothed errors, which is
  conservative. On flat white noise (50 epochs) this flags early learning or double descent in
  under 1% of curves.
- Early learning: the smoothed minimum is neither the first nor the last epoch, the descent to
  it and the rise after it to the last epoch are both significant. depth = final - minimum.
- Double descent: a local maximum (the peak) with a significant descent from the first epoch to
  the minimum before it, a significant rise from that minimum to the peak, a significant fall
  from the peak to the minimum after it, and that second minimum below the first or not
  significantly above it. When several peaks qualify the most prominent one is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from pfdist.analysis.regime import REGIMES, LossTrend, Regime, classify_regime, loss_trend
from pfdist.errors import PFDistError

Z = 2.5
MIN_EPOCHS = 5


@dataclass(frozen=True)
class DoubleDescent:
    first_min_epoch: float
    first_min_value: float
    peak_epoch: float
    peak_value: float
    second_min_epoch: float
    second_min_value: float


@dataclass(frozen=True)
class DynamicsReport:
    """``kind``: "early_learning", "double_descent", "early_learning+double_descent" or "absent"."""

    kind: str
    reason: str
    min_epoch: float  # epoch of the (smoothed) global minimum of E_gen
    min_value: float  # measured E_gen there
    final_value: float  # measured E_gen at the last epoch
    depth: float  # final_value - min_value
    threshold: float  # significance threshold for (min, final) differences
    early_learning: bool
    double_descent: DoubleDescent | None
    noise: float  # median per-point noise scale used
    raw_min_epoch: float = float("nan")  # epoch of the measured (unsmoothed) minimum of E_gen
    raw_min_value: float = float("nan")

    def minimum_text(self) -> str:
        """The minimum as quoted: the smoothed curve's, and the raw one when it differs."""
        text = f"{self.min_value:.3g} @ epoch {self.min_epoch:g} (minimum of the smoothed curve"
        if self.raw_min_epoch == self.raw_min_epoch and self.raw_min_epoch != self.min_epoch:
            text += f"; raw minimum {self.raw_min_value:.3g} @ epoch {self.raw_min_epoch:g}"
        return text + ")"

    @property
    def absent(self) -> bool:
        return self.kind == "absent"


def _smooth(y: np.ndarray) -> np.ndarray:
    padded = np.concatenate([y[:1], y, y[-1:]])
    return np.convolve(padded, [0.25, 0.5, 0.25], mode="valid")


def _scatter(y: np.ndarray) -> float:
    d2 = y[:-2] - 2.0 * y[1:-1] + y[2:]
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / np.sqrt(6.0))


def _validate(epochs, e_gen, e_gen_stderr):
    epochs, y = np.asarray(epochs, dtype=float).ravel(), np.asarray(e_gen, dtype=float).ravel()
    if y.size == 0:
        raise PFDistError("e_gen is empty: no epochs to analyse")
    if epochs.size != y.size:
        raise PFDistError(f"epochs and e_gen must have the same length, got {epochs.size} and {y.size}")
    if not (np.all(np.isfinite(epochs)) and np.all(np.isfinite(y))):
        raise PFDistError("epochs and e_gen must be finite; drop unevaluated epochs first")
    if np.any(np.diff(epochs) <= 0):
        raise PFDistError("epochs must be strictly increasing; sort the rows by epoch and drop duplicates")
    se = np.zeros_like(y)
    if e_gen_stderr is not None:
        se = np.asarray(e_gen_stderr, dtype=float).ravel()
        if se.size != y.size:
            raise PFDistError(f"e_gen_stderr has {se.size} values for {y.size} epochs")
        se = np.where(np.isfinite(se) & (se > 0), se, 0.0)
    return epochs, y, se


def _find_double_descent(s: np.ndarray, delta: Callable[[int, int], float]) -> tuple[int, int, int] | None:
    """(first minimum, peak, second minimum) indices of the most prominent qualifying bump, or None."""
    best, best_score = None, 0.0
    for j in range(1, s.size - 1):
        if not (s[j] > s[j - 1] and s[j] >= s[j + 1]):
            continue
        i1 = int(np.argmin(s[:j]))
        i2 = j + 1 + int(np.argmin(s[j + 1:]))
        rise, fall = (s[j] - s[i1]) / delta(j, i1), (s[j] - s[i2]) / delta(j, i2)
        ok = (s[0] - s[i1] > delta(0, i1) and rise > 1 and fall > 1
              and s[i2] <= s[i1] + delta(i1, i2))
        if ok and min(rise, fall) > best_score:
            best, best_score = (i1, j, i2), min(rise, fall)
    return best


def detect_dynamics(
    epochs: Sequence[float] | np.ndarray,
    e_gen: Sequence[float] | np.ndarray,
    *,
    e_gen_stderr: Sequence[float] | np.ndarray | None = None,
) -> DynamicsReport:
    """Classify an E_gen(epoch) curve (module docstring). epochs, e_gen, e_gen_stderr: (epochs,)."""
    epochs, y, se = _validate(epochs, e_gen, e_gen_stderr)
    if y.size < MIN_EPOCHS:
        i = int(np.argmin(y))
        return DynamicsReport(
            kind="absent", reason=f"too few epochs ({y.size} < {MIN_EPOCHS}) to tell a trend from noise",
            min_epoch=float(epochs[i]), min_value=float(y[i]), final_value=float(y[-1]),
            depth=float(y[-1] - y[i]), threshold=float("nan"), early_learning=False,
            double_descent=None, noise=float("nan"), raw_min_epoch=float(epochs[i]), raw_min_value=float(y[i]))
    se = np.maximum(se, _scatter(y))
    se = np.maximum(se, 1e-12 * max(1.0, float(np.max(np.abs(y)))))  # noise-free curves

    def delta(i: int, j: int) -> float:
        return Z * float(np.hypot(se[i], se[j]))

    s = _smooth(y)
    i_min, last = int(np.argmin(s)), y.size - 1
    descent = s[0] - s[i_min] > delta(0, i_min)
    rise = s[last] - s[i_min] > delta(last, i_min)
    early = 0 < i_min < last and descent and rise
    dd = _find_double_descent(s, delta)

    reasons = []
    if dd is not None:
        i1, j, i2 = dd
        reasons.append(f"double descent: {y[i1]:.4g} at epoch {epochs[i1]:g}, peak {y[j]:.4g} at epoch "
                       f"{epochs[j]:g}, {y[i2]:.4g} at epoch {epochs[i2]:g}")
    if early:
        reasons.append(f"early learning: smoothed-curve minimum at epoch {epochs[i_min]:g} (E_gen {y[i_min]:.4g}), rises by "
                       f"{s[last] - s[i_min]:.3g} (threshold {delta(last, i_min):.3g}) by epoch {epochs[last]:g}")
    if not reasons:
        if np.ptp(s) <= delta(int(np.argmax(s)), i_min):
            reasons.append(f"flat within noise: smoothed range {np.ptp(s):.3g} <= threshold "
                           f"{delta(int(np.argmax(s)), i_min):.3g}")
        elif not descent:
            reasons.append(f"no significant descent before the minimum at epoch {epochs[i_min]:g}")
        else:
            reasons.append(f"descends to its minimum with no significant rise after it "
                           f"({s[last] - s[i_min]:.3g} <= threshold {delta(last, i_min):.3g}) and no bump")
    kind = "+".join(k for k, found in (("early_learning", early), ("double_descent", dd is not None)) if found)
    return DynamicsReport(
        kind=kind or "absent", reason="; ".join(reasons), min_epoch=float(epochs[i_min]),
        min_value=float(y[i_min]), final_value=float(y[last]), depth=float(y[last] - y[i_min]),
        threshold=delta(last, i_min), early_learning=bool(early),
        double_descent=None if dd is None else DoubleDescent(
            float(epochs[dd[0]]), float(y[dd[0]]), float(epochs[dd[1]]), float(y[dd[1]]),
            float(epochs[dd[2]]), float(y[dd[2]])),
        noise=float(np.median(se)), raw_min_epoch=float(epochs[int(np.argmin(y))]), raw_min_value=float(np.min(y)))


def dynamics_key(student: str, n: int) -> str:
    """The key of one training run in ``detect_run_dynamics``'s result."""
    return f"{student} N={n}"


def mean_over_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``dynamics.csv`` averaged over training seeds: one row per (student, N, epoch).

    Numeric columns become the mean over the S seeds; ``e_gen_stderr`` and ``e_mem_stderr``
    become the standard error of that mean, ``max(std_between / sqrt(S), rms(stderr) / sqrt(S))``
    (the between-seed spread, floored by the evaluation noise when S is small and the seeds agree
    by chance); ``seeds`` = S. Rows without a ``seed`` column, or with one seed, pass through.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["student"], row["params"], row["n"], row["epoch"]), []).append(row)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append({**group[0], "seeds": 1})
            continue
        mean = dict(group[0], seeds=len(group))
        for key, value in group[0].items():
            if key in ("student", "params", "n", "epoch", "seed") or not isinstance(value, (int, float)):
                continue
            values = np.array([r[key] for r in group], dtype=float)
            mean[key] = float(values.mean())
        for name in ("e_gen", "e_mem"):
            if name in group[0]:
                values = np.array([r[name] for r in group], dtype=float)
                given = np.array([r.get(f"{name}_stderr", np.nan) for r in group], dtype=float)
                eval_se = float(np.sqrt(np.nanmean(given**2))) if np.isfinite(given).any() else 0.0
                mean[f"{name}_stderr"] = max(float(values.std(ddof=1)), eval_se) / np.sqrt(len(group))
        mean.pop("seed", None)
        out.append(mean)
    return out


def detect_run_dynamics(rows: Sequence[dict[str, Any]]) -> dict[str, DynamicsReport]:
    """``detect_dynamics`` for every (student, N) in rows of ``dynamics.csv``, by size then N, on the
    mean curve over training seeds with its between-seed standard error (:func:`mean_over_seeds`)."""
    rows = mean_over_seeds(rows)
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault((row["params"], row["n"], row["student"]), []).append(row)
    out = {}
    for (_, n, student), run in sorted(runs.items(), key=lambda kv: kv[0][:2]):
        run = sorted(run, key=lambda r: r["epoch"])
        out[dynamics_key(student, n)] = detect_dynamics(
            [r["epoch"] for r in run], [r["e_gen"] for r in run],
            e_gen_stderr=[r.get("e_gen_stderr", float("nan")) for r in run])
    return out


@dataclass(frozen=True)
class DynamicsVerdict:
    """Early learning and double descent of one training run, each judged in its regime and with
    the training loss (:func:`judge_dynamics`). Each verdict is "detected", "not detected",
    "not measured" (no loss trend to judge) or "not in the <regime> regime" (no verdict)."""

    report: DynamicsReport
    regime: Regime
    early_learning: str
    early_learning_loss: LossTrend | None  # the loss over [E_gen minimum, last epoch]
    double_descent: str
    double_descent_loss: LossTrend | None  # the loss over [first minimum, peak]
    reason: str


def _judge(found: bool, regime: Regime, wanted: str, trend: LossTrend | None, what: str) -> tuple[str, str]:
    """(verdict, reason) of one shape: its regime first, then the detector, then the loss."""
    if regime.label != wanted:
        return f"not in the {wanted} regime", f"{what}: no verdict, regime {regime.describe()}"
    if not found:
        return "not detected", f"{what}: not detected by the E_gen detector"
    if trend is None:
        return "not measured", f"{what}: E_gen shape found, but fewer than 3 epochs with a train loss over its span"
    return ("detected" if trend.falling else "not detected"), f"{what}: E_gen shape found, {trend.describe()}"


def _interval(row: dict[str, Any], column: str) -> tuple[float, float]:
    """A column's 95% interval: its ``_ci_low`` / ``_ci_high`` columns, else value +- 1.96 ``_stderr``."""
    if f"{column}_ci_low" in row and f"{column}_ci_high" in row:
        return float(row[f"{column}_ci_low"]), float(row[f"{column}_ci_high"])
    if f"{column}_stderr" in row:
        half = 1.959963984540054 * float(row[f"{column}_stderr"])
        return float(row[column]) - half, float(row[column]) + half
    raise PFDistError(f"the dynamics rows have no interval for {column!r}: need {column}_ci_low and "
                      f"{column}_ci_high, or {column}_stderr.")


def judge_dynamics(
    rows: Sequence[dict[str, Any]], *, regime_column: str = "mem_ratio",
    generalization: float | tuple[float, float] = 0.0, memorization: float | tuple[float, float] = 1.0,
    at: str | float = "last", loss_column: str = "train_loss", double_descent_regime: str = "generalization",
) -> DynamicsVerdict:
    """Early learning and double descent of one training run (rows of ``dynamics.csv`` for one
    student and N; several training seeds are averaged first, :func:`mean_over_seeds`).

    Early learning, statistic and rule: (1) the run is in the transition regime: the copy share
    (``regime_column``) with its 95% interval at epoch ``at`` lies strictly between the plateaus
    ``generalization`` and ``memorization`` (:func:`pfdist.analysis.regime.classify_regime`; else
    "not in the transition regime", no verdict); (2) :func:`detect_dynamics` finds E_gen's
    significant descent to a minimum and rise after it; (3) over that rise, from the (smoothed)
    minimum to the last epoch, the training loss is still falling: the 95% interval of the
    least-squares slope of log(train loss) per epoch lies below 0 (:func:`loss_trend`).
    Double descent: the same three tests, with the detector's bump and the loss over its rise,
    [first minimum, peak], in the regime ``double_descent_regime``: "generalization" by default,
    where the paper saw it (N = 2^16; early learning at N = 2^12, the transition).

    ``at``: "last" (default: the trained model's regime, as the paper names regimes by N),
    "first" (the first evaluated epoch after epoch 0), "minimum" (E_gen's smoothed minimum) or an
    epoch. Several seeds' intervals are averaged bound by bound, which is wider than the mean's.
    """
    rows = sorted(mean_over_seeds(rows), key=lambda r: r["epoch"])
    runs = {(r["student"], r["n"]) for r in rows}
    if len(runs) != 1:
        raise PFDistError(f"judge_dynamics takes one run's rows (one student and N); got {len(runs) or 'no'} runs.")
    if double_descent_regime not in REGIMES:
        raise PFDistError(f"double_descent_regime must be one of {REGIMES} (got {double_descent_regime!r}).")
    epochs = [r["epoch"] for r in rows]
    report = detect_dynamics(epochs, [r["e_gen"] for r in rows],
                             e_gen_stderr=[r.get("e_gen_stderr", float("nan")) for r in rows])
    row = _regime_row(rows, at, report)
    if not math.isfinite(float(row.get(regime_column, math.nan))):  # no copy share measured: no regime, no verdict
        g, m = (v if isinstance(v, tuple) else (float(v), float(v)) for v in (generalization, memorization))
        regime = Regime(math.nan, (math.nan, math.nan), g, m, "undetermined", float(row["epoch"]))
    else:
        regime = classify_regime(float(row[regime_column]), _interval(row, regime_column),
                                 generalization=generalization, memorization=memorization, epoch=float(row["epoch"]))
    loss = [float(r.get(loss_column, float("nan"))) for r in rows]
    el_loss = loss_trend(epochs, loss, start=report.min_epoch, end=epochs[-1]) if report.early_learning else None
    dd = report.double_descent
    dd_loss = None if dd is None else loss_trend(epochs, loss, start=dd.first_min_epoch, end=dd.peak_epoch)
    early, why_early = _judge(report.early_learning, regime, "transition", el_loss, "early learning")
    double, why_double = _judge(dd is not None, regime, double_descent_regime, dd_loss, "double descent")
    return DynamicsVerdict(report, regime, early, el_loss, double, dd_loss, f"{why_early}; {why_double}")


def _regime_row(rows: list[dict[str, Any]], at: str | float, report: DynamicsReport) -> dict[str, Any]:
    """The row the regime is judged at (``judge_dynamics``'s ``at``)."""
    if at == "last":
        return rows[-1]
    if at == "first":
        trained = [r for r in rows if r["epoch"] > 0]
        if not trained:
            raise PFDistError("no evaluated epoch after epoch 0 to judge the regime at; use at='last'.")
        return trained[0]
    epoch = report.min_epoch if at == "minimum" else at
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        raise PFDistError(f"at must be 'last', 'first', 'minimum' or an epoch (got {at!r}).")
    match = [r for r in rows if r["epoch"] == epoch]
    if not match:
        raise PFDistError(f"no row at epoch {epoch:g} to judge the regime at; epochs are {[r['epoch'] for r in rows]}.")
    return match[0]
