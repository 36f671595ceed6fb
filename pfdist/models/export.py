"""Portable denoisers: ``torch.export`` programs (``.pt2``) with a dynamic batch dimension.

A ``.pt2`` file is a program, not data: its graph runs whatever operators it names. Load only
files you trust, as you would run a script. pfdist writes them without any pickled payload
(weights are raw tensor bytes, no example inputs) and refuses, before ``torch.export.load``
reads anything, archives that hold one, so loading runs no Python unpickler.

The program's signature is ``D(x, sigma)`` or, for class-conditional models,
``D(x, sigma, class_labels)`` with ``x: (batch, *shape)``, ``sigma: (batch,)`` and one-hot
``class_labels: (batch, label_dim)``. The archive's ``extra/pfdist.json`` records the data shape,
dtype, batch range, label dimension and trained sigma range.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pfdist.atomic import atomic_write
from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.ode import data_shape, expand_sigma
from pfdist.pt2 import load_program

FORMAT = "pfdist.denoiser.pt2"
FORMAT_VERSION = 1
META_FILE = "pfdist.json"
EXAMPLE_BATCH = 64  # traced batch; diffusers' upsampler branches on batch >= 64, so trace above it
TRUST = ".pt2 files are programs: load only files you trust."


class _Signature(nn.Module):
    """The exported calling convention around any denoiser (module or plain callable)."""

    def __init__(self, denoiser: Any):
        super().__init__()
        self.denoiser = denoiser  # a plain callable's tensors become program constants

    def forward(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if class_labels is None:
            return self.denoiser(x, sigma)
        return self.denoiser(x, sigma, class_labels)


def _dtype_of(denoiser: Any) -> torch.dtype:
    if isinstance(denoiser, nn.Module):
        p = next(denoiser.parameters(), None)
        if p is not None:
            return p.dtype
    return torch.float32


def export_denoiser(denoiser: Any, path: str | os.PathLike, *, shape: tuple[int, ...] | None = None,
                    dtype: torch.dtype | None = None, source: str = "") -> Path:
    """Write ``denoiser`` as a ``.pt2`` program with a dynamic batch dimension (atomic).

    ``shape`` defaults to the model's own ``shape``; ``dtype`` to its parameters' (else float32).
    ``sigma_min`` / ``sigma_max`` / ``label_dim`` attributes are recorded when the model has them.
    """
    if isinstance(denoiser, ExportedDenoiser):
        raise PFDistError("the model is already a .pt2 program; copy its file instead of exporting it again.")
    shape = tuple(shape) if shape is not None else data_shape(denoiser)
    if shape is None:
        raise PFDistError("the model does not say its data shape; pass shape=(C, H, W) or (d,).")
    dtype = dtype or _dtype_of(denoiser)
    label_dim = int(getattr(denoiser, "label_dim", 0) or 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(EXAMPLE_BATCH, *shape, generator=g, dtype=dtype)
    sigma = torch.logspace(-2, 1.5, EXAMPLE_BATCH, dtype=dtype)
    args: tuple[Tensor, ...] = (x, sigma)
    if label_dim:
        labels = torch.nn.functional.one_hot(torch.arange(EXAMPLE_BATCH) % label_dim, label_dim).to(dtype)
        args = (x, sigma, labels)
    batch = torch.export.Dim.AUTO
    dynamic = ({0: batch}, {0: batch}) + (({0: batch},) if label_dim else ())
    try:
        with torch.no_grad():
            program = torch.export.export(_Signature(denoiser), args, dynamic_shapes=dynamic)
    except Exception as e:  # torch raises many kinds (UserError, Unsupported, RuntimeError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PFDistError(f"torch.export cannot trace this model ({type(e).__name__}: {first}).") from None
    low, high = _batch_range(program)
    program.example_inputs = None  # example inputs would be stored as a pickle
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "shape": list(shape), "dtype": str(dtype).removeprefix("torch."),
            "batch": [low, high], "label_dim": label_dim, "source": source}
    for name in ("sigma_min", "sigma_max"):
        value = getattr(denoiser, name, None)
        if value is not None:
            meta[name] = float(value)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # views of one storage: torch saves the span they cover, as it says
        warnings.filterwarnings("ignore", "No complete tensor found")
        torch.export.save(program, buffer, extra_files={META_FILE: json.dumps(meta)})
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def _batch_range(program: Any) -> tuple[int, int | None]:
    """The batch sizes the traced program accepts, from its range constraints."""
    x = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    size = x.meta["val"].shape[0]
    if isinstance(size, int):
        raise PFDistError("the exported model fixes its batch size; it cannot run with a dynamic batch.")
    from torch.utils._sympy.numbers import int_oo

    bounds = program.range_constraints[size.node.expr]
    return int(bounds.lower), None if bounds.upper is int_oo else int(bounds.upper)


class ExportedDenoiser(nn.Module):
    """A denoiser read from a ``.pt2`` program (see :func:`load_exported`).

    Batches outside the traced range are padded or split; ``.to(device)`` moves the program.
    Integer ``class_labels`` become one-hot rows.
    """

    def __init__(self, program: Any, meta: dict, digest: str):
        super().__init__()
        self._program, self.meta, self._digest = program, meta, digest
        self.net = program.module()
        self.shape = tuple(meta["shape"])
        self.dtype = getattr(torch, meta["dtype"])
        self.label_dim = int(meta.get("label_dim", 0))
        self.batch_range = (int(meta["batch"][0]), meta["batch"][1])
        for name in ("sigma_min", "sigma_max"):
            if name in meta:
                setattr(self, name, float(meta[name]))

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        if x.dtype != self.dtype or tuple(x.shape[1:]) != self.shape:
            raise PFDistError(f"this .pt2 model takes {self.dtype} inputs of shape (batch, {', '.join(map(str, self.shape))}); "
                              f"got {x.dtype} of shape {tuple(x.shape)}.")
        n = x.shape[0]
        args = [x, expand_sigma(sigma, x).reshape(-1).expand(n)]
        if self.label_dim:
            if class_labels is None:
                raise PFDistError(f"this .pt2 model is class-conditional (label_dim={self.label_dim}); pass class_labels.")
            if not class_labels.is_floating_point():
                class_labels = torch.nn.functional.one_hot(class_labels.long(), self.label_dim)
            args.append(class_labels.to(x.dtype).reshape(n, self.label_dim))
        elif class_labels is not None:
            raise PFDistError("this .pt2 model is unconditional; do not pass class_labels.")
        low, high = self.batch_range
        if n < low:  # pad with copies of the first row; each sample is denoised independently
            padded = [torch.cat([a, a[:1].expand(low - n, *a.shape[1:])]) for a in args]
            return self.net(*padded)[:n]
        step = high or n
        return torch.cat([self.net(*(a[i : i + step] for a in args)) for i in range(0, n, step)])

    def to(self, *args, **kwargs) -> "ExportedDenoiser":
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and dtype != self.dtype:
            raise PFDistError(f"a .pt2 program runs in the dtype it was exported in ({self.dtype}); export it again for {dtype}.")
        p = next(self.net.parameters(), None)
        if device is not None and (p is None or p.device != torch.device(device)):
            from torch.export.passes import move_to_device_pass

            self._program = move_to_device_pass(self._program, device)
            self.net = self._program.module()
        return self

    def train(self, mode: bool = True) -> "ExportedDenoiser":
        self.training = mode  # an exported graph has no train mode to switch
        return self

    def fingerprint(self) -> str:
        return f"pt2:{self._digest}"

    def __repr__(self) -> str:
        return f"ExportedDenoiser(shape={self.shape}, dtype={self.dtype}, label_dim={self.label_dim}, batch={self.batch_range})"


def _check_meta(path: Path, meta: dict, program: Any) -> None:
    """The archive's pfdist.json must describe the program it travels with."""
    inputs = [n.meta["val"] for n in program.graph.nodes
              if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    if len(inputs) not in (2, 3) or inputs[0].ndim < 2:
        raise PFDistError(f"{path} is not a pfdist denoiser program (it takes {len(inputs)} inputs, "
                          "not x, sigma[, class_labels]); write it with `pfdist export`.")
    x = inputs[0]
    program_says = {"shape": list(x.shape[1:]), "dtype": str(x.dtype).removeprefix("torch."),
                    "batch": list(_batch_range(program)), "label_dim": int(inputs[2].shape[1]) if len(inputs) == 3 else 0}
    for key, value in program_says.items():
        if meta.get(key) != value:
            raise PFDistError(f"{path} is damaged: its {META_FILE} says {key} = {meta.get(key)!r} but its program has "
                              f"{value!r}; export the model again with `pfdist export`.")
    for name in ("sigma_min", "sigma_max"):
        value = meta.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise PFDistError(f"{path} is damaged: its {META_FILE} says {name} = {value!r}, not a number >= 0; "
                              "export the model again with `pfdist export`.")


def load_exported(path: str | os.PathLike, *, device: torch.device | str | None = None) -> ExportedDenoiser:
    """A denoiser from a ``.pt2`` file written by :func:`export_denoiser`. Trust the file: it is a program."""
    path = checks.existing_file(path, ".pt2 file")
    extra = {META_FILE: ""}
    program = load_program(path, extra_files=extra)
    try:
        meta = json.loads(extra[META_FILE])
        ok = meta.get("format") == FORMAT and meta.get("format_version") == FORMAT_VERSION
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise PFDistError(f"{path} is a torch.export program without pfdist's {META_FILE}; "
                          "write it with `pfdist export` or pfdist.models.export.export_denoiser.")
    _check_meta(path, meta, program)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    den = ExportedDenoiser(program, meta, digest).eval().requires_grad_(False)
    return den.to(device) if device is not None else den
