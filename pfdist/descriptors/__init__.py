"""Descriptors Psi: identity (pixels), a saturating kernel descriptor, SSCD and other networks from
files, or any callable. :func:`resolve` turns a spec (a name, JSON, a file) into one, at the edge.
TorchScript and .pt2 files are code: load only files you trust."""

from pfdist.descriptors.base import PIXEL_NAMES, Descriptor, describe, descriptor_fingerprint, identity
from pfdist.descriptors.files import TorchScriptDescriptor, load_module
from pfdist.descriptors.kernel import KernelDescriptor, median_nn_distance
from pfdist.descriptors.named import NamedDescriptors
from pfdist.descriptors.resolver import check_descriptor, check_spaces, resolve
from pfdist.descriptors.specs import bandwidth_factor, check_spec
from pfdist.descriptors.sscd import SSCD

__all__ = [
    "PIXEL_NAMES",
    "SSCD",
    "Descriptor",
    "KernelDescriptor",
    "NamedDescriptors",
    "TorchScriptDescriptor",
    "bandwidth_factor",
    "check_descriptor",
    "check_spaces",
    "check_spec",
    "describe",
    "descriptor_fingerprint",
    "identity",
    "load_module",
    "median_nn_distance",
    "resolve",
]
