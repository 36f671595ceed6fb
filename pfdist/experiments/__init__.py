"""The paper's three studies as code: presets, units of work, tables, figures, reports."""

from pfdist.experiments.config import BiasVarianceStudy, Dynamics, Preset, Scaling, Student
from pfdist.experiments.presets import PRESETS, get_preset, load_preset
from pfdist.experiments.reproduce import draw, reproduce
from pfdist.experiments.rescore import rescore
from pfdist.experiments.run import run_preset
from pfdist.experiments.units import Context, Unit, units_of

__all__ = [
    "BiasVarianceStudy", "Context", "Dynamics", "PRESETS", "Preset", "Scaling", "Student", "Unit", "draw",
    "get_preset", "load_preset", "reproduce", "rescore", "run_preset", "units_of",
]
