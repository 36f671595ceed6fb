"""The paper's three studies as code: presets, units of work, tables, figures, reports."""

from pfdist.experiments.config import Preset
from pfdist.experiments.outcome import analyze, draw
from pfdist.experiments.presets import PRESETS, get_preset, load_preset
from pfdist.experiments.reproduce import reproduce
from pfdist.experiments.rescore import rescore
from pfdist.experiments.run import run_preset
from pfdist.experiments.studies import STUDIES, BiasVarianceStudy, Dynamics, RealVsSynthetic, Scaling, Student, Unit
from pfdist.experiments.units import Context, units_of

__all__ = [
    "STUDIES", "BiasVarianceStudy", "Context", "Dynamics", "PRESETS", "Preset", "RealVsSynthetic", "Scaling", "Student",
    "Unit", "analyze", "draw", "get_preset", "load_preset", "reproduce", "rescore", "run_preset", "units_of",
]
