"""Checkpoints and final denoisers as safetensors state dicts plus JSON. Nothing is pickled.

A training checkpoint in ``out_dir`` is ``checkpoint.json`` and the tensors file it names,
``checkpoint-<step>-<token>.safetensors`` (net weights ``net.*``, EMA weights ``ema.*``, Adam
state ``optimizer.<param index>.<key>``). The tensors are written first under a fresh name and
``checkpoint.json`` is replaced last (atomically), so a killed run leaves the old pair or the
new one; the JSON records the tensors' sha256, which loading checks.

A final denoiser is ``<name>.safetensors`` (its state dict) with ``<name>.json`` beside it
holding the network config that :func:`pfdist.nets.build_network` turns back into the model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pfdist.atomic import atomic_save_tensors, atomic_write_json
from pfdist.errors import CheckpointError, PFDistError
from pfdist.hashing import file_sha256
from pfdist.nets import EDMPrecond, build_network
from pfdist.nets.edm2 import EDM2Precond
from pfdist.nets.edm2_encoder import EncoderRecord

FORMAT_VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded training checkpoint: ``info`` is checkpoint.json, the rest are state dicts."""

    info: dict[str, Any]
    net: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer_state: dict[int, dict[str, Any]]


def _read_json(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}; {fix}.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what} {path} is corrupt ({e}); {fix}.") from e
    if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{what} {path} is not a pfdist format_version {FORMAT_VERSION} file; {fix}."
        )
    return obj


def _tensors_path(json_path: Path, record: dict, fix: str) -> tuple[Path, str]:
    """The tensors file a JSON record names: a bare file name beside it, with a sha256 to check."""
    name, sha256 = record.get("tensors_file"), record.get("tensors_sha256")
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise CheckpointError(f"{json_path} names tensors file {name!r}; it must be a bare file name in the "
                              f"same directory; {fix}.")
    if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise CheckpointError(f"{json_path} has no valid 'tensors_sha256' for {name}, so its integrity cannot be "
                              f"checked; {fix}.")
    return json_path.parent / name, sha256


def _read_tensors(path: Path, sha256: str, fix: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"tensors file {path} is missing; {fix}.")
    if file_sha256(path) != sha256:
        raise CheckpointError(f"tensors file {path} is corrupt (sha256 mismatch); {fix}.")
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"tensors file {path} is unreadable ({e}); {fix}.") from e


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / CHECKPOINT_JSON).exists()


def save_checkpoint(
    out_dir: str | os.PathLike,
    *,
    net: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
) -> Path:
    """Write a checkpoint pair atomically; ``info`` (JSON-serialisable, with ``step``) goes to the JSON."""
    out_dir = Path(out_dir)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    scalars: dict[str, Any] = {}
    for idx, param_state in optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    step = int(info["step"])
    name = f"checkpoint-{step:09d}-{os.urandom(4).hex()}.safetensors"
    meta = {"format_version": str(FORMAT_VERSION), "step": str(step)}
    atomic_save_tensors(out_dir / name, tensors, metadata=meta)
    record = dict(info, format_version=FORMAT_VERSION, tensors_file=name,
                  tensors_sha256=file_sha256(out_dir / name), optimizer_scalars=scalars)
    path = atomic_write_json(out_dir / CHECKPOINT_JSON, record)
    for old in out_dir.glob("checkpoint-*.safetensors"):
        if old.name != name:  # superseded tensors (temporaries of killed writers go with the lock's cleanup)
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(out_dir: str | os.PathLike) -> Checkpoint:
    """Read and verify the checkpoint pair in ``out_dir``; raises CheckpointError when absent or bad."""
    out_dir = Path(out_dir)
    fix = f"delete {out_dir} to start over, or point to a directory with a good checkpoint"
    info = _read_json(out_dir / CHECKPOINT_JSON, "checkpoint", fix)
    for key in ("net_config", "train_config", "epoch", "step", "history", "data_hash",
                "tensors_file", "tensors_sha256", "optimizer_scalars"):
        if key not in info:
            raise CheckpointError(f"checkpoint {out_dir / CHECKPOINT_JSON} lacks {key!r}; {fix}.")
    tensors = _read_tensors(*_tensors_path(out_dir / CHECKPOINT_JSON, info, fix), fix)
    parts: dict[str, dict[str, Tensor]] = {"net": {}, "ema": {}, "optimizer": {}}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix not in parts:
            raise CheckpointError(f"checkpoint tensor {key!r} is not net/ema/optimizer; {fix}.")
        parts[prefix][rest] = value
    optimizer_state: dict[int, dict[str, Any]] = {}
    scalars = info["optimizer_scalars"]
    if not isinstance(scalars, dict):
        raise CheckpointError(f"checkpoint {out_dir / CHECKPOINT_JSON} has optimizer_scalars {scalars!r}, "
                              f"not an object; {fix}.")
    for key, value in list(parts["optimizer"].items()) + list(scalars.items()):
        idx, _, name = key.partition(".")
        if not (idx.isdigit() and name):
            raise CheckpointError(f"checkpoint optimizer entry {key!r} is not '<parameter index>.<name>'; {fix}.")
        optimizer_state.setdefault(int(idx), {})[name] = value
    return Checkpoint(info, parts["net"], parts["ema"], optimizer_state)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Any]]) -> None:
    """Load per-parameter state saved by :func:`save_checkpoint`; param groups stay as built."""
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _denoiser_json(path: Path) -> Path:
    if path.suffix != ".safetensors":
        raise PFDistError(f"denoiser path must end in .safetensors; got {path}.")
    return path.with_suffix(".json")


