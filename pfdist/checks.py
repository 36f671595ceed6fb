"""Validators for values crossing pfdist's boundaries: each returns the value or raises one PFDistError.

Nothing is coerced silently: ``4.7`` is not an integer, ``-0.2`` is not a standard deviation,
``"4"`` is not a number and ``NaN`` is not finite. Configs call these at construction, so a bad
value is refused before anything is written or trained.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from pfdist.errors import PFDistError

SEED_MAX = 2**63 - 1  # seeds are derived into 64-bit generator states
MAX_NUMEL = 1 << 24  # largest data shape (16.7 M values, e.g. 3 x 2048 x 2048) accepted from files and the CLI

# Sizes that cannot finish or fit in memory are refused up front (see :func:`size`), here in one place.
MAX_SEEDS = 1 << 24  # seeds of one evaluation (pfd, flow_outputs, EvalConfig): 16.8 M, 1 700x the paper's 10 000
MAX_HELD_VALUES = 1 << 31  # numbers one evaluation keeps in memory (outputs x features): 8 GiB in float32
MAX_TRAIN_SET = 1 << 20  # training set size N (the seed blocks of independent training sets are 2^20 apart)
MAX_FIT_SAMPLES = 1 << 16  # samples a kernel bandwidth is fitted on: the nearest-neighbour search is O(n^2)
MAX_TRAIN_IMAGES = 1 << 36  # images one student trains on (epochs x epoch_images): 69 G, 340x EDM's CIFAR-10 run
MAX_STUDENTS = 1024  # students K of one bias-variance decomposition: each is trained, all are held in memory
STUDENTS_WHY = "each student is trained and all their outputs are held in memory"


def integer(name: str, value: Any, *, lo: int | None = None, hi: int | None = None, fix: str = "",
            error: type[PFDistError] = PFDistError) -> int:
    """An int (not a bool, not a float such as 4.7 or 4.0) in [lo, hi].

    ``fix`` ends the message (what to give instead, or why the bounds are what they are);
    ``error`` is the PFDistError subclass raised (e.g. a damaged file's).
    """
    tail = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name} must be an integer, got {value!r}{tail}.")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise error(f"{name} must be an integer {bounds}, got {value}{tail}.")
    return value


def size(name: str, value: Any, limit: int, why: str, *, lo: int = 1) -> int:
    """A count (int >= lo) no larger than ``limit``; above it, the error says why it cannot be run."""
    value = integer(name, value, lo=lo)
    if value > limit:
        raise PFDistError(f"{name} = {value:,} is more than pfdist runs ({limit:,}): {why}. Use a smaller {name}.")
    return value


def real(name: str, value: Any, *, lo: float | None = None, hi: float | None = None, positive: bool = False,
         fix: str = "", error: type[PFDistError] = PFDistError) -> float:
    """A finite real number (not a bool or a string), in [lo, hi], and > 0 when ``positive``.

    ``fix`` and ``error`` as in :func:`integer`.
    """
    tail = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value!r}{tail}.")
    value = float(value)
    if positive and value <= 0:
        raise error(f"{name} must be positive, got {value}{tail}.")
    if lo is not None and value < lo:
        raise error(f"{name} must be >= {lo}, got {value}{tail}.")
    if hi is not None and value > hi:
        raise error(f"{name} must be <= {hi:g}, got {value:g}{tail}.")
    return value


def seed(name: str, value: Any) -> int:
    return integer(name, value, lo=0, hi=SEED_MAX)


def seed_ranges(name: str, value: Any) -> list[range]:
    """Seeds in EDM's syntax, ranges and comma lists (``"0-49999"``, ``"0-9,20,30-39"``), or a
    range or sequence of ints, as contiguous runs in the order given (adjacent runs joined). A
    seed given twice, a backward range or a seed outside [0, SEED_MAX] is refused."""
    if isinstance(value, range) and value.step == 1:
        parts = [value]
    elif isinstance(value, str):
        parts = []
        for item in value.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
            if m is None:
                raise PFDistError(f"{name} must be seeds and ranges separated by commas, e.g. 0-49999 or "
                                  f"0-9,20,30-39 (got {item.strip()!r} in {value!r}).")
            lo, hi = int(m[1]), int(m[2] or m[1])
            if hi < lo:
                raise PFDistError(f"{name}: the range {lo}-{hi} runs backwards; write {hi}-{lo}.")
            parts.append(range(lo, hi + 1))
    elif isinstance(value, Sequence):
        parts = [range(s, s + 1) for s in (seed(f"{name}[{i}]", v) for i, v in enumerate(value))]
    else:
        raise PFDistError(f"{name} must be a string such as '0-49999' or '0-9,20', a range or a list of seeds "
                          f"(got {type(value).__name__}).")
    runs: list[range] = []
    for r in parts:
        seed(name, r.start)
        seed(name, r.stop - 1)
        if runs and runs[-1].stop == r.start:
            runs[-1] = range(runs[-1].start, r.stop)
        elif len(r):
            runs.append(r)
    if not runs:
        raise PFDistError(f"{name} holds no seed.")
    ordered = sorted(runs, key=lambda r: r.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.stop:
            raise PFDistError(f"{name} gives seed {b.start} twice; each seed may appear once.")
    return runs


def seed_range(name: str, value: Any, num_samples: int, count_name: str = "num_samples") -> int:
    """A first seed such that all of seeds value .. value + num_samples - 1 are valid seeds."""
    if num_samples > SEED_MAX:
        raise PFDistError(f"{count_name} = {num_samples} is more seeds than there are (at most {SEED_MAX}).")
    return integer(name, value, lo=0, hi=SEED_MAX - num_samples + 1)


def shape(name: str, value: Any, *, max_numel: int = MAX_NUMEL) -> tuple[int, ...]:
    """A non-empty sequence of positive ints whose product is at most ``max_numel``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise PFDistError(f"{name} must be a non-empty list of positive integers, got {value!r}.")
    dims = tuple(integer(f"{name}[{i}]", v, lo=1) for i, v in enumerate(value))
    if math.prod(dims) > max_numel:
        raise PFDistError(f"{name} = {list(dims)} has {math.prod(dims):,} values per sample, more than the "
                          f"{max_numel:,} pfdist accepts; check the shape.")
    return dims


def tensor(name: str, value: Any, *, ndim: int | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """A finite real tensor from a tensor or a rectangular nested list of numbers."""
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise PFDistError(f"{name} must hold real numbers, got a {value.dtype} tensor.")
        t = value.to(dtype)
    else:
        if _has_non_number(value):
            raise PFDistError(f"{name} must be a number or a nested list of numbers, got {_short(value)}.")
        try:
            t = torch.as_tensor(value, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise PFDistError(f"{name} must be a rectangular nested list of numbers (every row the same "
                              f"length), got {_short(value)}.") from None
    if ndim is not None and t.ndim != ndim:
        raise PFDistError(f"{name} must have {ndim} dimensions, got shape {list(t.shape)}.")
    if not torch.isfinite(t).all():
        raise PFDistError(f"{name} contains NaN or Inf.")
    return t


def _has_non_number(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_non_number(v) for v in value)
    return isinstance(value, bool) or not isinstance(value, numbers.Real)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def existing_file(path: Any, what: str, fix: str = "") -> Path:
    """``path`` as a Path to a file that exists: "does not exist" and "is a directory" are two errors.

    ``what`` names the file in the message ("descriptor file"), ``fix`` says what to give instead.
    """
    path = Path(path)
    if path.is_dir():
        raise PFDistError(f"{what} {path} is a directory, not a file{'; ' + fix if fix else ''}.")
    if not path.is_file():
        raise PFDistError(f"{what} {path} does not exist{'; ' + fix if fix else ''}.")
    return path


def existing_dir(path: Any, what: str, fix: str = "") -> Path:
    """``path`` as a Path to a directory that exists: "does not exist" and "is a file" are two errors."""
    path = Path(path)
    if not path.exists():
        raise PFDistError(f"{what} {path} does not exist{'; ' + fix if fix else ''}.")
    if not path.is_dir():
        raise PFDistError(f"{what} {path} is a file, not a directory{'; ' + fix if fix else ''}.")
    return path


def device(name: str, value: Any) -> torch.device:
    """A torch device that exists here and can run models ('cpu', 'cuda', 'cuda:1', 'mps')."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise PFDistError(f"{name} {value!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1', ...") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PFDistError(f"{name} {dev} was asked for but CUDA is not available here; use 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PFDistError(f"{name} {dev} does not exist ({torch.cuda.device_count()} CUDA devices).")
        return dev
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise PFDistError(f"{name} {dev} was asked for but MPS is not available here; use 'cpu'.")
        return dev
    raise PFDistError(f"{name} {dev} cannot run models; use 'cpu' or 'cuda' ('meta' holds no data).")
