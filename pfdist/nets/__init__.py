"""Trainable denoisers: EDM preconditioning around MLP and U-Net backbones."""

from pfdist.nets.build import build_network, count_parameters, normalize_config
from pfdist.nets.mlp import MLP, PositionalEmbedding
from pfdist.nets.precond import EDMPrecond, precond_coefficients
from pfdist.nets.unet import UNet

__all__ = [
    "EDMPrecond",
    "MLP",
    "PositionalEmbedding",
    "UNet",
    "build_network",
    "count_parameters",
    "normalize_config",
    "precond_coefficients",
]
