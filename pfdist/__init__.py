"""pfdist: probability flow distance for measuring generalization in diffusion models."""

from pfdist.denoisers import (
    EmpiricalDenoiser,
    Gaussian,
    GaussianMixture,
    gaussian_pfd,
    nearest_neighbors,
    random_low_rank_mixture,
)
from pfdist.descriptors import TorchScriptDescriptor
from pfdist.errors import CheckpointError, NonFiniteError, PFDistError
from pfdist.flows import FlowOutputs, FlowSettings, flow_outputs
from pfdist.metric import PFDResult, pfd, squared_distances
from pfdist.noise import noise
from pfdist.ode import score, velocity
from pfdist.schedules import edm_sigmas
from pfdist.solvers import dpmpp_2m, euler, flow_map, heun, reference
from pfdist.nets import build_network, count_parameters
from pfdist.training import TrainConfig, load_denoiser, save_denoiser, train
from pfdist.protocol import EvalConfig, bias_variance, teacher_student

__version__ = "0.1.0"

__all__ = [
    "EvalConfig",
    "TrainConfig",
    "bias_variance",
    "build_network",
    "count_parameters",
    "load_denoiser",
    "save_denoiser",
    "teacher_student",
    "train",
    "CheckpointError",
    "EmpiricalDenoiser",
    "FlowOutputs",
    "FlowSettings",
    "Gaussian",
    "GaussianMixture",
    "NonFiniteError",
    "PFDResult",
    "PFDistError",
    "TorchScriptDescriptor",
    "dpmpp_2m",
    "edm_sigmas",
    "euler",
    "flow_map",
    "flow_outputs",
    "gaussian_pfd",
    "heun",
    "nearest_neighbors",
    "noise",
    "pfd",
    "random_low_rank_mixture",
    "reference",
    "score",
    "squared_distances",
    "velocity",
]
