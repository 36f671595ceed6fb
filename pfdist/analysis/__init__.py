"""Analysis of results files: the MtoG collapse fit, training-dynamics detection, and each finding's
statistic with its error and rule (floors, saturation, bias-variance, dynamics, real vs synthetic,
distilled students' half-way N)."""

from pfdist.analysis.bias_variance import (BiasVarianceCI, SizeTrend, bias_variance_ci, bias_variance_intervals,
                                           bias_variance_trend, residual_gram)
from pfdist.analysis.collapse import CollapseFit, collapse_x, fit_collapse, fit_collapse_rows
from pfdist.analysis.collapse_report import AlphaEstimate, CollapseReport, collapse_report
from pfdist.analysis.distill import Crossing, crossing, fewer_samples_finding, steps_finding
from pfdist.analysis.dynamics import (DoubleDescent, DynamicsReport, DynamicsVerdict, detect_dynamics,
                                      detect_run_dynamics, dynamics_key, judge_dynamics, mean_over_seeds)
from pfdist.analysis.floors import Floor, FloorOrder, floor_order, floor_verdict, floors
from pfdist.analysis.real_vs_synthetic import Comparison, RealVsSyntheticVerdict, compare_real_synthetic
from pfdist.analysis.regime import LossTrend, Regime, classify_regime, loss_trend
from pfdist.analysis.saturation import MemorizationGap, Reached, memorization_gap, reached, saturation_verdict
from pfdist.analysis.results import read_rows

__all__ = [
    "AlphaEstimate", "bias_variance_ci", "bias_variance_intervals", "bias_variance_trend",
    "BiasVarianceCI", "classify_regime", "collapse_report", "collapse_x", "CollapseFit", "CollapseReport",
    "compare_real_synthetic", "Comparison", "crossing", "Crossing", "detect_dynamics", "detect_run_dynamics",
    "DoubleDescent", "dynamics_key", "DynamicsReport", "DynamicsVerdict", "fewer_samples_finding", "fit_collapse",
    "fit_collapse_rows", "Floor", "floor_order", "floor_verdict", "FloorOrder", "floors", "judge_dynamics",
    "loss_trend", "LossTrend", "mean_over_seeds", "memorization_gap", "MemorizationGap", "reached", "Reached",
    "read_rows", "RealVsSyntheticVerdict", "Regime", "residual_gram", "saturation_verdict", "SizeTrend",
    "steps_finding",
]
