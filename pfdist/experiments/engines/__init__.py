"""Execution engines: what runs the unfinished units of a preset.

- ``local``: this process, or a pool of spawned processes on this machine (the default);
- ``ray``: one Ray task per unit on a Ray cluster (``pip install 'pfdist[ray]'``);
- ``slurm``: a Slurm job array through submitit (``pip install 'pfdist[slurm]'``).

An engine has one method, ``run(jobs, done)``: run every :class:`UnitJob` and call ``done(job)``
as each finishes. The local engine raises a unit's error as it comes; the cluster engines finish
the other units first, then raise one :class:`UnitsFailed`. A unit is the same whatever engine
runs it (``Context.run(unit)``), so a run started on one engine can be finished on another.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from pfdist.errors import PFDistError
from pfdist.experiments.engines.job import UnitJob

ENGINES = ("local", "ray", "slurm")


class UnitsFailed(PFDistError):
    """Some units raised; the others finished and are kept."""

    def __init__(self, failures: Sequence[tuple[UnitJob, str]], total: int):
        lines = "; ".join(f"{job.label or f'unit {job.index}'}: {why}" for job, why in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} of {total} units failed: {lines}{more}. "
                         "Fix the cause and rerun the same command: finished units are kept.")
        self.failures = list(failures)


class Engine(Protocol):
    def run(self, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None: ...


def get_engine(name: str, **options: Any) -> Engine:
    """The engine called ``name`` with its options (see each engine's class)."""
    if name == "local":
        from pfdist.experiments.engines.local import LocalEngine as cls
    elif name == "ray":
        from pfdist.experiments.engines.ray import RayEngine as cls
    elif name == "slurm":
        from pfdist.experiments.engines.slurm import SlurmEngine as cls
    else:
        raise PFDistError(f"unknown engine {name!r}; choose one of {list(ENGINES)}.")
    return cls(**options)


def require(module: str, extra: str):
    """Import an optional engine library, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PFDistError(f"the {extra} engine needs {module}: pip install 'pfdist[{extra}]'.") from None


__all__ = ["ENGINES", "Engine", "UnitJob", "UnitsFailed", "get_engine"]
