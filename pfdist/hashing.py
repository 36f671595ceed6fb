"""Content hashes: cache keys and config identities that do not depend on object identity."""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any

import torch
from torch import Tensor


def update_with_tensor(h: "hashlib._Hash", t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}:".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 1-D view: any strides; 0-d: its one value


def file_sha256(path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(*parts: Any) -> str:
    """sha256 hex digest of tensors, dicts of tensors, and JSON-serialisable values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            update_with_tensor(h, part)
        elif isinstance(part, dict) and part and all(isinstance(v, Tensor) for v in part.values()):
            for key in sorted(part):
                h.update(key.encode())
                update_with_tensor(h, part[key])
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


class _Opaque(Exception):
    """Raised inside :func:`plain_value` for a value whose content cannot be hashed."""


def plain_value(value: Any) -> Any:
    """A JSON form of a plain value (None, bool, number, str, dtype, device, tensor, and tuples,
    lists and str-keyed dicts of them; objects with ``fingerprint()``); raises _Opaque otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return ["float", repr(float(value))]  # repr keeps nan / inf and every bit
    if isinstance(value, (torch.dtype, torch.device)):
        return ["torch", str(value)]
    if isinstance(value, Tensor):
        return ["tensor", content_hash(value)]
    if isinstance(value, (tuple, list)):
        return [type(value).__name__, [plain_value(v) for v in value]]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return ["dict", {k: plain_value(v) for k, v in value.items()}]
    if not isinstance(value, type) and callable(getattr(value, "fingerprint", None)):
        fp = value.fingerprint()
        if fp is None:
            raise _Opaque(type(value).__name__)
        return ["fingerprint", type(value).__qualname__, fp]
    raise _Opaque(type(value).__name__)


_MODULE_INTERNALS = frozenset(vars(torch.nn.Module())) - {"training"}


def module_fingerprint(module: torch.nn.Module) -> str | None:
    """Class, repr, state and every plain attribute of a module and its submodules, hashed.

    None (not cacheable) when a module holds an attribute that is not a plain value (a function,
    an arbitrary object) or has forward hooks: what it computes then cannot be known from its
    content. Two wrappers differing only in a plain attribute (a prediction-type flag, a scale)
    get different hashes.
    """
    attributes = []
    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return None
        own = {k: v for k, v in vars(m).items() if k not in _MODULE_INTERNALS}
        try:
            attributes.append([name, type(m).__module__, type(m).__qualname__, plain_value(own)])
        except _Opaque:
            return None
    tensors = {**dict(module.named_parameters()), **{"buffer:" + k: v for k, v in module.named_buffers()}}
    return content_hash("module/v2", repr(module), attributes, tensors)


def fingerprint(obj: Any) -> str | None:
    """A content hash of a denoiser or descriptor, or None when it cannot be known.

    Objects with ``fingerprint()`` (exact distributions, maps, file descriptors) give their own;
    torch modules hash their class, state and plain attributes (:func:`module_fingerprint`);
    bound methods hash their object and name; other callables have none (never cached).
    """
    if not isinstance(obj, type) and callable(getattr(obj, "fingerprint", None)):
        return obj.fingerprint()
    if isinstance(obj, torch.nn.Module):
        return module_fingerprint(obj)
    owner = getattr(obj, "__self__", None)
    if owner is not None and not isinstance(owner, type) and hasattr(obj, "__func__"):
        fp = fingerprint(owner)
        return None if fp is None else content_hash("method", fp, obj.__func__.__qualname__)
    return None
