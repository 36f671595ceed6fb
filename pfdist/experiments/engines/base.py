"""What every execution engine shares: the engine contract, the error for failed units, and the
import of an optional engine library. The engines import this module, never the registry."""

from __future__ import annotations

import importlib
from typing import Callable, Protocol, Sequence

from pfdist.errors import PFDistError
from pfdist.experiments.engines.job import UnitJob


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


def require(module: str, extra: str):
    """Import an optional engine library, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PFDistError(f"the {extra} engine needs {module}: pip install 'pfdist[{extra}]'.") from None
