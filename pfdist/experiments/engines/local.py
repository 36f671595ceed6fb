"""The local engine: units one after another in this process, or in a pool of spawned processes."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import get_context
from typing import Callable, Sequence

import torch

from pfdist.errors import PFDistError
from pfdist.processes import exit_with_parent
from pfdist.experiments.engines.job import UnitJob


class LocalEngine:
    """``workers`` > 1 runs units in that many spawned processes, splitting torch's CPU threads
    between them; a script using it needs the usual ``if __name__ == "__main__":`` guard."""

    def __init__(self, workers: int = 1):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise PFDistError(f"workers must be an integer >= 1 (got {workers!r}).")
        self.workers = workers

    def run(self, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None:
        if self.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                job()
                done(job)
            return
        threads = max(1, torch.get_num_threads() // self.workers)
        # Workers end with this process (kill -9 included): see pfdist.processes.
        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
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
