"""The local engine: units one after another in this process, or in a pool of spawned processes.

Ctrl-C: a terminal sends SIGINT to every process of the foreground group, workers included.
Workers ignore it (a pool worker would otherwise report the interrupt as its unit's result and go
on to the next unit); the driver alone decides: it ends the workers, cancels the units not started
(their students resume from the last checkpoint on the next run; finished units are kept) and
raises ``KeyboardInterrupt`` within seconds.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import active_children, get_context
from typing import Callable, Sequence

import torch

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.processes import exit_with_parent
from pfdist.experiments.engines.job import UnitJob


class LocalEngine:
    """``workers`` > 1 runs units in that many spawned processes, splitting torch's CPU threads
    between them; a script using it needs the usual ``if __name__ == "__main__":`` guard."""

    def __init__(self, workers: int = 1):
        self.workers = checks.integer("workers", workers, lo=1)

    def run(self, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None:
        if self.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                job()
                done(job)
            return
        threads = max(1, torch.get_num_threads() // self.workers)
        before = set(active_children())
        # Workers end with this process (kill -9 included): see pfdist.processes.
        pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker_start,
                                   initargs=(os.getpid(),))
        try:
            futures = {pool.submit(replace(job, threads=job.threads or threads)): job for job in jobs}
            for fut in as_completed(futures):
                try:
                    fut.result()
                except BrokenProcessPool:
                    job = futures[fut]
                    raise PFDistError(f"a worker process died (killed, or out of memory) while running "
                                      f"{job.label or f'unit {job.index}'}; finished units are kept: run the same "
                                      f"command again to resume {job.run_dir}.") from None
                done(futures[fut])
        except BaseException:
            _stop(pool, [p for p in active_children() if p not in before])
            raise
        pool.shutdown()


def _worker_start(parent_pid: int) -> None:
    """A pool worker: Ctrl-C is the driver's to handle; end with the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent_pid)


def _stop(pool: ProcessPoolExecutor, workers: list, grace_s: float = 5.0) -> None:
    """End the workers (SIGTERM, then SIGKILL after ``grace_s``), then the pool: the units not
    started are cancelled and its manager thread has ended when this returns.

    One ``shutdown(wait=True)``, after the workers: a ``shutdown(wait=False)`` before it would drop
    the pool's reference to its manager thread, which would then outlive this call and could close
    its wake-up pipe while the interpreter's exit writes to it (an "Exception ignored" traceback
    after the interrupt message).
    """
    for p in workers:
        p.terminate()
    for p in workers:
        p.join(grace_s)
        if p.is_alive():
            p.kill()
            p.join()
    pool.shutdown(wait=True, cancel_futures=True)  # its manager thread sees the workers gone and ends
