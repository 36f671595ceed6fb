"""Content hashes: cache keys and config identities that do not depend on object identity."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import Tensor


def update_with_tensor(h: "hashlib._Hash", t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}:".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


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


def fingerprint(obj: Any) -> str | None:
    """A content hash of a denoiser or descriptor, or None when it cannot be known.

    Exact distributions define ``fingerprint()``; torch modules hash their class and state;
    arbitrary callables have no fingerprint (their outputs are not cached).
    """
    if hasattr(obj, "fingerprint") and callable(obj.fingerprint):
        return obj.fingerprint()
    if isinstance(obj, torch.nn.Module):
        return content_hash(type(obj).__qualname__, repr(obj), obj.state_dict())
    return None
