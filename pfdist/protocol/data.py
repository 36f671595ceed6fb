"""Teachers and their training sets: seed streams disjoint from the evaluation seeds.

Training set ``index`` of size N is the teacher's flow map on seeds
``index * DATASET_STRIDE + (0 .. N-1)``: set 0 starts at seed 0 (as EDM's training seeds), and
the first N of one stream form nested sets for scaling sweeps; other indices are independent
sets for bias-variance. Evaluation seeds start at 100 000, test-loss samples at 200 000.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import Tensor

from pfdist import checks, distributed
from pfdist.atomic import CorruptFileError, atomic_save_tensors, load_tensors_checked, warn_corrupt
from pfdist.denoisers import EmpiricalDenoiser
from pfdist.errors import PFDistError
from pfdist.flows import FlowSettings, flow_outputs
from pfdist.hashing import content_hash, fingerprint
from pfdist.ode import data_shape

EVAL_SEED = 100_000
TEST_SEED = 200_000
DATASET_STRIDE = 1 << 20
MAX_N = checks.MAX_TRAIN_SET


def dataset_seeds(n: int, index: int = 0, *, eval_seeds: range = range(EVAL_SEED, EVAL_SEED + 10_000)) -> range:
    """Seeds of training set ``index`` of size ``n``; checked disjoint from ``eval_seeds`` and the test seeds."""
    checks.integer("N", n, lo=1, fix="the training set size")
    checks.integer("dataset index", index, lo=0)
    if n > MAX_N:
        raise PFDistError(f"N = {n} exceeds the largest supported training set ({MAX_N}): the seeds of "
                          "independent training sets are 2^20 apart.")
    seeds = range(index * DATASET_STRIDE, index * DATASET_STRIDE + n)
    for other, name in ((eval_seeds, "evaluation"), (range(TEST_SEED, TEST_SEED + 100_000), "test")):
        if seeds.start < other.stop and other.start < seeds.stop:
            raise PFDistError(
                f"training seeds {seeds.start}..{seeds.stop - 1} overlap the {name} seeds "
                f"{other.start}..{other.stop - 1}; use a smaller N or another dataset index."
            )
    return seeds


def teacher_samples(
    teacher: Callable,
    seeds: range,
    *,
    shape: Sequence[int],
    flow: FlowSettings | None = None,
    batch_size: int = 512,
    device: Any = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """The teacher's samples Phi_teacher(x_T) on ``seeds``, ``(len(seeds), *shape)`` on the CPU.

    With ``cache_dir`` (and a teacher with a content fingerprint) the samples are stored as a
    checksummed safetensors file keyed by the teacher, seeds, shape and flow settings; a file
    that fails its checksum, or holds another key's entry (a copied file), is recomputed, with
    one warning line.
    """
    if isinstance(teacher, EmpiricalDenoiser) and len(seeds) > len(teacher):
        raise PFDistError(
            f"the teacher is a finite set of {len(teacher)} points and cannot supply N = {len(seeds)} "
            "distinct samples; use N <= that or a continuous teacher."
        )
    own = data_shape(teacher)
    if own is not None and own != tuple(shape):
        raise PFDistError(f"the teacher's data shape is {own}, not {tuple(shape)}.")
    flow = flow or FlowSettings()
    path, key = _cache_path(teacher, seeds, shape, flow, cache_dir)
    if path is not None and distributed.all_true(path.is_file()):  # every rank of a group, or none
        values = _read_samples(path, (len(seeds), *shape), key)
        if distributed.all_true(values is not None):  # a damaged file anywhere is a miss everywhere
            if progress:
                progress(len(seeds))
            return values
    out = flow_outputs(teacher, shape=shape, num_samples=len(seeds), seed=seeds.start, flow=flow,
                       batch_size=batch_size, device=device, progress=progress)
    if path is not None and distributed.is_main():
        atomic_save_tensors(path, {"data": out.values}, checksum=True, key=key)
    return out.values


def _read_samples(path: Path, shape: tuple[int, ...], key: str) -> Tensor | None:
    """The cached samples, or None (with one warning line) when the file is damaged or holds
    another key's entry."""
    try:
        values = load_tensors_checked(path, key=key)[0]["data"]
        if tuple(values.shape) == shape:
            return values
        raise CorruptFileError(f"{path} holds {tuple(values.shape)}, not {shape}")
    except (CorruptFileError, KeyError) as e:
        warn_corrupt(e if isinstance(e, CorruptFileError) else CorruptFileError(f"{path} has no 'data'"))
    return None


def _cache_path(teacher: Any, seeds: range, shape: Sequence[int], flow: FlowSettings,
                cache_dir: str | os.PathLike | None) -> tuple[Path | None, str | None]:
    """The cache file and the full key stored in it (checked on read), or (None, None)."""
    fp = fingerprint(teacher) if cache_dir is not None else None
    if fp is None:
        return None, None
    key = content_hash("teacher_samples/v1", fp, seeds.start, len(seeds), list(shape), dataclasses.asdict(flow))
    return Path(cache_dir) / f"data-{key[:32]}.safetensors", key
