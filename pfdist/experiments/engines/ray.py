"""The Ray engine: one Ray task per unit, with its CPU and (fractional) GPU request.

A task whose worker process dies (a killed process, a lost node) is retried by Ray up to
``max_retries`` times, and the retry resumes the unit from its last checkpoint. Units write to
the run directory, so on a multi-node cluster it must be shared storage; it is checked on every
node before anything is submitted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.experiments.engines.base import UnitsFailed, require
from pfdist.experiments.engines.job import TOKEN, UnitJob, worker_log_level, write_token


log = logging.getLogger(__name__)


def run_unit(job: UnitJob) -> tuple[int, float]:
    """A Ray task (its worker shows as ``ray::run_unit``)."""
    return job()


def _read_token(run_dir: str) -> tuple[str, str | None]:
    try:
        return socket.gethostname(), (Path(run_dir) / TOKEN).read_text().strip()
    except OSError:
        return socket.gethostname(), None


class RayEngine:
    """Submit units to Ray.

    address: passed to ``ray.init`` when this process is not connected yet (``"auto"``: the
    cluster this machine belongs to; None: a new local cluster, shut down afterwards).
    cpus_per_unit: CPUs each task asks for (also torch's thread count in it).
    gpus_per_unit: GPUs each task asks for; fractions (0.25) let small students share a device.
    Defaults to 1 when ``device`` is CUDA, else 0.
    max_retries: retries of a task whose worker died (application errors are not retried).
    """

    def __init__(self, address: str | None = None, cpus_per_unit: float = 1, gpus_per_unit: float | None = None,
                 max_retries: int = 3, init_options: dict | None = None):
        checks.real("cpus_per_unit", cpus_per_unit, positive=True)
        if gpus_per_unit is not None:
            checks.real("gpus_per_unit", gpus_per_unit, lo=0)
        checks.integer("max_retries", max_retries, lo=0)
        self.address, self.cpus, self.gpus = address, cpus_per_unit, gpus_per_unit
        self.max_retries, self.init_options = max_retries, init_options or {}

    def run(self, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None:
        ray = require("ray", "ray")
        if not jobs:
            return
        with quiet_ray():
            started = not ray.is_initialized()
            if started:
                ray.init(address=self.address, **{"log_to_driver": False, **self.init_options})
            try:
                self._run(ray, jobs, done)
            finally:
                if started:
                    ray.shutdown()

    def _run(self, ray: Any, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None:
        run_dir = jobs[0].run_dir
        token = write_token(run_dir)
        self.check_shared_storage(ray, run_dir, token)
        cuda = jobs[0].device is not None and jobs[0].device.startswith("cuda")
        gpus = self.gpus if self.gpus is not None else (1 if cuda else 0)
        task = ray.remote(run_unit).options(num_cpus=self.cpus, num_gpus=gpus, max_retries=self.max_retries,
                                        retry_exceptions=False)
        # Ray shows a task only its own GPUs, so "cuda:3" on the driver is "cuda" in a task.
        device = "cuda" if cuda else jobs[0].device
        level = worker_log_level()
        refs = {task.remote(replace(job, device=device, threads=max(1, int(self.cpus)), token=token, log_level=level)): job
                for job in jobs}
        log.info("ray: %d units submitted (%s CPUs, %s GPUs each); worker logs in %s/logs", len(refs), self.cpus, gpus, run_dir)
        pending, failures = list(refs), []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a failed unit; the others go on
                    failures.append((refs[ref], _reason(e)))
                else:
                    done(refs[ref])
        if failures:
            raise UnitsFailed(failures, len(jobs))

    def check_shared_storage(self, ray: Any, run_dir: str, token: str, *, driver_node: bool = False) -> None:
        """Every alive node with CPUs must read the token just written in ``run_dir``.

        The driver's own node wrote it, so only the other nodes are asked unless ``driver_node``
        (a one-machine cluster starts no probe: a probe task costs a worker process and its
        imports before any unit)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0
                 and (driver_node or n["NodeID"] != here)]
        if not nodes:
            return
        probe = ray.remote(_read_token)
        seen = ray.get([probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(run_dir) for n in nodes])
        blind = [host for host, got in seen if got != token]
        if blind:
            raise PFDistError(
                f"the run directory {run_dir} is not shared with node(s) {', '.join(sorted(set(blind)))}: on a "
                "multi-node Ray cluster --out must be shared storage mounted at the same path on every node "
                "(NFS, Lustre, ...)."
            )


def _reason(error: Exception) -> str:
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


# Warnings Ray raises about its own setup (deprecations, future defaults, accelerator variables)
# while it starts, runs tasks and shuts down: advice to Ray's developers, not to a pfdist user.
RAY_MODULES = r"(ray|pfdist\.experiments\.engines\.ray)(\..*)?$"


@contextlib.contextmanager
def quiet_ray():
    """Ray's UserWarning / FutureWarning / DeprecationWarning hidden while the engine runs."""
    with warnings.catch_warnings():
        for category in (UserWarning, FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=RAY_MODULES)
        yield
