"""pfdist: probability flow distance for measuring generalization in diffusion models.

Diagnostics go to the ``logging`` logger ``"pfdist"`` (and its children), silent unless the
application configures logging; the ``pfdist`` command's ``-v`` / ``-q`` set its level.
"""

import logging as _logging

from pfdist.denoisers import (
    EmpiricalDenoiser,
    Gaussian,
    GaussianMixture,
    gaussian_pfd,
    nearest_neighbors,
    random_low_rank_mixture,
)
from pfdist.data import digits_mixture, load_digits
from pfdist.descriptors import SSCD, KernelDescriptor, TorchScriptDescriptor
from pfdist.errors import CheckpointError, DistributedError, NonFiniteError, PFDistError, PFDistWarning
from pfdist.distance import PFDResult, squared_distances
from pfdist.flows import flow_outputs
from pfdist.guidance import guided
from pfdist.maps import GeneratorMap, ODEMap, flow_map, generator, ode_map
from pfdist.metric import pfd
from pfdist import metrics
from pfdist.metrics import frechet_distance, gaussian_kl, gaussian_w2, kid, memorization_ratio
from pfdist.models.diffusers import from_diffusers
from pfdist.noise import noise, seeded_labels
from pfdist.ode import Denoiser, data_shape, score, velocity
from pfdist.outputs import FlowOutputs
from pfdist.schedules import edm_sigmas
from pfdist.settings import FlowSettings
from pfdist.solvers import dpmpp_2m, dpmpp_3m, euler, heun, reference, unipc
from pfdist.nets import NetSpec, build_network, count_parameters
from pfdist.training import TrainConfig, load_denoiser, save_denoiser, train
from pfdist.protocol import EvalConfig, bias_variance, distill, distill_pairs, load_distilled, teacher_student
from pfdist.models.edm import load_edm
from pfdist.models.edm2_decoder import load_edm_decoder

__version__ = "0.1.0"
_logging.getLogger("pfdist").addHandler(_logging.NullHandler())


def __getattr__(name: str):
    if name == "PFDMetric":  # imported on first use: torchmetrics, when installed, takes a second to import
        from pfdist.streaming import PFDMetric

        return PFDMetric
    raise AttributeError(f"module 'pfdist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "PFDMetric"})

__all__ = [
    "EvalConfig",
    "NetSpec",
    "TrainConfig",
    "bias_variance",
    "build_network",
    "count_parameters",
    "distill",
    "distill_pairs",
    "load_distilled",
    "load_denoiser",
    "load_edm",
    "load_edm_decoder",
    "save_denoiser",
    "teacher_student",
    "train",
    "CheckpointError",
    "DistributedError",
    "Denoiser",
    "GeneratorMap",
    "ODEMap",
    "data_shape",
    "generator",
    "ode_map",
    "seeded_labels",
    "EmpiricalDenoiser",
    "FlowOutputs",
    "FlowSettings",
    "Gaussian",
    "GaussianMixture",
    "KernelDescriptor",
    "NonFiniteError",
    "PFDMetric",
    "PFDResult",
    "PFDistError",
    "PFDistWarning",
    "SSCD",
    "TorchScriptDescriptor",
    "digits_mixture",
    "dpmpp_2m",
    "dpmpp_3m",
    "edm_sigmas",
    "euler",
    "flow_map",
    "flow_outputs",
    "from_diffusers",
    "gaussian_pfd",
    "guided",
    "heun",
    "load_digits",
    "nearest_neighbors",
    "noise",
    "pfd",
    "frechet_distance",
    "gaussian_kl",
    "gaussian_w2",
    "kid",
    "memorization_ratio",
    "metrics",
    "random_low_rank_mixture",
    "reference",
    "score",
    "squared_distances",
    "unipc",
    "velocity",
]
