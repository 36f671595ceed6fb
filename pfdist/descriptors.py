"""Descriptors Psi: identity, any callable, or a TorchScript file (the way SSCD ships).

A TorchScript file is code, not data: ``torch.jit.load`` runs what its author put in it (PyTorch
has no safe mode), so load only files you trust, as you would run a script.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from pfdist.errors import PFDistError

Descriptor = Callable[[Tensor], Tensor]


def identity(x: Tensor) -> Tensor:
    """Pixel-space PFD: Psi(x) = x."""
    return x


class TorchScriptDescriptor:
    """A descriptor loaded with ``torch.jit.load`` (never by unpickling Python objects).

    ``normalize=True`` L2-normalises each descriptor, as SSCD's are, so PFD lies in [0, 2].
    """

    def __init__(self, path: str | os.PathLike, *, normalize: bool = False, map_location: str = "cpu"):
        self.path = Path(path)
        if not self.path.is_file():
            raise PFDistError(f"descriptor file {self.path} does not exist.")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream but is how SSCD ships
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location=map_location).eval()
        except Exception as e:  # torch raises RuntimeError/ValueError for non-TorchScript files
            raise PFDistError(
                f"descriptor file {self.path} is not a TorchScript archive ({type(e).__name__}); "
                "export one with torch.jit.script(model).save(path) or torch.jit.trace(...)."
            ) from None
        self.normalize = normalize
        self._hash = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def __call__(self, x: Tensor) -> Tensor:
        module = self.module
        param = next(module.parameters(), None)
        if param is not None and param.device != x.device:
            self.module = module = module.to(x.device)
        y = module(x)
        if self.normalize:
            y = torch.nn.functional.normalize(y.flatten(1), dim=1)
        return y

    def fingerprint(self) -> str:
        return f"torchscript:{self._hash}:normalize={self.normalize}"

    def __repr__(self) -> str:
        return f"TorchScriptDescriptor({str(self.path)!r}, normalize={self.normalize})"


def resolve_descriptor(descriptor: Descriptor | str | os.PathLike | None) -> Descriptor:
    """None -> identity; a path -> TorchScriptDescriptor; a callable as is."""
    if descriptor is None:
        return identity
    if isinstance(descriptor, (str, os.PathLike)):
        return TorchScriptDescriptor(descriptor)
    if not callable(descriptor):
        raise PFDistError(
            f"descriptor must be None, a callable or a TorchScript file path; got {type(descriptor).__name__}."
        )
    return descriptor


def descriptor_fingerprint(descriptor: Descriptor) -> str | None:
    if descriptor is identity:
        return "identity"
    from pfdist.hashing import fingerprint

    return fingerprint(descriptor)
