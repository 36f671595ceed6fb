"""Which regime a student is in, and whether its training loss is still falling.

Two small tests that the training-dynamics verdicts (:func:`pfdist.analysis.judge_dynamics`)
put before "early learning" and "double descent":

- **Regime** (:func:`classify_regime`). A quantity that moves between two plateaus as N grows:
  the copy share (0 for a student that generalizes, 1 for the ideal copier) or E_gen (its floor
  when generalizing, the copier's plateau when memorizing). Statistic: its value at one epoch with
  its 95% interval; the plateaus are points or 95% intervals. Rule: the interval *reaches* a
  plateau when it overlaps that plateau's interval (within 1e-9: a Wilson interval at 0 copies
  has a lower end of 1e-19, not 0). "transition": it reaches neither; "generalization": only
  the low one; "memorization": only the high one; "undetermined": both (too wide to say).
- **Loss trend** (:func:`loss_trend`). Statistic: the least-squares slope of log(train loss) on
  epoch over a span of epochs; error: its standard error, with Student's t quantile at n - 2
  degrees of freedom (n epochs in the span, at least 3). Rule: the loss is falling when the
  slope's 95% interval lies below 0. A curved (decelerating) decay leaves residuals that widen
  the interval, so the rule errs toward "not falling".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pfdist.errors import PFDistError

REACH_TOLERANCE = 1e-9
REGIMES = ("transition", "generalization", "memorization", "undetermined")


def _plateau(name: str, plateau: float | tuple[float, float]) -> tuple[float, float]:
    lo, hi = (plateau, plateau) if isinstance(plateau, (int, float)) else tuple(plateau)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise PFDistError(f"the {name} plateau must be a number or a (low, high) interval (got {plateau!r}).")
    return float(lo), float(hi)


@dataclass(frozen=True)
class Regime:
    """A value with its 95% interval placed between the generalization and memorization plateaus."""

    value: float
    ci: tuple[float, float]
    generalization: tuple[float, float]  # the low plateau's interval
    memorization: tuple[float, float]  # the high plateau's interval
    label: str  # one of REGIMES (module docstring)
    epoch: float = math.nan  # the epoch it was measured at, when it comes from a training run

    def describe(self) -> str:
        at = f" at epoch {self.epoch:g}" if math.isfinite(self.epoch) else ""
        return (f"{self.value:.3g} (95% CI {self.ci[0]:.3g}–{self.ci[1]:.3g}){at} between plateaus "
                f"{self.generalization[1]:.3g} and {self.memorization[0]:.3g}: {self.label}")


def classify_regime(value: float, ci: tuple[float, float], *, generalization: float | tuple[float, float] = 0.0,
                    memorization: float | tuple[float, float] = 1.0, epoch: float = math.nan) -> Regime:
    """The regime of a value with 95% interval ``ci`` (module docstring). The defaults are the copy
    share's plateaus, 0 and 1; for E_gen pass its floor and the copier's plateau (intervals)."""
    g, m = _plateau("generalization", generalization), _plateau("memorization", memorization)
    lo, hi = (float(c) for c in ci)
    inside = lo - REACH_TOLERANCE <= value <= hi + REACH_TOLERANCE
    if not (math.isfinite(value) and math.isfinite(lo) and math.isfinite(hi) and inside):
        raise PFDistError(f"need a finite value inside its interval (got {value!r} with {ci!r}).")
    if not g[1] < m[0]:
        raise PFDistError(f"the generalization plateau {g} must lie below the memorization plateau {m}.")
    reaches_g, reaches_m = lo <= g[1] + REACH_TOLERANCE, hi >= m[0] - REACH_TOLERANCE
    label = {(False, False): "transition", (True, False): "generalization",
             (False, True): "memorization", (True, True): "undetermined"}[(reaches_g, reaches_m)]
    return Regime(float(value), (lo, hi), g, m, label, float(epoch))


@dataclass(frozen=True)
class LossTrend:
    """Least-squares slope of log(train loss) per epoch over [first_epoch, last_epoch]."""

    first_epoch: float
    last_epoch: float
    points: int
    slope: float
    slope_ci: tuple[float, float]

    @property
    def falling(self) -> bool:
        return self.slope_ci[1] < 0

    def describe(self) -> str:
        return (f"train loss {'falling' if self.falling else 'not falling'} over epochs {self.first_epoch:g}–"
                f"{self.last_epoch:g} (slope of log loss {self.slope:.3g}/epoch, 95% CI {self.slope_ci[0]:.3g} … "
                f"{self.slope_ci[1]:.3g})")


def loss_trend(epochs: Sequence[float], train_loss: Sequence[float], *, start: float,
               end: float) -> LossTrend | None:
    """The loss trend over the epochs in [start, end] (module docstring); None when fewer than 3
    of them have a finite, positive loss (no trend can be told)."""
    epochs, loss = np.asarray(epochs, dtype=float), np.asarray(train_loss, dtype=float)
    if epochs.shape != loss.shape:
        raise PFDistError(f"epochs and train_loss must have the same length (got {epochs.size} and {loss.size}).")
    keep = (epochs >= start) & (epochs <= end) & np.isfinite(loss) & (loss > 0)
    x, y = epochs[keep], np.log(loss[keep])
    n = x.size
    if n < 3:
        return None
    dx = x - x.mean()
    slope = float(dx @ (y - y.mean()) / (dx @ dx))
    residual = y - y.mean() - slope * dx
    se = math.sqrt(float(residual @ residual) / (n - 2) / float(dx @ dx))
    from scipy.stats import t as t_dist  # scipy: when analysing, not in the processes that train
    half = float(t_dist.ppf(0.975, n - 2)) * se
    return LossTrend(float(x[0]), float(x[-1]), n, slope, (slope - half, slope + half))
