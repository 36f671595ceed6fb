"""Precomputed outputs Psi(Phi(x_T)) that record what made them, so nothing can reuse them wrongly."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from pfdist.descriptors import Descriptor, describe, descriptor_fingerprint, identity
from pfdist.errors import PFDistError
from pfdist.settings import FlowSettings


@dataclass(frozen=True)
class FlowOutputs:
    """Psi(Phi(x_T)) for seeds ``seed .. seed + len(values) - 1``, and what made them.

    ``flow``: the grid the ODE ran on (after clamping to the model's sigma range; None for a
    generator). ``sigma_max``: the T of x_T ~ N(0, T^2 I). ``map_fingerprint``: the map's content
    hash (None when it has none). ``descriptor``: Psi's fingerprint (None for a callable without
    one: then only that very object, kept in ``descriptor_object``, matches). ``dtype``: the
    precision the map ran in. ``conditioning``: None, ``"seeded/K"`` or ``"class=c/K"``.
    ``shape``: the map's data shape (its decoded images for a latent model); ``noise_shape``:
    the shape of its x_T, when different (the latents of a decoded map).
    :func:`pfdist.pfd` refuses outputs whose record differs from the comparison it is asked for.
    """

    values: Tensor  # (num_samples, *feature_shape), on the CPU
    seed: int
    shape: tuple[int, ...]  # data shape the map was evaluated at
    nfe: float
    key: str | None = None  # cache key (None when the map or descriptor has no fingerprint)
    flow: FlowSettings | None = field(default_factory=FlowSettings)
    sigma_max: float | None = None  # default: the grid's top, flow.sigma_max
    map_fingerprint: str | None = None
    descriptor: str | None = "identity"
    dtype: str = str(torch.float32)
    conditioning: str | None = None
    descriptor_object: Any = field(default=identity, compare=False, repr=False)
    noise_shape: tuple[int, ...] | None = None  # shape of x_T when it differs from ``shape`` (a decoded map)

    def __post_init__(self):
        if self.noise_shape is not None and tuple(self.noise_shape) == tuple(self.shape):
            object.__setattr__(self, "noise_shape", None)
        if self.sigma_max is None:
            if self.flow is None:
                raise PFDistError("FlowOutputs of a generator (flow=None) need sigma_max, the T of their x_T.")
            object.__setattr__(self, "sigma_max", self.flow.sigma_max)
        if self.flow is not None and self.flow.sigma_max != self.sigma_max:
            raise PFDistError(f"sigma_max={self.sigma_max} differs from the top of the grid {self.flow}.")

    @property
    def num_samples(self) -> int:
        return self.values.shape[0]

    @property
    def settings(self) -> FlowSettings | None:
        """The flow settings (older name of ``flow``)."""
        return self.flow

    def slice(self, seed: int, num_samples: int) -> Tensor:
        start = seed - self.seed
        if start < 0 or start + num_samples > self.num_samples:
            raise PFDistError(
                f"precomputed outputs cover seeds {self.seed}..{self.seed + self.num_samples - 1}, "
                f"but seeds {seed}..{seed + num_samples - 1} were asked for; recompute them with "
                "flow_outputs(..., seed=..., num_samples=...) covering that range."
            )
        return self.values[start : start + num_samples]

    def matches_descriptor(self, descriptor: Descriptor) -> bool:
        """Whether these outputs were made with ``descriptor`` (same fingerprint, or the same object)."""
        fp = descriptor_fingerprint(descriptor)
        if fp is None or self.descriptor is None:
            return descriptor is self.descriptor_object
        return fp == self.descriptor

    def describe(self, descriptor: Descriptor, batch_size: int = 256) -> "FlowOutputs":
        """Psi of pixel-space outputs (same seeds, same map); identity returns them unchanged."""
        if descriptor is identity:
            return self
        if self.descriptor != "identity":
            raise PFDistError(f"these outputs are already in a descriptor space ({self.descriptor}); "
                              "apply a descriptor to pixel-space outputs only.")
        return replace(self, values=describe(self.values, descriptor, batch_size), key=None,
                       descriptor=descriptor_fingerprint(descriptor), descriptor_object=descriptor)

    def metadata(self) -> dict:
        """The record as JSON (stored beside cached values)."""
        return {"seed": self.seed, "shape": list(self.shape), "nfe": self.nfe, "key": self.key,
                "flow": None if self.flow is None else self.flow.to_dict(), "sigma_max": self.sigma_max,
                "map_fingerprint": self.map_fingerprint, "descriptor": self.descriptor, "dtype": self.dtype,
                "conditioning": self.conditioning,
                **({} if self.noise_shape is None else {"noise_shape": list(self.noise_shape)})}

    @classmethod
    def from_metadata(cls, values: Tensor, meta: dict) -> "FlowOutputs":
        flow = None if meta["flow"] is None else FlowSettings.from_dict(meta["flow"])
        return cls(values, int(meta["seed"]), tuple(meta["shape"]), float(meta["nfe"]), meta["key"], flow,
                   float(meta["sigma_max"]), meta["map_fingerprint"], meta["descriptor"], meta["dtype"],
                   meta["conditioning"], descriptor_object=None,
                   noise_shape=None if meta.get("noise_shape") is None else tuple(meta["noise_shape"]))
