"""The descriptor contract Psi: (batch, *shape) -> (batch, *feature), and the one place it is applied.

A descriptor is any callable on a batch of samples. ``identity`` gives pixel-space PFD. A
descriptor whose outputs may be cached says what it is with ``fingerprint() -> str`` (a content
hash); one without a fingerprint is used but its outputs are never cached. Names, JSON specs and
files become descriptors in :func:`pfdist.descriptors.resolve`, at the edge; below it, code
receives descriptor objects and applies them with :func:`describe`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from pfdist.errors import NonFiniteError, PFDistError
from pfdist.hashing import fingerprint

Descriptor = Callable[[Tensor], Tensor]

PIXEL_NAMES = ("pixels", "identity")


def identity(x: Tensor) -> Tensor:
    """Pixel-space PFD: Psi(x) = x."""
    return x


def describe(values: Tensor, descriptor: Descriptor, batch_size: int = 256, *, where: str = "") -> Tensor:
    """Psi of values (M, *shape), batch by batch, on the values' device; identity returns them as is.

    Each batch's Psi must be a (batch, ...) tensor of finite numbers; ``where`` (e.g. " on seeds
    0..9") says which values failed otherwise.
    """
    if descriptor is identity:
        return values
    if not callable(descriptor):
        raise PFDistError(f"the descriptor must be a callable Psi(x) (got a {type(descriptor).__name__}): resolve a "
                          "spec with pfdist.descriptors.resolve, and give the spaces of a NamedDescriptors one by one.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PFDistError(f"batch_size must be a positive integer (got {batch_size!r}).")
    chunks = []
    with torch.no_grad():
        for start in range(0, values.shape[0], batch_size):
            x = values[start : start + batch_size]
            out = descriptor(x)
            if not isinstance(out, Tensor) or out.shape[:1] != x.shape[:1]:
                raise PFDistError(f"the descriptor must return a (batch, ...) tensor; got {type(out).__name__} "
                                  f"{tuple(getattr(out, 'shape', ()))} for a batch of {x.shape[0]}.")
            if not torch.isfinite(out).all():
                raise NonFiniteError(f"the descriptor gave NaN or Inf{where}.")
            chunks.append(out.to(values.device))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def descriptor_fingerprint(descriptor: Descriptor) -> str | None:
    """A content hash of the descriptor ("identity" for pixels), or None when it cannot be known."""
    if descriptor is identity:
        return "identity"
    return fingerprint(descriptor)
