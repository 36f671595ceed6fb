"""Running a preset: validate, lock and claim the run directory, do the unfinished units, write the tables.

The steps are separate functions; an execution engine (:mod:`pfdist.experiments.engines`:
local, ray, slurm) runs the units in the middle:

1. :func:`prepare` validates everything (engine options, teacher loads, device exists, shard)
   and writes nothing;
2. :func:`claim_run_dir` records the preset in ``config.json`` (or refuses a directory made by
   another config), under the run directory's lock;
3. :func:`units_to_run` lists the unfinished unique students of this shard;
4. the engine runs them (local workers end when this process dies);
5. :func:`check_finished` and :func:`pfdist.experiments.tables.write_tables` write the CSVs.

Locking: an unsharded run holds the run directory's lock (:class:`pfdist.lock.DirectoryLock`)
from claim to tables, so a second run on the same ``--out`` is refused, naming the holder (or
waits, with ``wait``). Sharded runs take it only to claim and to write tables, as a shared lock
(shards started at once queue for each other, without ``wait``), so shards on several machines
can share the directory; each student's directory is locked while it trains.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pfdist import checks, distributed
from pfdist.atomic import atomic_write_json
from pfdist.errors import PFDistError, RunInterrupted
from pfdist.experiments.config import Preset
from pfdist.experiments.engines import UnitJob, get_engine
from pfdist.experiments.engines.job import remember
from pfdist.experiments.engines.ranks import RanksEngine
from pfdist.experiments.tables import write_tables
from pfdist.experiments.units import Context, Unit, units_of
from pfdist.lock import DirectoryLock

CONFIG = "config.json"


def prepare(preset: Preset, run_dir: str | os.PathLike, *, device: Any = None,
            shard: tuple[int, int] | None = None) -> Context:
    """Validate a run before anything is written: the directory is usable, the teacher loads,
    the device exists, the shard is well formed, and every unit's network, training set and
    descriptor file is valid (so a failed start claims nothing and its corrected command runs)."""
    if not isinstance(preset, Preset):
        raise PFDistError(f"preset must be a Preset, got {type(preset).__name__}.")
    if shard is not None:
        if not (isinstance(shard, tuple) and len(shard) == 2):
            raise PFDistError(f"shard must be (i, m), got {shard!r}.")
        m = checks.integer("shard m", shard[1], lo=1)
        checks.integer("shard i", shard[0], lo=0, hi=m - 1)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PFDistError(f"{run_dir} exists and is not a directory; choose another --out.")
    if device is not None:
        checks.device("device", device)
    ctx = Context(preset, run_dir, device)
    ctx.check()
    return ctx


def claim_run_dir(preset: Preset, run_dir: Path) -> None:
    """Record ``preset`` in ``run_dir/config.json``, or fail if another config made the directory.

    Call it holding the directory's lock, after :func:`prepare` (a failed start claims nothing).
    """
    path = run_dir / CONFIG
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise PFDistError(f"{path} is corrupt; delete {run_dir} or choose another --out.") from None
        if not isinstance(saved, dict) or saved.get("key") != preset.key():
            name = saved.get("preset", {}).get("name") if isinstance(saved, dict) else None
            raise PFDistError(
                f"{run_dir} holds a run of another config (preset {name!r}); "
                "choose another --out, or delete it to start over."
            )
        return
    atomic_write_json(path, {"key": preset.key(), "preset": preset.to_dict()})


def check_run_dir(preset: Preset, run_dir: Path) -> None:
    """Claim ``run_dir`` under its lock (kept for callers of the earlier API)."""
    with DirectoryLock(run_dir):
        claim_run_dir(preset, Path(run_dir))


def units_to_run(ctx: Context, shard: tuple[int, int] | None = None, *, unfinished_only: bool = True) -> list[int]:
    """Indices (into ``units_of(preset)``) of the unfinished (or, with ``unfinished_only=False``,
    all) unique students of this shard.

    Experiments share students (scaling and bias-variance at dataset 0); each student is
    counted once, and shards split the unique students, so no two shards train the same one.
    """
    units = units_of(ctx.preset)
    seen: dict[str, int] = {}
    for i, unit in enumerate(units):
        seen.setdefault(ctx.key(unit), i)
    unique = list(seen.values())
    mine = unique if shard is None else unique[shard[0]::shard[1]]
    return [i for i in mine if not (unfinished_only and ctx.is_done(units[i]))]


def check_finished(ctx: Context) -> None:
    """Before writing tables from a whole run: every unit has verified results with its full
    evaluation history (a unit that lost some would silently drop rows from the tables)."""
    unfinished = [u for u in units_of(ctx.preset) if not ctx.is_done(u)]
    if unfinished:
        raise PFDistError(f"{len(unfinished)} students have no complete results after the run (first: "
                          f"{_describe(unfinished[0])} in {ctx.unit_dir(unfinished[0])}); rerun to complete them.")


def worker_count(requested: int | None, preset: Preset, todo: int) -> int:
    """Local workers: at most the CPUs here and the units to do; at least 1."""
    workers = checks.integer("workers", requested if requested is not None else preset.workers, lo=1)
    return max(1, min(workers, os.cpu_count() or 1, todo))


def run_preset(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    device: Any = None,
    shard: tuple[int, int] | None = None,
    show_progress: bool = True,
    engine: str = "local",
    engine_options: dict | None = None,
    wait: bool = False,
) -> dict:
    """Do every unfinished unit of ``preset`` in ``run_dir`` and write its CSV tables.

    ``engine`` runs the units: ``local`` (this machine; ``workers`` > 1 runs units in that many
    spawned processes, at most the CPU count and the number of units, threads split between
    them, and a script calling this then needs the usual ``if __name__ == "__main__":`` guard),
    ``ray`` or ``slurm``, with ``engine_options`` (see :mod:`pfdist.experiments.engines`).
    ``shard=(i, m)`` does only every m-th unique student (for spreading one run over machines
    sharing the directory); the tables are written from whatever results exist. Under torchrun
    (a torch.distributed group) the ranks share the teacher's maps seed-wise, then each trains
    its share of the students; rank 0 writes the tables (same as one process's). ``wait`` waits
    for another run holding the directory instead of failing. Returns timing and counts.
    Ctrl-C stops every worker and raises :class:`pfdist.errors.RunInterrupted`, saying how many
    students are finished (kept) and that the same call resumes.
    """
    try:
        return _run_preset(preset, run_dir, workers=workers, device=device, shard=shard, show_progress=show_progress,
                           engine=engine, engine_options=engine_options, wait=wait)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(interrupted_message(Path(run_dir))) from None


def interrupted_message(run_dir: Path, finished: int | None = None, total: int | None = None) -> str:
    """What a Ctrl-C leaves: finished students kept, the others resume from their checkpoints."""
    counts = "" if finished is None else f"{finished} of {total} students are finished and "
    return (f"interrupted: {counts}kept in {run_dir} (with the cached teacher maps); run the same command again to "
            "resume (an interrupted student continues from its last checkpoint).")


def _run_preset(preset: Preset, run_dir: str | os.PathLike, *, workers: int | None, device: Any,
                shard: tuple[int, int] | None, show_progress: bool, engine: str, engine_options: dict | None,
                wait: bool) -> dict:
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    options = dict(engine_options or {})
    rank, ranks = distributed.world()
    if ranks > 1 and (engine != "local" or shard is not None):
        raise PFDistError("under torchrun the ranks are the workers: use the local engine and no shard "
                          "(or start one process per machine with --engine ray/slurm or --shard).")
    if engine == "local":
        options["workers"] = checks.integer("workers", options.get("workers", preset.workers if workers is None
                                                                   else workers), lo=1)
    get_engine(engine, **options)  # bad options are refused before the run directory is claimed
    ctx = distributed.together(lambda: prepare(preset, run_dir, device=device, shard=shard))
    units = units_of(preset)
    lead = rank == 0  # in a group, rank 0 locks, claims and writes the tables

    def lock(stack: contextlib.ExitStack, held: bool, shared: bool = False) -> None:
        # In a group, a refusal reaches every rank.
        distributed.together(lambda: stack.enter_context(DirectoryLock(run_dir, wait=wait, shared=shared))
                             if held and lead else None)

    with contextlib.ExitStack() as whole:
        lock(whole, shard is None)
        with contextlib.ExitStack() as claimed:
            lock(claimed, True, shared=shard is not None)  # shards queue for each other
            distributed.together(lambda: claim_run_dir(preset, run_dir) if lead else None)
            ctx.phases = phase_bars(show_progress)
            todo = distributed.broadcast(distributed.together(lambda: units_to_run(ctx, shard)))
            # Teacher maps, training sets and copiers, computed (and cached) once before fanning out;
            # in a group, by all ranks together.
            ctx.prepare([units[i] for i in todo])
        if engine == "local":
            options["workers"] = worker_count(options["workers"], preset, len(todo))
        runner = RanksEngine() if ranks > 1 else get_engine(engine, **options)
        device_name = None if device is None else str(device)
        remember(ctx, device_name)  # units run in this process reuse the teacher's maps in memory
        jobs = [UnitJob(preset.to_dict(), str(run_dir), i, _describe(units[i]), device_name) for i in todo]
        bar = _bar(len(jobs), show_progress)
        finished = []

        def done(job: UnitJob) -> None:
            finished.append(job)
            bar.set_postfix_str(job.label, refresh=False)
            bar.update(1)

        try:
            runner.run(jobs, done)
        except KeyboardInterrupt:
            mine = len(units_to_run(ctx, shard, unfinished_only=False))
            raise RunInterrupted(interrupted_message(run_dir, mine - len(todo) + len(finished), mine)) from None
        finally:
            bar.close()
        tables = distributed.together(lambda: _tables(ctx, run_dir, shard) if lead else [])
    return {"units": len(units), "unique": len({ctx.key(u) for u in units}), "ran": len(todo),
            "wall_s": time.perf_counter() - t0, "tables": [str(p) for p in tables]}


def _tables(ctx: Context, run_dir: Path, shard: tuple[int, int] | None) -> list[Path]:
    with DirectoryLock(run_dir, wait=True, cleanup=False, shared=shard is not None), distributed.alone():
        if shard is None:
            check_finished(ctx)
        with ctx.phase("tables", 1) as progress:
            tables = write_tables(ctx)
            progress(1)
        return tables


def _describe(unit: Unit) -> str:
    return f"{unit.experiment} {unit.student.label} N={unit.n}" + (f" set {unit.dataset_index}" if unit.dataset_index else "")


def phase_bars(show: bool):
    """(description, total) -> a context manager giving ``progress(n)`` for a tqdm bar on stderr."""
    from tqdm.auto import tqdm

    @contextlib.contextmanager
    def phase(what: str, total: int):
        bar = tqdm(total=total, desc=what, unit="sample", disable=not show, dynamic_ncols=True, file=sys.stderr,
                   leave=False)
        try:
            yield bar.update
        finally:
            bar.close()

    return phase


def _bar(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="students", unit="student", disable=not show, dynamic_ncols=True, file=sys.stderr)
