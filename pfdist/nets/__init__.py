"""Denoising networks: EDM's U-Nets (SongUNet for DDPM++ / NCSN++, DhariwalUNet for ADM), a
residual MLP, and the preconditioners that make them denoisers D(x, sigma)."""

from pfdist.nets.build import NetSpec, build_network, count_parameters, normalize_config
from pfdist.nets.dhariwal import DhariwalUNet
from pfdist.nets.edm2 import EDM2Precond, EDM2UNet
from pfdist.nets.layers import FourierEmbedding, PositionalEmbedding, num_groups
from pfdist.nets.mlp import MLP
from pfdist.nets.precond import EDMPrecond, Precond, VEPrecond, VPPrecond, iDDPMPrecond, precond_coefficients
from pfdist.nets.songunet import SongUNet

__all__ = [
    "DhariwalUNet",
    "EDM2Precond",
    "EDM2UNet",
    "EDMPrecond",
    "FourierEmbedding",
    "MLP",
    "NetSpec",
    "PositionalEmbedding",
    "Precond",
    "SongUNet",
    "VEPrecond",
    "VPPrecond",
    "build_network",
    "count_parameters",
    "iDDPMPrecond",
    "normalize_config",
    "num_groups",
    "precond_coefficients",
]
