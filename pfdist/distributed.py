"""Data parallelism over seeds inside a ``torch.distributed`` process group.

Under torchrun, ``accelerate launch`` or any launcher that initialises a process group, each
rank evaluates one contiguous block of the seed range (whole batches of one process; the ranks'
numbers of batches differ by at most one) and the per-seed values are gathered in seed order, so
every rank returns what one process returns: the noise of a seed depends on the seed alone
(``pfdist.noise``), and each seed goes through the network in the batch one process forms (a
network's float rounding may depend on the size of its batch). Outside a group, or in a group of
one, nothing changes.

Every rank joins every collective. An error on one rank (NaN seeds, a bad file, an exhausted
device) is sent to all ranks with the others' results and raised on each of them, instead of
leaving the ranks that succeeded waiting for one that never arrives.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from pfdist import errors
from pfdist.errors import DistributedError, PFDistError

T = TypeVar("T")


_alone = False  # inside alone(): this rank works as one process (its own units, its own files)


def _grouped() -> bool:
    return not _alone and dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1); (0, 1) inside :func:`alone`."""
    if _grouped():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and outside a process group, or inside :func:`alone`): the rank that
    prints and writes files. Before the group is joined, the launcher's RANK variable says it."""
    if _alone:
        return True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def alone() -> Iterator[None]:
    """Work as one process inside a group: no collectives, this rank reads and writes its own
    files (a rank that trains its own students while the others train theirs)."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def broadcast(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (tensors in it should be on the CPU)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def block(num_samples: int, rank: int, world_size: int, unit: int = 1) -> tuple[int, int]:
    """(offset, count) of ``rank``'s contiguous block of ``num_samples`` items, split in whole
    units of ``unit`` items (the last unit may be short): the first ``units % world_size`` ranks
    take one unit more; ranks beyond the number of units get none."""
    units = -(-num_samples // unit)
    base, extra = divmod(units, world_size)
    first = rank * base + min(rank, extra)
    offset = min(first * unit, num_samples)
    return offset, min((first + base + (rank < extra)) * unit, num_samples) - offset


def _exchange(error: BaseException | None, payload: Any) -> list[Any]:
    """All ranks' payloads in rank order; raises on every rank if any rank brought an error."""
    rank, size = world()
    sent = (None if error is None else (type(error).__name__, str(error)), payload)
    received: list[Any] = [None] * size
    dist.all_gather_object(received, sent)
    if error is not None:
        raise error  # the failing rank keeps its own traceback
    for r, (err, _) in enumerate(received):
        if err is not None:
            raise_remote(r, *err)
    return [payload for _, payload in received]


def raise_remote(rank: int, name: str, message: str) -> None:
    """Raise rank ``rank``'s error here: the same pfdist error class, else DistributedError."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, PFDistError):
        raise cls(f"on rank {rank}: {message}")
    raise DistributedError(f"rank {rank} failed with {name}: {message}")


def together(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; if it fails on any rank, every rank raises that error.

    For steps whose failure may differ between ranks (reading a file on each node) before
    a collective that all ranks must reach.
    """
    if world()[1] == 1:
        return fn()
    try:
        out, error = fn(), None
    except Exception as e:  # noqa: BLE001 - sent to the other ranks, then re-raised
        out, error = None, e
    _exchange(error, None)
    return out


def all_true(flag: bool) -> bool:
    """True when ``flag`` is true on every rank (e.g. a cache file every rank can read)."""
    if world()[1] == 1:
        return bool(flag)
    return all(_exchange(None, bool(flag)))


def over_seeds(
    compute: Callable[[int, int], tuple[Tensor, Any]],
    seed: int,
    num_samples: int,
    progress: Callable[[int], None] | None = None,
    unit: int = 1,
) -> tuple[Tensor, list[Any]]:
    """Run ``compute(block_seed, block_count) -> (values, stats)`` on this rank's block of seeds
    ``seed .. seed + num_samples - 1`` and gather. Blocks start on multiples of ``unit`` seeds
    after ``seed`` (give the batch size, so that each rank forms the batches of one process).

    values: ``(block_count, *feature)``, one row per seed. Returns the values of all seeds in
    seed order (on the CPU) and the ``stats`` of every rank that had seeds, in rank order.
    ``progress(n)`` is brought to ``num_samples`` once the blocks are gathered.
    """
    rank, size = world()
    if size == 1:
        values, stats = compute(seed, num_samples)
        return values.cpu(), [stats]
    offset, count = block(num_samples, rank, size, unit)
    values, stats, error = None, None, None
    if count:
        try:
            values, stats = compute(seed + offset, count)
            values = values.detach().cpu()
            if values.shape[0] != count:
                raise AssertionError(f"block of {count} seeds gave {values.shape[0]} rows")
        except Exception as e:  # noqa: BLE001 - sent to the other ranks, then re-raised
            error = e
    meta = None if values is None else (tuple(values.shape[1:]), str(values.dtype).removeprefix("torch."), stats)
    metas = _exchange(error, meta)
    present = [m for m in metas if m is not None]
    feature, dtype = present[0][0], getattr(torch, present[0][1])
    counts = [block(num_samples, r, size, unit)[1] for r in range(size)]
    comm = _comm_device()
    buffer = torch.zeros(max(counts), *feature, dtype=dtype, device=comm)
    if count:
        buffer[:count] = values.to(comm)
    parts = [torch.empty_like(buffer) for _ in range(size)]
    dist.all_gather(parts, buffer)
    gathered = torch.cat([p[:c] for p, c in zip(parts, counts)]).cpu()
    if progress:
        progress(num_samples - count)
    return gathered, [m[2] for m in present]


def sum_over_ranks(values: Tensor) -> Tensor:
    """The elementwise sum of ``values`` over the ranks (itself outside a group), on the CPU."""
    if world()[1] == 1:
        return values.cpu()
    buffer = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.cpu()


def cat_over_ranks(values: Tensor) -> Tensor:
    """Every rank's 1-D ``values`` joined in rank order (lengths may differ), on the CPU."""
    rank, size = world()
    if size == 1:
        return values.cpu()
    comm = _comm_device()
    counts = [torch.zeros(1, dtype=torch.int64, device=comm) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([values.numel()], device=comm))
    counts = [int(c.item()) for c in counts]
    buffer = torch.zeros(max(counts), dtype=values.dtype, device=comm)
    buffer[: values.numel()] = values.to(comm)
    parts = [torch.empty_like(buffer) for _ in range(size)]
    dist.all_gather(parts, buffer)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).cpu()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched() -> bool:
    """True when a launcher (torchrun, accelerate, ...) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(device: Any) -> torch.device | None:
    """This rank's device: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` under a launcher."""
    if device is None:
        return None
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def process_group(device: Any = None, timeout: timedelta | None = None) -> Iterator[torch.device | None]:
    """Join the launcher's process group (NCCL for CUDA, gloo otherwise) for the duration, and
    yield this rank's device. Does nothing without a launcher or when a group already exists.

    ``timeout``: how long a rank waits for the others at a collective (torch's default, 30 min
    for gloo, unless given); ranks that train different students wait for each other longer."""
    device = rank_device(device)
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield device
        return
    if not dist.is_available():
        raise PFDistError("this PyTorch build has no torch.distributed; run one process instead.")
    cuda = device is not None and device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
            raise PFDistError(f"rank device {device} does not exist here; start at most "
                              f"{torch.cuda.device_count()} processes per node.")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", **({} if timeout is None else {"timeout": timeout}))
    try:
        yield device
    finally:
        dist.destroy_process_group()
