"""Analysis of results files: the MtoG collapse fit and training-dynamics detection."""

from pfdist.analysis.bias_variance import (BiasVarianceCI, SizeTrend, bias_variance_ci, bias_variance_intervals,
                                           bias_variance_trend, residual_gram)
from pfdist.analysis.collapse import CollapseFit, collapse_x, fit_collapse, fit_collapse_rows
from pfdist.analysis.collapse_report import AlphaEstimate, CollapseReport, collapse_report
from pfdist.analysis.dynamics import (DoubleDescent, DynamicsReport, DynamicsVerdict, detect_dynamics,
                                      detect_run_dynamics, dynamics_key, judge_dynamics, mean_over_seeds)
from pfdist.analysis.real_vs_synthetic import Comparison, RealVsSynthetic, compare_real_synthetic
from pfdist.analysis.regime import LossTrend, Regime, classify_regime, loss_trend
from pfdist.analysis.results import BIAS_VARIANCE, DYNAMICS, SCALING, SCHEMAS, read_rows

__all__ = [
    "AlphaEstimate", "BIAS_VARIANCE", "BiasVarianceCI", "SizeTrend", "bias_variance_ci", "bias_variance_intervals",
    "bias_variance_trend", "residual_gram", "DYNAMICS", "SCALING", "SCHEMAS", "CollapseFit", "CollapseReport", "DoubleDescent", "DynamicsReport", "DynamicsVerdict",
    "Comparison", "RealVsSynthetic", "compare_real_synthetic", "LossTrend", "Regime", "classify_regime", "judge_dynamics", "loss_trend",
    "collapse_report", "collapse_x", "detect_dynamics", "detect_run_dynamics", "dynamics_key", "fit_collapse",
    "fit_collapse_rows", "mean_over_seeds", "read_rows",
]
