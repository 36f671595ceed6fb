"""Running a preset: check the run directory, do the unfinished units, write the tables."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pfdist.atomic import atomic_write_json
from pfdist.errors import PFDistError
from pfdist.experiments.config import Preset
from pfdist.experiments.engines import UnitJob, get_engine
from pfdist.experiments.engines.job import remember
from pfdist.experiments.tables import write_tables
from pfdist.experiments.units import Context, Unit, units_of

CONFIG = "config.json"


def check_run_dir(preset: Preset, run_dir: Path) -> None:
    """Claim ``run_dir`` for this preset, or fail if another config made it."""
    path = run_dir / CONFIG
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise PFDistError(f"{path} is corrupt; delete {run_dir} or choose another --out.") from None
        if saved.get("key") != preset.key():
            raise PFDistError(
                f"{run_dir} holds a run of another config (preset {saved.get('preset', {}).get('name')!r}); "
                "choose another --out, or delete it to start over."
            )
        return
    atomic_write_json(path, {"key": preset.key(), "preset": preset.to_dict()})


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
) -> dict:
    """Do every unfinished unit of ``preset`` in ``run_dir`` and write its CSV tables.

    ``engine`` runs the units: ``local`` (this machine; ``workers`` > 1 runs units in that many
    spawned processes, threads split between them, and a script calling this then needs the usual
    ``if __name__ == "__main__":`` guard), ``ray`` or ``slurm``, with ``engine_options`` (see
    :mod:`pfdist.experiments.engines`).
    ``shard=(i, m)`` does only units i, i+m, i+2m, ... (for spreading one run over machines);
    the tables are written from whatever results exist. Returns timing and counts.
    """
    run_dir = Path(run_dir)
    options = dict(engine_options or {})
    if engine == "local":
        options.setdefault("workers", preset.workers if workers is None else workers)
    runner = get_engine(engine, **options)  # bad options are refused before the run directory is claimed
    check_run_dir(preset, run_dir)
    t0 = time.perf_counter()
    ctx = Context(preset, run_dir, device)
    units = units_of(preset)
    mine = [i for i in range(len(units)) if shard is None or i % shard[1] == shard[0]]
    todo = [i for i in mine if not ctx.is_done(units[i])]
    # Unique units only (experiments may share a student).
    seen, unique = set(), []
    for i in todo:
        k = ctx.key(units[i])
        if k not in seen:
            seen.add(k)
            unique.append(i)
    ctx.teacher_outputs  # computed (and cached) once before fanning out
    for i in unique:
        ctx.train_data(units[i])  # nested stream and independent sets, cached on disk
    device_name = None if device is None else str(device)
    remember(ctx, device_name)  # units run in this process reuse the teacher's maps in memory
    jobs = [UnitJob(preset.to_dict(), str(run_dir), i, _describe(units[i]), device_name) for i in unique]
    bar = _bar(len(unique), show_progress)

    def done(job: UnitJob) -> None:
        bar.set_postfix_str(job.label, refresh=False)
        bar.update(1)

    try:
        runner.run(jobs, done)
    finally:
        bar.close()
    tables = write_tables(ctx)
    wall = time.perf_counter() - t0
    return {"units": len(units), "ran": len(unique), "wall_s": wall, "tables": [str(p) for p in tables]}


def _describe(unit: Unit) -> str:
    return f"{unit.experiment} {unit.student.label} N={unit.n}" + (f" set {unit.dataset_index}" if unit.dataset_index else "")


def _bar(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="students", unit="student", disable=not show, dynamic_ncols=True, file=sys.stderr)
