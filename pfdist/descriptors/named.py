"""Several descriptors measured together, by name, the first one primary."""

from __future__ import annotations

from typing import Iterator, Mapping

from pfdist.descriptors.base import Descriptor, descriptor_fingerprint, identity
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash


class NamedDescriptors(Mapping[str, Descriptor]):
    """An ordered ``{name: descriptor}``; ``primary`` is the first name. Its fingerprint covers
    every name and descriptor (None when one of them has none)."""

    def __init__(self, items: Mapping[str, Descriptor]):
        self._items = dict(items)
        if not self._items:
            raise PFDistError("NamedDescriptors needs at least one descriptor.")

    @classmethod
    def of(cls, descriptor: "Descriptor | NamedDescriptors") -> "NamedDescriptors":
        """A single descriptor becomes {"pixels": identity} or {"descriptor": psi}."""
        if isinstance(descriptor, NamedDescriptors):
            return descriptor
        return cls({"pixels" if descriptor is identity else "descriptor": descriptor})

    @property
    def primary(self) -> str:
        return next(iter(self._items))

    def __getitem__(self, name: str) -> Descriptor:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def fingerprint(self) -> str | None:
        fps = [(name, descriptor_fingerprint(d)) for name, d in self._items.items()]
        if any(fp is None for _, fp in fps):
            return None
        return "named:" + content_hash("named_descriptors/v1", fps)

    def __repr__(self) -> str:
        return f"NamedDescriptors({self._items!r})"
