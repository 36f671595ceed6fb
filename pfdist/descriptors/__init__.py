"""Descriptors Psi: identity (pixels), a saturating kernel descriptor, SSCD and other networks from
files, or any callable. TorchScript and .pt2 files are code: load only files you trust."""

from pfdist.descriptors.base import PIXEL_NAMES, Descriptor, descriptor_fingerprint, identity, resolve_descriptor
from pfdist.descriptors.files import TorchScriptDescriptor, load_module
from pfdist.descriptors.kernel import KernelDescriptor, median_nn_distance
from pfdist.descriptors.named import NamedDescriptors
from pfdist.descriptors.specs import bandwidth_factor, build_descriptor, check_spec, spec_from_text, spec_name
from pfdist.descriptors.sscd import SSCD

__all__ = [
    "PIXEL_NAMES",
    "SSCD",
    "Descriptor",
    "KernelDescriptor",
    "NamedDescriptors",
    "TorchScriptDescriptor",
    "bandwidth_factor",
    "build_descriptor",
    "check_spec",
    "spec_from_text",
    "descriptor_fingerprint",
    "identity",
    "load_module",
    "median_nn_distance",
    "resolve_descriptor",
    "spec_name",
]
