"""Conditioning of a diffusers network: fixed tensors named as its own forward arguments.

``from_diffusers(model, scheduler, encoder_hidden_states=e, pooled_projections=p)`` holds ``e``
and ``p`` with batch 1 (one prompt for every seed) and broadcasts them over x's batch at each
call. pfdist never runs a text encoder: embeddings are computed once, by the user, and passed as
tensors or as a safetensors file whose tensor names are the argument names
(:func:`read_conditioning`). Every tensor is checked against the network's config here, before
anything runs: its name, its batch, its number of dimensions and its feature size.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pfdist.errors import PFDistError

# Arguments the adapter owns, or that are not conditioning.
NOT_CONDITIONING = {"self", "sample", "hidden_states", "timestep", "return_dict"}
# Conditioning a network cannot run without.
REQUIRED = {
    "UNet2DConditionModel": ("encoder_hidden_states",),
    "SD3Transformer2DModel": ("encoder_hidden_states", "pooled_projections"),
}


def _cross_attention_dim(cfg: dict) -> int | None:
    if cfg.get("encoder_hid_dim") is not None:  # projected to cross_attention_dim inside the network
        return int(cfg["encoder_hid_dim"])
    dim = cfg.get("cross_attention_dim")
    return int(dim) if isinstance(dim, int) else None  # a per-block tuple: checked by ndim only


def expected_shapes(model: nn.Module) -> dict[str, tuple[int, int | None]]:
    """``{argument: (ndim, last dimension or None)}`` for the conditioning the config describes."""
    cfg, kind = dict(getattr(model, "config", {}) or {}), type(model).__name__
    shapes: dict[str, tuple[int, int | None]] = {"class_labels": (1, None)}
    if kind == "SD3Transformer2DModel":
        shapes["encoder_hidden_states"] = (3, int(cfg["joint_attention_dim"]))
        shapes["pooled_projections"] = (2, int(cfg["pooled_projection_dim"]))
    elif "cross_attention_dim" in cfg or "encoder_hid_dim" in cfg:
        shapes["encoder_hidden_states"] = (3, _cross_attention_dim(cfg))
    return shapes


def class_table_size(model: nn.Module, label_dim: int) -> int:
    """How many class indices the network's class embedding takes (a DiT's has a null class at label_dim)."""
    for m in model.modules():
        if type(m).__name__ == "LabelEmbedding":
            return int(m.embedding_table.num_embeddings)
    return label_dim


def check_conditioning(model: nn.Module, conditioning: dict[str, Any], *, label_dim: int) -> dict[str, Tensor]:
    """The conditioning tensors, checked against ``model``'s forward arguments and config (batch 1 each)."""
    kind = type(model).__name__
    params = inspect.signature(model.forward).parameters
    accepted = sorted(set(params) - NOT_CONDITIONING)
    shapes = expected_shapes(model)
    out = {}
    for name, value in conditioning.items():
        if name not in accepted:
            raise PFDistError(f"{kind}.forward has no argument {name!r}; conditioning keywords are its own "
                              f"arguments: {', '.join(accepted)}.")
        if not isinstance(value, Tensor):
            raise PFDistError(f"{name} must be a tensor with batch 1 (got a {type(value).__name__}).")
        if value.ndim == 0 or value.shape[0] != 1:
            raise PFDistError(f"{name} must have batch 1, one conditioning shared by every seed (it is broadcast "
                              f"over x's batch); got shape {tuple(value.shape)}. Pass {name}[:1] or one row.")
        ndim, last = shapes.get(name, (None, None))
        if ndim is not None and value.ndim != ndim:
            raise PFDistError(f"{name} for {kind} must have {ndim} dimensions (batch 1{', sequence' if ndim == 3 else ''}"
                              f"{', features' if ndim > 1 else ''}); got shape {tuple(value.shape)}.")
        if last is not None and value.shape[-1] != last:
            raise PFDistError(f"{name} for {kind} must have {last} features (its config's size); "
                              f"got shape {tuple(value.shape)}.")
        if name == "class_labels":
            value = _class_index(value, class_table_size(model, label_dim))
        elif not value.is_floating_point() or not torch.isfinite(value).all():
            raise PFDistError(f"{name} must be a finite floating-point tensor (got {value.dtype}).")
        out[name] = value.detach().clone()
    missing = [name for name in REQUIRED.get(kind, ()) if name not in out]
    if missing:
        dims = {name: shapes.get(name) for name in missing}
        raise PFDistError(f"{kind} needs the conditioning {', '.join(missing)} (batch 1; (ndim, features) = {dims}); "
                          "pass the prompt's embeddings as tensors: pfdist never runs a text encoder.")
    return out


def _class_index(value: Tensor, table: int) -> Tensor:
    if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
        raise PFDistError(f"class_labels must be an integer tensor of shape (1,) (got {value.dtype}).")
    if not 0 <= int(value[0]) < table:
        raise PFDistError(f"class_labels must be a class index in 0..{table - 1} (got {int(value[0])}).")
    return value.long()


def read_conditioning(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a safetensors file, named as the network's forward arguments (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise PFDistError(f"conditioning file {path} must be a .safetensors file of tensors named as the "
                          "network's arguments (encoder_hidden_states, pooled_projections, class_labels).")
    if not path.is_file():
        raise PFDistError(f"conditioning file {path} does not exist.")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PFDistError(f"conditioning file {path} is not a readable safetensors file ({e}).") from None
    if not tensors:
        raise PFDistError(f"conditioning file {path} holds no tensors.")
    return tensors
