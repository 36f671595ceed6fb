"""The studies, one module each; the registry everything above iterates over.

Adding a study: a module in this package exporting ``STUDY`` (a :class:`Study`), and one line
here. Presets read and write its config under its name, the run does its units, the tables,
analysis, figures, report and findings table include it.
"""

from pfdist.experiments.studies import bias_variance, copier, distill, dynamics, metrics, real_vs_synthetic, scaling
from pfdist.experiments.studies.base import RunData, Student, Study, Unit
from pfdist.experiments.studies.bias_variance import BiasVarianceStudy
from pfdist.experiments.studies.dynamics import Dynamics
from pfdist.experiments.studies.metrics import Metrics
from pfdist.experiments.studies.real_vs_synthetic import RealVsSynthetic
from pfdist.experiments.studies.scaling import Scaling

# Registry order is the order of the tables, the findings table and the report's sections.
STUDIES: dict[str, Study] = {s.name: s for s in (
    scaling.STUDY,
    copier.STUDY,
    dynamics.STUDY,
    bias_variance.STUDY,
    real_vs_synthetic.STUDY,
    metrics.STUDY,
    distill.STUDY,
)}

__all__ = ["STUDIES", "BiasVarianceStudy", "Dynamics", "Metrics", "RealVsSynthetic", "RunData", "Scaling", "Student", "Study",
           "Unit"]
