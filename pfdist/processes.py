"""Worker processes that end with their parent.

A pool worker whose parent is killed (``kill -9``, a crashed driver) must not keep training and
writing into the run directory. :func:`exit_with_parent`, run first in each worker (a pool's
``initializer``), makes the kernel send it SIGTERM when the parent dies (Linux
``prctl(PR_SET_PDEATHSIG)``), and starts a watchdog thread that polls the parent's pid, for
other systems and for a parent that died before the prctl took effect.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """In a worker: end this process as soon as ``parent_pid`` is no longer its parent."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="pfdist-parent-watchdog", daemon=True).start()
