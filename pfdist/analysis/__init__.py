"""Analysis of results files: the MtoG collapse fit and training-dynamics detection."""

from pfdist.analysis.collapse import CollapseFit, collapse_x, fit_collapse, fit_collapse_rows
from pfdist.analysis.collapse_report import AlphaEstimate, CollapseReport, collapse_report
from pfdist.analysis.dynamics import (DoubleDescent, DynamicsReport, detect_dynamics, detect_run_dynamics,
                                      dynamics_key, mean_over_seeds)
from pfdist.analysis.results import read_rows

__all__ = [
    "AlphaEstimate", "CollapseFit", "CollapseReport", "DoubleDescent", "DynamicsReport",
    "collapse_report", "collapse_x", "detect_dynamics", "detect_run_dynamics", "dynamics_key", "fit_collapse",
    "fit_collapse_rows", "mean_over_seeds", "read_rows",
]
