"""Seed-addressed noise: x_T of seed k is a pure function of (k, shape)."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor

from pfdist.errors import PFDistError


def noise(
    seeds: Iterable[int],
    shape: Sequence[int],
    sigma_max: float = 80.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """x_T ~ N(0, sigma_max^2 I) per seed, ``(len(seeds), *shape)``.

    One CPU generator per seed (as EDM's generate.py), so the noise of a seed is the same
    whatever the batch, the order of seeds, or the device it is moved to.
    """
    seeds = [int(s) for s in seeds]
    shape = tuple(int(s) for s in shape)
    if not seeds:
        raise PFDistError("seeds is empty; give at least one seed.")
    if any(s < 0 for s in seeds):
        raise PFDistError("seeds must be non-negative integers.")
    out = torch.empty(len(seeds), *shape, dtype=torch.float32)
    g = torch.Generator()
    for i, s in enumerate(seeds):
        g.manual_seed(s)
        torch.randn(shape, generator=g, out=out[i])
    return (out * sigma_max).to(device=device, dtype=dtype)
