"""The ranks of a torch.distributed group as workers: under torchrun, each rank trains its share
of the units (one student at a time on its own device) and every rank waits for the others.

Not chosen by name: :func:`pfdist.experiments.run.run_preset` uses it when the process is one
rank of several. A unit runs as it does in one process (``distributed.alone``): its evaluation
seeds are not spread, since the other ranks are busy with their own units. An error in any
rank's unit is raised on every rank once all have finished their units.
"""

from __future__ import annotations

from typing import Callable, Sequence

from pfdist import distributed
from pfdist.experiments.engines.job import UnitJob


class RanksEngine:
    """Unit i goes to rank i mod world size."""

    def run(self, jobs: Sequence[UnitJob], done: Callable[[UnitJob], None]) -> None:
        rank, size = distributed.world()

        def mine() -> None:
            with distributed.alone():
                for job in jobs[rank::size]:
                    job()
                    done(job)

        distributed.together(mine)
