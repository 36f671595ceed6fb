"""One unit of a run as plain data, so that any engine can run it in any process or on any node.

Whatever runs a :class:`UnitJob` (the local pool, a Ray task, a Slurm array task), it ends in
``Context.run(unit)``: the same unit directory, the same resume from its checkpoint, the same
results file. The run directory is the only thing the processes share, so on several machines it
must be shared storage; a token file written by the submitting process proves it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pfdist.atomic import atomic_write_text
from pfdist.errors import PFDistError
from pfdist.experiments.config import Preset
from pfdist.experiments.units import Context, units_of

TOKEN = ".storage-token"

_contexts: dict[tuple, Context] = {}  # one per process: the teacher's maps are loaded once


@dataclass(frozen=True)
class UnitJob:
    """Unit ``index`` of ``units_of(preset)`` in ``run_dir``; ``threads`` sets torch's CPU threads."""

    preset: dict
    run_dir: str
    index: int
    label: str = ""
    device: str | None = None
    threads: int | None = None
    token: str | None = None

    def __call__(self) -> tuple[int, float]:
        """Run the unit (resuming from its checkpoint); returns (index, seconds)."""
        if self.token is not None:
            check_token(self.run_dir, self.token)
        if self.threads:
            torch.set_num_threads(self.threads)
        ctx = context(self.preset, self.run_dir, self.device)
        t0 = time.perf_counter()
        ctx.run(units_of(ctx.preset)[self.index])
        return self.index, time.perf_counter() - t0


def context(preset: dict, run_dir: str, device: str | None) -> Context:
    """This process's Context for a run (kept for the next unit of the same run)."""
    key = (Preset.from_dict(preset).key(), str(Path(run_dir).resolve()), device)
    if key not in _contexts:
        _contexts.clear()
        _contexts[key] = Context(Preset.from_dict(preset), run_dir, device)
    return _contexts[key]


def remember(ctx: Context, device: str | None) -> None:
    """Let in-process units reuse the driver's Context (and its teacher maps in memory)."""
    _contexts.clear()
    _contexts[(ctx.preset.key(), str(ctx.run_dir.resolve()), device)] = ctx


def write_token(run_dir: str | os.PathLike) -> str:
    """A fresh random token in ``run_dir``: a process that reads it sees the same storage."""
    token = uuid.uuid4().hex
    atomic_write_text(Path(run_dir) / TOKEN, token)
    return token


def check_token(run_dir: str | os.PathLike, token: str) -> None:
    """Refuse to run on a machine that does not see the submitting machine's run directory."""
    path = Path(run_dir) / TOKEN
    try:
        seen = path.read_text().strip()
    except OSError:
        seen = None
    if seen != token:
        raise PFDistError(
            f"{run_dir} on {socket.gethostname()} is not the run directory the run was started in "
            f"({path} {'is missing' if seen is None else 'holds another token'}); on several machines "
            "--out must be shared storage that every node mounts at the same path (NFS, Lustre, ...)."
        )


def device_name(device: Any) -> str | None:
    return None if device is None else str(device)
