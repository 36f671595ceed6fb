"""The descriptor contract Psi: (batch, *shape) -> (batch, *feature), and how names become one.

A descriptor is any callable on a batch of samples. ``identity`` gives pixel-space PFD. A
descriptor whose outputs may be cached says what it is with ``fingerprint() -> str`` (a content
hash); one without a fingerprint is used but its outputs are never cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import Tensor

from pfdist.errors import PFDistError

Descriptor = Callable[[Tensor], Tensor]

PIXEL_NAMES = ("pixels", "identity")


def identity(x: Tensor) -> Tensor:
    """Pixel-space PFD: Psi(x) = x."""
    return x


def resolve_descriptor(descriptor: Descriptor | str | os.PathLike | None) -> Descriptor:
    """None or "pixels" -> identity; a file -> its descriptor; a callable as is.

    Files: ``.safetensors`` is a saved :class:`KernelDescriptor` (tensors and JSON only, no code);
    anything else is read as a TorchScript archive or a ``torch.export`` ``.pt2`` program. Those
    two formats are code: loading one runs what its author put in it, so load only files you trust.
    """
    if descriptor is None:
        return identity
    if isinstance(descriptor, str) and descriptor in PIXEL_NAMES:
        return identity
    if isinstance(descriptor, (str, os.PathLike)):
        path = Path(descriptor)
        if path.suffix == ".safetensors":
            from pfdist.descriptors.kernel import KernelDescriptor

            return KernelDescriptor.load(path)
        from pfdist.descriptors.files import TorchScriptDescriptor

        return TorchScriptDescriptor(path)
    from pfdist.descriptors.named import NamedDescriptors

    if isinstance(descriptor, NamedDescriptors):  # several spaces: the protocol measures each
        return descriptor
    if not callable(descriptor):
        raise PFDistError(
            f"descriptor must be None, 'pixels', a callable or a descriptor file path; got {type(descriptor).__name__}."
        )
    return descriptor


def descriptor_fingerprint(descriptor: Descriptor) -> str | None:
    """A content hash of the descriptor ("identity" for pixels), or None when it cannot be known."""
    if descriptor is identity:
        return "identity"
    from pfdist.hashing import fingerprint

    return fingerprint(descriptor)
