"""Seed-addressed randomness: x_T and class labels of seed k are pure functions of k."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.settings import FlowSettings

LABEL_STREAM = 1 << 62  # labels of seed s come from generator seed LABEL_STREAM + s


def _seeds(seeds: Iterable[int]) -> list[int]:
    seeds = [checks.integer("each seed", s) for s in seeds]
    if not seeds:
        raise PFDistError("seeds is empty; give at least one seed.")
    if any(s < 0 or s >= LABEL_STREAM for s in seeds):
        raise PFDistError(f"seeds must be integers in [0, 2^62) (got {min(seeds)}..{max(seeds)}).")
    return seeds


def noise(
    seeds: Iterable[int],
    shape: Sequence[int],
    sigma_max: float = FlowSettings.sigma_max,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """x_T ~ N(0, sigma_max^2 I) per seed, ``(len(seeds), *shape)``.

    One CPU generator per seed (as EDM's generate.py), so the noise of a seed is the same
    whatever the batch, the order of seeds, or the device it is moved to.
    """
    seeds = _seeds(seeds)
    shape = checks.shape("shape", shape)
    sigma_max = checks.real("sigma_max", sigma_max, positive=True)
    out = torch.empty(len(seeds), *shape, dtype=torch.float32)
    g = torch.Generator()
    for i, s in enumerate(seeds):
        g.manual_seed(s)
        torch.randn(shape, generator=g, out=out[i])
    return (out * sigma_max).to(device=device, dtype=dtype)


def seeded_labels(
    seeds: Iterable[int],
    label_dim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One-hot class labels ``(len(seeds), label_dim)``, uniform over classes, one per seed.

    Drawn from a generator seeded with ``2^62 + seed``, a stream disjoint from the noise's, so a
    seed's label does not depend on the batch, the order, the data shape or the model.
    """
    seeds = _seeds(seeds)
    checks.integer("label_dim", label_dim, lo=1, fix="the model's number of classes")
    g = torch.Generator()
    index = torch.empty(len(seeds), dtype=torch.long)
    for i, s in enumerate(seeds):
        g.manual_seed(LABEL_STREAM + s)
        index[i] = torch.randint(label_dim, (1,), generator=g)
    return torch.nn.functional.one_hot(index, label_dim).to(device=device, dtype=dtype)
