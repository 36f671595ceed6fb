"""``pfdist reproduce``: run a preset, then fit, detect, draw and report from its results files."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pfdist import distributed
from pfdist.atomic import CorruptFileError, atomic_save_tensors, atomic_write_json, load_tensors_checked, warn_corrupt
from pfdist.experiments.config import Preset
from pfdist.experiments.run import run_preset
from pfdist.experiments.tables import student_outputs
from pfdist.experiments.units import Context, Unit

SAMPLES = "samples.safetensors"
GRID_SEEDS = 8


def save_sample_grid_tensors(ctx: Context) -> Path | None:
    """For image-shaped teachers: the teacher's and each scaling student's samples on the first
    evaluation seeds (smallest and largest N), saved for plotting."""
    preset = ctx.preset
    if len(ctx.shape) != 3 or ctx.shape[0] not in (1, 3) or preset.scaling is None:
        return None
    s = preset.scaling
    tensors = {"0 teacher": ctx.teacher_outputs.values[:GRID_SEEDS]}
    for i, st in enumerate(s.students):
        for j, n in enumerate((min(s.ns), max(s.ns))):
            unit = Unit("scaling", st, n, s.train)
            if ctx.is_done(unit):
                tensors[f"{1 + 2 * i + j} {st.label} N={n}"] = student_outputs(ctx, unit)[:GRID_SEEDS]
    return atomic_save_tensors(ctx.run_dir / SAMPLES, tensors, checksum=True)


def draw(run_dir: str | os.PathLike, *, fits: tuple | None = None) -> list[Path]:
    """Every figure from the results files in ``run_dir`` (never runs a model)."""
    from pfdist.plots import plot_run, plot_sample_grid  # matplotlib: not in the processes that train

    run_dir = Path(run_dir)
    figures = plot_run(run_dir, fits=fits)
    if (run_dir / SAMPLES).is_file():
        try:
            grid, _ = load_tensors_checked(run_dir / SAMPLES)
        except CorruptFileError as e:  # rewritten by the next `pfdist reproduce` of this run
            warn_corrupt(e, "no sample grid; rerun pfdist reproduce to rewrite it")
            return figures
        names = sorted(grid, key=lambda k: int(k.split(" ", 1)[0]))
        images = torch.cat([grid[k] for k in names]).numpy()
        figures += plot_sample_grid(images, run_dir / "figures" / "samples.png",
                                    rows_labels=[k.split(" ", 1)[1] for k in names])
    return figures


def analyze(run_dir: Path) -> dict[str, Any]:
    from pfdist.analysis.collapse import fit_scaling  # scipy: not in the processes that train
    from pfdist.analysis.dynamics import detect_run_dynamics
    from pfdist.analysis.findings import findings
    from pfdist.analysis.results import read_rows
    from pfdist.analysis.spaces import copier_plateaus, fit_spaces, run_spaces

    out: dict[str, Any] = {"collapse": None, "copy_collapse": None, "dynamics": None, "bias_variance_rows": None,
                           "real_vs_synthetic_rows": None, "spaces": run_spaces(run_dir), "space_fits": None, "plateaus": None}
    rows_of_scaling = None
    if (run_dir / "scaling.csv").is_file():
        rows = rows_of_scaling = read_rows(run_dir / "scaling.csv")
        out["collapse"], out["copy_collapse"] = fit_scaling(rows)
        spaces = out["spaces"]
        others = fit_spaces(rows, spaces) if len(spaces) > 1 else {}
        out["space_fits"] = {s: f for s, f in others.items() if s != spaces[0]}
    if (run_dir / "copier.csv").is_file():
        out["plateaus"] = copier_plateaus(read_rows(run_dir / "copier.csv"), out["spaces"])
    if (run_dir / "dynamics.csv").is_file():
        rows = read_rows(run_dir / "dynamics.csv")
        out["dynamics"] = detect_run_dynamics(rows) if rows else None
    if (run_dir / "bias_variance.csv").is_file():
        out["bias_variance_rows"] = read_rows(run_dir / "bias_variance.csv")
    if (run_dir / "real_vs_synthetic.csv").is_file():
        out["real_vs_synthetic_rows"] = read_rows(run_dir / "real_vs_synthetic.csv")
    primary = out["spaces"][0]
    out["scaling_rows"] = rows_of_scaling
    out["findings"] = findings(scaling_rows=rows_of_scaling, fits={primary: out["collapse"], **(out["space_fits"] or {})},
                               plateaus=out["plateaus"], dynamics=out["dynamics"],
                               bias_variance_rows=out["bias_variance_rows"], primary=primary)
    return out


def reproduce(
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
) -> dict[str, Any]:
    """Run ``preset`` in ``run_dir`` (resuming) on ``engine`` (local, ray or slurm, see
    :func:`run_preset`), then write figures and report.md / report.html.

    ``wait``: wait for another run holding ``run_dir`` instead of failing. Under torchrun each
    rank trains its share of the students and rank 0 writes the report."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    summary = run_preset(preset, run_dir, workers=workers, device=device, shard=shard, show_progress=show_progress,
                         engine=engine, engine_options=engine_options, wait=wait)
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
        ctx = Context(preset, run_dir, device)  # the teacher, loaded once for the report
        save_sample_grid_tensors(ctx)
        step("teacher's discretisation error")
        teacher_error = teacher_solver_error(ctx, device)
        step("fits and verdicts")
        found = analyze(run_dir)
        step("figures")
        figures = draw(run_dir, fits=(found["collapse"], found["copy_collapse"]))
        step("report")
        wall = time.perf_counter() - t0
        unit_wall = _unit_wall_total(run_dir)
        from pfdist.experiments.units import units_of

        distinct = len({ctx.key(u) for u in units_of(preset)})
        counts = {"units": summary["units"], "students": distinct, "shared": summary["units"] - distinct,
                  "trained_now": summary["ran"]}
        previous = _previous_summary(run_dir)
        training_wall = previous.get("training_wall_s", 0.0) + (wall if summary["ran"] else 0.0)
        timing = {"unit_compute_s": unit_wall, "training_wall_s": training_wall}
        md, html = write_report(run_dir, config=preset.to_dict(), collapse=found["collapse"], dynamics=found["dynamics"],
                                bias_variance_rows=found["bias_variance_rows"], wall_time_s=wall, figures=figures,
                                copy_collapse=found["copy_collapse"],
                                real_vs_synthetic_rows=found["real_vs_synthetic_rows"], spaces=found["spaces"],
                                space_fits=found["space_fits"], plateaus=found["plateaus"], timing=timing,
                                counts=counts, findings=found["findings"], scaling_rows=found["scaling_rows"],
                                teacher_solver_error=teacher_error)
    summary.update({"teacher_solver_error": teacher_error, "wall_s": wall, "unit_wall_s_total": unit_wall,
                    "training_wall_s": training_wall, **counts,
                    "report": [str(md), str(html)], "figures": [str(f) for f in figures],
                    "collapse_alpha": {s: (None if f is None else {"alpha": f.alpha, "ci95": list(f.alpha_ci)})
                                       for s, f in {found["spaces"][0]: found["collapse"],
                                                    **(found["space_fits"] or {})}.items()},
                    "findings": [f.to_dict() for f in found["findings"]],
                    "copier_plateau": {s: {"low": p.low, "high": p.high, "max_over_min": p.ratio}
                                       for s, p in (found["plateaus"] or {}).items()}})
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
