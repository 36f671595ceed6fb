"""Exclusive directory locks, so that two runs never write into one directory at once.

``with DirectoryLock(path):`` takes an ``flock`` on ``path/.lock`` (released by the kernel when
the process ends, however it ends, so a killed run leaves no stale lock) and records the
holder's pid, host and start time in that file. A second process gets a PFDistError naming the
holder, or waits for it with ``wait=True``. A ``shared=True`` lock (a shard of a run, which
holds it only briefly, to claim the directory and to write tables) waits for a holder that is
also shared, so shards started at once queue instead of refusing each other; a run holding the
directory for its whole length is still refused. While it holds the lock, the holder removes
the temporaries (``.*.tmp``) that killed writers left behind: no live writer can own them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from pfdist.atomic import remove_temporaries
from pfdist.errors import PFDistError

LOCK_FILE = ".lock"


class DirectoryLock:
    """An exclusive lock on a directory (created if missing); re-entrant within one process."""

    _held: dict[str, int] = {}  # resolved path -> depth, for nested use in one process

    def __init__(self, directory: str | os.PathLike, *, wait: bool = False, cleanup: bool = True,
                 shared: bool = False):
        self.directory = Path(directory)
        self.wait, self.cleanup, self.shared = wait, cleanup, shared
        self._fd: int | None = None

    def __enter__(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        key = str(self.directory.resolve())
        if key in self._held:
            self._held[key] += 1
            return self
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _holder(path)
                if not (self.shared and holder.get("shared")):
                    raise PFDistError(
                        f"{self.directory} is in use by {_describe(holder)}; wait for that run to finish (or pass "
                        "--wait to wait for it), or choose another output directory.") from None
                fcntl.flock(fd, fcntl.LOCK_EX)  # another shard claiming or writing tables: a short wait
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "shared": self.shared,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode())
        self._fd = fd
        self._held[key] = 1
        if self.cleanup:
            remove_temporaries(self.directory)
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.directory.resolve())
        self._held[key] -= 1
        if self._held[key] == 0:
            del self._held[key]
            if self._fd is not None:
                os.close(self._fd)  # releases the flock
                self._fd = None


def _holder(path: Path) -> dict:
    """The holder's record; a holder that has just taken the lock may not have written it yet."""
    for _ in range(40):
        try:
            info = json.loads(path.read_text())
            if isinstance(info, dict) and "pid" in info:
                return info
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {}


def _describe(info: dict) -> str:
    try:
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (KeyError, TypeError):
        return "another process"
