"""One unit of a run as plain data, so that any engine can run it in any process or on any node.

Whatever runs a :class:`UnitJob` (the local pool, a Ray task, a Slurm array task), it ends in
``Context.run(unit)``: the same unit directory, the same resume from its checkpoint, the same
results file. The run directory is the only thing the processes share, so on several machines it
must be shared storage; a token file written by the submitting process proves it.
"""

from __future__ import annotations

import logging
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
LOGS = "logs"  # a cluster worker's log file: <run_dir>/logs/<host>-<pid>.log

log = logging.getLogger(__name__)

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
    log_level: int | None = None  # set: this process logs to a file in the run directory (cluster workers)

    def __call__(self) -> tuple[int, float]:
        """Run the unit (resuming from its checkpoint); returns (index, seconds)."""
        if self.log_level is not None:
            log_to_run_dir(self.run_dir, self.log_level)
        if self.token is not None:
            check_token(self.run_dir, self.token)
        if self.threads:
            torch.set_num_threads(self.threads)
        name = self.label or f"unit {self.index}"
        log.info("%s: started on %s (pid %d, device %s)", name, socket.gethostname(), os.getpid(), self.device or "cpu")
        ctx = context(self.preset, self.run_dir, self.device)
        t0 = time.perf_counter()
        try:
            ctx.run(units_of(ctx.preset)[self.index])
        except Exception:
            log.exception("%s: failed after %.1f s", name, time.perf_counter() - t0)
            raise
        log.info("%s: finished in %.1f s", name, time.perf_counter() - t0)
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


def worker_log_level() -> int:
    """The level of a cluster worker's log file: info, or debug when this process logs debug."""
    return min(logging.INFO, logging.getLogger("pfdist").getEffectiveLevel())


def log_to_run_dir(run_dir: str | os.PathLike, level: int = logging.INFO) -> Path:
    """Send this process's ``pfdist`` log records to ``<run_dir>/logs/<host>-<pid>.log`` (a Ray or
    Slurm worker has no terminal of the driver's); a worker moving to another run moves its file."""
    path = (Path(run_dir) / LOGS / f"{socket.gethostname()}-{os.getpid()}.log").resolve()
    root = logging.getLogger("pfdist")
    for handler in [h for h in root.handlers if getattr(h, "pfdist_run_log", False)]:
        if handler.baseFilename == str(path) and handler.level == level:
            return path
        root.removeHandler(handler)
        handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    handler.pfdist_run_log = True
    root.addHandler(handler)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)
    return path


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
