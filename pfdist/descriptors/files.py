"""Descriptor networks from files: TorchScript archives and ``torch.export`` ``.pt2`` programs.

SECURITY: both formats are code. ``torch.jit.load`` and ``torch.export.load`` run what the
file's author put in it (PyTorch offers no safe mode for TorchScript), so load only files you
trust as you would trust a Python script. Weights-only formats (safetensors) carry no code;
pfdist's own descriptors (:class:`~pfdist.descriptors.KernelDescriptor`) are stored that way.
A ``.pt2`` archive is checked before it is read, as a model's is (:func:`pfdist.pt2.check_archive`):
one holding pickles (e.g. the example inputs ``torch.export.save`` stores by default) is refused.

The format is recognised by content (both are zip archives): a ``.pt2`` program has an
``archive_format`` entry, a TorchScript archive has ``code/`` and ``data.pkl`` entries.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from pfdist.hashing import file_sha256
from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.pt2 import load_program

HOW_TO_EXPORT = ("export one with torch.jit.script(model).save(path), or as a .pt2 with "
                 "program = torch.export.export(model, (x,), dynamic_shapes=...); program.example_inputs = None; "
                 "torch.export.save(program, 'model.pt2')")


def module_format(path: Path) -> str:
    """'torchscript' or 'export' from the archive's entries; a clear error for anything else."""
    checks.existing_file(path, "descriptor file")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise PFDistError(f"descriptor file {path} is not a TorchScript or .pt2 archive ({e}); {HOW_TO_EXPORT}.") from None
    if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        return "export"
    if any("/code/" in n for n in names) and any(n.endswith("data.pkl") for n in names):
        return "torchscript"
    raise PFDistError(f"descriptor file {path} is not a TorchScript or .pt2 archive (a zip of another kind, "
                      f"e.g. torch.save); {HOW_TO_EXPORT}.")


def load_module(path: str | os.PathLike, *, map_location: str = "cpu") -> tuple[torch.nn.Module, str]:
    """Load a TorchScript or ``.pt2`` file as an ``nn.Module`` in eval mode. THIS RUNS THE FILE'S CODE.

    Returns the module and its format ('torchscript' or 'export').
    """
    path = Path(path)
    kind = module_format(path)
    if kind == "export":  # checked first: torch.export.load would unpickle what the archive holds
        return load_program(path).module(), kind
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but is how SSCD ships
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=map_location).eval()
    except Exception as e:  # torch raises several error types for damaged archives
        raise PFDistError(f"descriptor file {path} could not be loaded as TorchScript ({type(e).__name__}: {e}); "
                          f"{HOW_TO_EXPORT}.") from None
    return module, kind


class TorchScriptDescriptor:
    """A descriptor network from a TorchScript archive or a ``torch.export`` ``.pt2`` file, applied as is.

    The file is code and is run when loaded: use only files you trust. ``normalize=True``
    L2-normalises each output vector (as SSCD's are), so PFD lies in [0, 2]. For SSCD with its
    published preprocessing use :class:`~pfdist.descriptors.SSCD`.
    """

    def __init__(self, path: str | os.PathLike, *, normalize: bool = False, map_location: str = "cpu"):
        if not isinstance(normalize, bool):
            raise PFDistError(f"normalize must be True or False (got {normalize!r}).")
        self.path = Path(path)
        self.module, self.format = load_module(self.path, map_location=map_location)
        self.normalize = bool(normalize)
        self._hash = file_sha256(self.path)

    def __call__(self, x: Tensor) -> Tensor:
        y = run_module(self, x)
        return torch.nn.functional.normalize(y.flatten(1), dim=1) if self.normalize else y

    def fingerprint(self) -> str:
        return f"{self.format}:{self._hash}:normalize={self.normalize}"

    def __repr__(self) -> str:
        return f"TorchScriptDescriptor({str(self.path)!r}, normalize={self.normalize})"


def run_module(owner, x: Tensor) -> Tensor:
    """``owner.module(x)`` after moving the module to x's device (once)."""
    param = next(owner.module.parameters(), None)
    if param is not None and param.device != x.device:
        owner.module = owner.module.to(x.device)
    try:
        y = owner.module(x)
    except Exception as e:  # the network is the user's: any error is about its input contract
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise PFDistError(f"the descriptor network failed on a batch of shape {tuple(x.shape)} "
                          f"({type(e).__name__}: {first}); check the input size and channels it expects.") from None
    if isinstance(y, (tuple, list)):
        y = y[0]
    if not isinstance(y, Tensor) or y.shape[0] != x.shape[0]:
        raise PFDistError(f"the descriptor network returned {type(y).__name__} "
                          f"{tuple(getattr(y, 'shape', ()))} for a batch of {x.shape[0]}; it must return (batch, ...).")
    return y
