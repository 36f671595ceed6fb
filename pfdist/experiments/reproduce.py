"""``pfdist reproduce``: run a preset, then fit, detect, draw and report from its results files."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from pfdist import distributed
from pfdist.atomic import atomic_save_tensors, atomic_write_json
from pfdist.experiments.config import Preset
from pfdist.experiments.outcome import SAMPLES, analyze, captions, draw, report_sections, summary_results, summary_sentences
from pfdist.experiments.rows import student_outputs
from pfdist.experiments.run import run_preset
from pfdist.experiments.studies import STUDIES
from pfdist.experiments.engines.job import context
from pfdist.experiments.units import Context, units_of

GRID_SEEDS = 8


def save_sample_grid_tensors(ctx: Context) -> Path | None:
    """For image-shaped teachers: the teacher's and each scaling student's samples on the first
    evaluation seeds (smallest and largest N), saved for plotting."""
    scaling = ctx.preset.scaling
    if len(ctx.shape) != 3 or ctx.shape[0] not in (1, 3) or scaling is None:
        return None
    tensors = {"0 teacher": ctx.teacher_outputs.values[:GRID_SEEDS]}
    ends = (min(scaling.ns), max(scaling.ns))
    picked = [u for u in STUDIES["scaling"].units(scaling) if u.n in ends]
    for unit in picked:
        if ctx.is_done(unit):
            i, j = [s.label for s in scaling.students].index(unit.student.label), ends.index(unit.n)
            tensors[f"{1 + 2 * i + j} {unit.student.label} N={unit.n}"] = student_outputs(ctx, unit)[:GRID_SEEDS]
    return atomic_save_tensors(ctx.run_dir / SAMPLES, tensors, checksum=True)


def reproduce(preset: Preset, run_dir: str | os.PathLike, *, device: Any = None, show_progress: bool = True,
              **run_options: Any) -> dict[str, Any]:
    """Run ``preset`` in ``run_dir`` (resuming; ``run_options``: ``workers``, ``shard``, ``engine``,
    ``engine_options``, ``wait``, as :func:`run_preset` takes them), then write figures,
    report.md / report.html and summary.json. Under torchrun each rank trains its share of the
    students and rank 0 writes the report."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    summary = run_preset(preset, run_dir, device=device, show_progress=show_progress, **run_options)
    show = show_progress and distributed.is_main()
    if distributed.world()[1] > 1:  # under torchrun: rank 0 reports, the other ranks are done
        return distributed.together(lambda: _report(preset, run_dir, device, summary, t0, show) if distributed.is_main()
                                    else summary)
    return _report(preset, run_dir, device, summary, t0, show)


def _report(preset: Preset, run_dir: Path, device: Any, summary: dict, t0: float, show: bool) -> dict[str, Any]:
    """Figures, report.md / report.html and summary.json from the run's results files."""
    with distributed.alone():
        return _write_report(preset, run_dir, device, summary, t0, show)


def _write_report(preset: Preset, run_dir: Path, device: Any, summary: dict, t0: float, show: bool) -> dict[str, Any]:
    from pfdist.report import write_report

    with _steps(5, show) as step:
        step("sample grid")
        ctx = context(preset.to_dict(), str(run_dir), None if device is None else str(device))  # the run's own
        save_sample_grid_tensors(ctx)
        step("teacher's discretisation error")
        teacher_error = teacher_solver_error(ctx, device)
        step("fits and verdicts")
        found = analyze(run_dir)
        step("figures")
        figures = draw(run_dir, found)
        step("report")
        wall = time.perf_counter() - t0
        unit_wall = _unit_wall_total(run_dir)
        distinct = len({ctx.key(u) for u in units_of(preset)})
        counts = {"units": summary["units"], "students": distinct, "shared": summary["units"] - distinct,
                  "trained_now": summary["ran"]}
        previous = _previous_summary(run_dir)
        training_wall = previous.get("training_wall_s", 0.0) + (wall if summary["ran"] else 0.0)
        timing = {"unit_compute_s": unit_wall, "training_wall_s": training_wall}
        md, html = write_report(run_dir, config=preset.to_dict(), spaces=found.run.spaces,
                                summary=summary_sentences(found), findings=found.findings,
                                sections=report_sections(found), captions=captions(), wall_time_s=wall,
                                figures=figures, timing=timing, counts=counts, teacher_solver_error=teacher_error)
    summary.update({"teacher_solver_error": teacher_error, "wall_s": wall, "unit_wall_s_total": unit_wall,
                    "training_wall_s": training_wall, **counts,
                    "report": [str(md), str(html)], "figures": [str(f) for f in figures], **summary_results(found)})
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def teacher_solver_error(ctx: Context, device: Any) -> dict[str, Any]:
    """The teacher map's estimated discretisation error on the evaluation grid, on its first
    ERROR_SEEDS evaluation seeds (pfdist.solver_error), for the report beside the intervals."""
    from pfdist.errors import PFDistError
    from pfdist.solver_error import ERROR_SEEDS, map_solver_error

    ev = ctx.preset.eval
    flow = ev.flow
    record = {"solver": flow.solver, "steps": flow.steps, "num_seeds": min(ERROR_SEEDS, ev.num_samples)}
    try:
        value = map_solver_error(ctx.teacher, flow=flow, shape=ctx.shape, seed=ev.seed, num_samples=record["num_seeds"],
                                 device=device, batch_size=ev.batch_size)
    except PFDistError as e:  # an adaptive solver: its error is set by its tolerance
        return {**record, "solver_error": None, "reason": str(e)}
    return {**record, "solver_error": value}


@contextlib.contextmanager
def _steps(total: int, show: bool):
    """The analysis phase's bar: ``step(name)`` marks the previous step done and names the next."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="analysis", unit="step", disable=not show, dynamic_ncols=True, file=sys.stderr)
    started = []

    def step(name: str) -> None:
        if started:
            bar.update(1)
        started.append(name)
        bar.set_postfix_str(name)

    try:
        yield step
        bar.update(1)
    finally:
        bar.close()


def _previous_summary(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _unit_wall_total(run_dir: Path) -> float:
    import json

    total = 0.0
    for path in (run_dir / "units").glob("*/results.json"):
        try:
            total += json.loads(path.read_text())["wall_s"]["total"]
        except (ValueError, KeyError):
            pass
    return total
