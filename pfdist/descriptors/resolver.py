"""Where a descriptor spec becomes a descriptor: :func:`resolve`, used at the edge only (the command
line, presets, run directories, user code). Below the edge, :func:`pfdist.pfd`, :func:`pfdist.flow_outputs`
and the protocol receive descriptor objects and check them with :func:`check_descriptor` /
:func:`check_spaces`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from torch import Tensor

from pfdist.descriptors.base import Descriptor, identity
from pfdist.descriptors.files import TorchScriptDescriptor
from pfdist.descriptors.kernel import KernelDescriptor
from pfdist.descriptors.named import NamedDescriptors
from pfdist.descriptors.specs import bandwidth_factor, check_spec
from pfdist.descriptors.sscd import SSCD
from pfdist.errors import PFDistError

SPEC_TYPES = (str, os.PathLike, dict, list, tuple)


def resolve(spec: Any, *, samples: Callable[[int], Tensor] | None = None) -> Descriptor | NamedDescriptors:
    """The descriptor a spec names: the one place names, JSON and files become descriptors.

    - a descriptor (any callable) or a :class:`NamedDescriptors`: returned as is;
    - a spec (:mod:`pfdist.descriptors.specs`): "pixels" (identity), a dict, JSON text, or the path
      of a descriptor file (``.safetensors``: a saved kernel descriptor, no code; anything else: a
      TorchScript or ``.pt2`` network, which is code: load only files you trust);
    - a list or tuple of specs: a :class:`NamedDescriptors` of their descriptors, by their names.

    ``samples(n)`` gives n teacher samples to fit a kernel spec on (needed for those only).
    """
    if isinstance(spec, NamedDescriptors) or callable(spec):
        return spec
    if isinstance(spec, (list, tuple)):
        return _resolve_several(spec, samples)
    return _build(check_spec(spec), samples)


def check_descriptor(descriptor: Any) -> Descriptor:
    """A resolved descriptor of one space, as is; one clear error saying what to pass for anything else."""
    if isinstance(descriptor, NamedDescriptors):
        raise PFDistError(f"descriptor is a NamedDescriptors (spaces {list(descriptor)}), but a distance is measured in "
                          "one space: pass one of its descriptors, e.g. descriptor=spaces"
                          f"[{descriptor.primary!r}], once per space (evaluate_student measures every space of a set).")
    if isinstance(descriptor, SPEC_TYPES):
        raise PFDistError(f"descriptor={descriptor!r} is a spec, not a descriptor; resolve it first, once: "
                          f"pfdist.descriptors.resolve({descriptor!r}) (a kernel spec also takes samples=...).")
    if not callable(descriptor):
        raise PFDistError(f"descriptor must be a callable Psi(x) -> (batch, ...) features such as "
                          "pfdist.descriptors.identity (pixels, the default), a KernelDescriptor or an SSCD; got "
                          f"{type(descriptor).__name__}.")
    return descriptor


def check_spaces(descriptor: Any) -> Descriptor | NamedDescriptors:
    """A resolved descriptor, or a :class:`NamedDescriptors` of several spaces, as is; one clear error otherwise."""
    return descriptor if isinstance(descriptor, NamedDescriptors) else check_descriptor(descriptor)


def _resolve_several(specs: list | tuple, samples: Callable[[int], Tensor] | None) -> NamedDescriptors:
    checked = [check_spec(s) for s in specs]
    names = [s["name"] for s in checked]
    if not names or len(set(names)) != len(names):
        raise PFDistError(f"a list of descriptor specs needs at least one spec and distinct names (got {names}); "
                          "give each space a \"name\".")
    return NamedDescriptors({s["name"]: _build(s, samples) for s in checked})


def _build(spec: dict, samples: Callable[[int], Tensor] | None) -> Descriptor:
    """The descriptor of a checked spec."""
    kind = spec["type"]
    if kind == "pixels":
        return identity
    if kind == "kernel":
        if samples is None:
            raise PFDistError("a kernel descriptor spec is fitted on teacher samples; none were given "
                              "(resolve(spec, samples=...)).")
        return KernelDescriptor.fit(samples(spec["fit_samples"]), num_features=spec["num_features"], seed=spec["seed"],
                                    bandwidth_factor=bandwidth_factor(spec["bandwidth_rule"]))
    if kind == "saved":
        return KernelDescriptor.load(spec["path"])
    if kind == "sscd":
        return SSCD(spec["path"], size=spec["size"], interpolation=spec["interpolation"], quantize=spec["quantize"])
    return TorchScriptDescriptor(spec["path"], normalize=spec["normalize"])