def save_denoiser(
    path: str | os.PathLike, net: EDMPrecond, *, info: dict[str, Any] | None = None
) -> Path:
    """Save ``net``'s weights to ``path`` (.safetensors) and its config to the .json beside it.

    ``net`` must come from :func:`pfdist.nets.build_network` (it carries ``net.config``);
    ``info`` is optional JSON-serialisable provenance stored with the config. An EDM2 network's
    ``encoder`` record and ``data_space`` are stored too (as data) and restored by
    :func:`load_denoiser`.
    """
    path = Path(path)
    json_path = _denoiser_json(path)
    if getattr(net, "config", None) is None:
        raise PFDistError("net has no config to save; build it with pfdist.nets.build_network.")
    encoder = getattr(net, "encoder", None)  # an EDM2 network's data space, kept as data
    space = {} if not isinstance(encoder, EncoderRecord) else {"encoder": encoder.to_dict(), "data_space": net.data_space}
    atomic_save_tensors(path, net.state_dict(), metadata={"format_version": str(FORMAT_VERSION)})
    atomic_write_json(json_path, {
        "format_version": FORMAT_VERSION, "kind": "pfdist.denoiser", "net_config": net.config,
        "tensors_file": path.name, "tensors_sha256": file_sha256(path), "info": info or {}, **space,
    })
    return path


def load_denoiser(path: str | os.PathLike, *, device: torch.device | str | None = None,
                  fix: str | None = None) -> EDMPrecond:
    """The denoiser saved by :func:`save_denoiser`, in eval mode with gradients off.

    ``fix``: what an error tells the user to do (default: save it again or check the path).
    """
    path = Path(path)
    json_path = _denoiser_json(path)
    fix = fix or f"save the denoiser again (save_denoiser) or check the path {path}"
    record = _read_json(json_path, "denoiser config", fix)
    named, sha256 = _tensors_path(json_path, record, fix)
    if named != path:
        raise CheckpointError(f"{json_path} describes {named.name!r}, not {path.name}; {fix}.")
    tensors = _read_tensors(path, sha256, fix)
    try:
        net = build_network(record["net_config"])
        net.load_state_dict(tensors)
    except (KeyError, RuntimeError, PFDistError) as e:
        raise CheckpointError(f"{path} does not match its config ({e}); {fix}.") from e
    if "encoder" in record or "data_space" in record:
        _restore_encoder(net, record, json_path)
    return net.to(device).eval().requires_grad_(False)


def _restore_encoder(net: nn.Module, record: dict, json_path: Path) -> None:
    """An EDM2 network's ``encoder`` and ``data_space`` from its JSON config (see :func:`save_denoiser`)."""
    try:
        encoder = EncoderRecord.from_dict(record.get("encoder"), str(json_path))
    except PFDistError as e:
        raise CheckpointError(str(e)) from None
    again = "convert the snapshot again (pfdist convert)"
    if not isinstance(net, EDM2Precond):
        raise CheckpointError(f"{json_path}: 'encoder' describes an EDM2 network's data, but the network is a "
                              f"{type(net).__name__}; {again}.")
    if record.get("data_space") != encoder.data_space:
        raise CheckpointError(f"{json_path}: 'data_space' {record.get('data_space')!r} is not its encoder's "
                              f"{encoder.data_space!r}; {again}.")
    if encoder.scale is not None and len(encoder.scale) != net.shape[0]:
        raise CheckpointError(f"{json_path}: the encoder has {len(encoder.scale)} channels but the network "
                              f"{net.shape[0]}; {again}.")
    net.encoder, net.data_space = encoder, encoder.data_space
