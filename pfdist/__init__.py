"""pfdist: probability flow distance for measuring generalization in diffusion models."""

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
from pfdist.errors import CheckpointError, DistributedError, NonFiniteError, PFDistError
from pfdist.distance import PFDResult, squared_distances
from pfdist.flows import flow_outputs
from pfdist.guidance import guided
from pfdist.maps import GeneratorMap, ODEMap, flow_map, generator, ode_map
from pfdist.metric import pfd
from pfdist.models.diffusers import from_diffusers
from pfdist.noise import noise, seeded_labels
from pfdist.ode import Denoiser, data_shape, score, velocity
from pfdist.outputs import FlowOutputs
from pfdist.schedules import edm_sigmas
from pfdist.settings import FlowSettings
from pfdist.solvers import dpmpp_2m, euler, heun, reference
from pfdist.nets import build_network, count_parameters
from pfdist.training import TrainConfig, load_denoiser, save_denoiser, train
from pfdist.protocol import EvalConfig, bias_variance, teacher_student
from pfdist.models.edm import load_edm
from pfdist.models.edm2_decoder import load_edm_decoder

__version__ = "0.1.0"

__all__ = [
    "EvalConfig",
    "TrainConfig",
    "bias_variance",
    "build_network",
    "count_parameters",
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
    "PFDResult",
    "PFDistError",
    "SSCD",
    "TorchScriptDescriptor",
    "digits_mixture",
    "dpmpp_2m",
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
    "random_low_rank_mixture",
    "reference",
    "score",
    "squared_distances",
    "velocity",
]
