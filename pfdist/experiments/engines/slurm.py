"""The Slurm engine: a job array through submitit, one array task per unit or per group of units.

Tasks are checkpointable: when Slurm preempts one or its time runs out, submitit requeues it
(up to ``max_requeues`` times on timeouts) and each unit resumes from its last checkpoint. The run
directory must be shared storage (every node checks the token the submitting machine wrote).
``cluster="local"`` runs the same array as local processes (submitit's local executor);
``cluster=None`` (the default) means Slurm, and is refused where there is no ``sbatch`` rather
than run locally without a word.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.experiments.engines.base import UnitsFailed, require
from pfdist.experiments.engines.job import UnitJob, worker_log_level, write_token


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlurmTask:
    """One array task: its units one after another (finished ones are skipped on a requeue)."""

    jobs: tuple[UnitJob, ...]

    def __call__(self) -> list[int]:
        failures = []
        for job in self.jobs:
            try:
                job()
            except Exception as e:  # noqa: BLE001 - the task's other units still run
                failures.append(f"{job.label or job.index}: {type(e).__name__}: {e}")
        if failures:
            raise PFDistError("; ".join(failures))
        return [job.index for job in self.jobs]

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption or timeout: requeue the same task (units resume)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class SlurmEngine:
    """Submit units as a Slurm job array.

    partition, time_min, mem_gb, account, qos: the usual Slurm requests of each array task.
    cpus_per_unit / gpus_per_unit: per array task (whole GPUs; group small units with
    ``units_per_task`` to share one); gpus_per_unit defaults to 1 when the units run on CUDA, else 0.
    max_parallel: array tasks running at once.
    folder: submitit's logs and pickles (default ``<run_dir>/slurm``). poll_s: how often to look.
    slurm_options: more ``#SBATCH`` options, e.g. ``{"constraint": "a100"}``.
    """

    def __init__(self, partition: str | None = None, time_min: int = 24 * 60, cpus_per_unit: int = 1,
                 gpus_per_unit: int | None = None, mem_gb: float | None = None, units_per_task: int = 1,
                 max_parallel: int | None = None, max_requeues: int = 3, account: str | None = None,
                 qos: str | None = None, cluster: str | None = None, folder: str | None = None,
                 poll_s: float = 10.0, slurm_options: dict | None = None):
        for name, value, low in (("time_min", time_min, 1), ("cpus_per_unit", cpus_per_unit, 1),
                                 ("gpus_per_unit", gpus_per_unit, 0), ("units_per_task", units_per_task, 1),
                                 ("max_requeues", max_requeues, 0), ("max_parallel", max_parallel, 1)):
            if value is not None or name not in ("gpus_per_unit", "max_parallel"):
                checks.integer(name, value, lo=low)
        for name, value in (("mem_gb", mem_gb), ("poll_s", poll_s)):
            if value is not None and checks.real(name, value, positive=True) >= 1e9:
                raise PFDistError(f"{name} must be a positive number below 1e9 (got {value!r}).")
        if cluster not in (None, "slurm", "local", "debug"):
            raise PFDistError(f"cluster must be 'slurm', 'local' or 'debug' (got {cluster!r}).")
        if cluster in (None, "slurm") and shutil.which("sbatch") is None:
            raise PFDistError("the slurm engine found no Slurm here (no sbatch on PATH); run on a Slurm login node, "
                              "or use --engine local.")
        self.partition, self.time_min, self.mem_gb = partition, time_min, mem_gb
        self.cpus, self.gpus, self.per_task = cpus_per_unit, gpus_per_unit, units_per_task
        self.max_parallel, self.max_requeues, self.account, self.qos = max_parallel, max_requeues, account, qos
        self.cluster, self.folder, self.poll_s = cluster, folder, poll_s
        self.slurm_options = dict(slurm_options or {})

    def executor(self, run_dir: str, cuda: bool = False) -> Any:
        submitit = require("submitit", "slurm")
        folder = Path(self.folder or Path(run_dir) / "slurm") / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster, slurm_max_num_timeout=self.max_requeues)
        params: dict[str, Any] = {"name": "pfdist", "timeout_min": self.time_min, "cpus_per_task": self.cpus,
                                  "gpus_per_node": self.gpus if self.gpus is not None else int(cuda)}
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        slurm = {"partition": self.partition, "account": self.account, "qos": self.qos,
                 "array_parallelism": self.max_parallel}
        params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
        params["slurm_additional_parameters"] = {"requeue": True, **self.slurm_options}
        executor.update_parameters(**params)
        return executor

    def run(self, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None:
        if not jobs:
            return
        submitit = require("submitit", "slurm")
        run_dir = jobs[0].run_dir
        token = write_token(run_dir)
        device = "cuda" if (jobs[0].device or "").startswith("cuda") else jobs[0].device
        jobs = [replace(j, token=token, threads=self.cpus, device=device, log_level=worker_log_level()) for j in jobs]
        tasks = [SlurmTask(tuple(jobs[i : i + self.per_task])) for i in range(0, len(jobs), self.per_task)]
        executor = self.executor(run_dir, cuda=device == "cuda")
        with executor.batch():
            submitted = [executor.submit(task) for task in tasks]
        log.info("slurm: %d array tasks submitted (job %s); unit logs in %s/logs", len(submitted),
                 submitted[0].job_id.split("_")[0] if submitted else "-", run_dir)
        of = {id(s): t for s, t in zip(submitted, tasks)}
        failures = []
        for sub in submitit.helpers.as_completed(submitted, poll_frequency=self.poll_s):
            task = of[id(sub)]
            try:
                sub.result()
            except Exception as e:  # noqa: BLE001 - a failed task; the others go on
                failures += [(job, _reason(e)) for job in task.jobs]
            else:
                for job in task.jobs:
                    done(job)
        if failures:
            raise UnitsFailed(failures, len(jobs))


def _reason(error: Exception) -> str:
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(error).__name__
