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

from typing import Any

from pfdist.errors import PFDistError
from pfdist.experiments.engines.base import Engine, UnitsFailed
from pfdist.experiments.engines.job import UnitJob

ENGINES = ("local", "ray", "slurm")


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


__all__ = ["ENGINES", "Engine", "UnitJob", "UnitsFailed", "get_engine"]
