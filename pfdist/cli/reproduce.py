"""``pfdist reproduce``: the three studies of a preset, on the local, Ray or Slurm engine."""

from __future__ import annotations

import inspect
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from pfdist.cli.common import RANKS_TIMEOUT_DAYS, Command, app, fail, quiet, set_options
from pfdist.errors import PFDistError, RunInterrupted
from pfdist.experiments.engines.ray import RayEngine
from pfdist.experiments.engines.slurm import SlurmEngine

ENGINE_HELP = "Where units run: local (this machine, --workers processes), ray (a Ray cluster) or slurm (a job array)."


def _defaults(engine: type) -> dict:
    """An engine's keyword defaults: the engines own them, the flags' help reads them."""
    return {name: p.default for name, p in inspect.signature(engine).parameters.items()}


RAY, SLURM = _defaults(RayEngine), _defaults(SlurmEngine)


@app.command(cls=Command)
def reproduce(
    preset: str = typer.Option("quick", help="quick (7 min on 2 idle CPU cores), full (37 min), paper (GPUs), "
                                             "digits (U-Nets on real 8x8 digits, 1 h on 2 CPU cores), digits-full, "
                                             "quick-distill (distilled few-step MLPs, 12 min), digits-distill "
                                             "(distilled few-step U-Nets, 33 min), "
                                             "or a JSON file in the form of Preset.to_dict() (missing keys take defaults)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<preset>); shared storage "
                                                                "when units run on several machines."),
    teacher: Optional[Path] = typer.Option(None, help="Teacher file or checkpoint; replaces the preset's (paper needs one)."),
    workers: Optional[int] = typer.Option(None, help="Local engine: students trained in parallel processes (default: the preset's)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    shard: Optional[str] = typer.Option(None, help="Run only shard i of m ('i/m') of the unique students, e.g. on one of m machines."),
    engine: str = typer.Option("local", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, help="Ray: cluster address ('auto': the cluster of this machine; default: a new local one)."),
    cpus_per_unit: Optional[float] = typer.Option(None, help=f"Ray/Slurm: CPUs per unit (default {RAY['cpus_per_unit']} on Ray, "
                                                             f"{SLURM['cpus_per_unit']} on Slurm)."),
    gpus_per_unit: Optional[float] = typer.Option(None, help="Ray/Slurm: GPUs per unit; Ray takes fractions (0.25) so small students share a GPU "
                                                             "(default: 1 with --device cuda, else 0)."),
    partition: Optional[str] = typer.Option(None, help="Slurm: partition."),
    time_min: Optional[int] = typer.Option(None, help="Slurm: time limit of each array task in minutes (tasks are requeued on timeout "
                                                      f"or preemption; default {SLURM['time_min']})."),
    units_per_task: Optional[int] = typer.Option(None, help="Slurm: units run one after another in each array task (group small units; "
                                                            f"default {SLURM['units_per_task']})."),
    max_parallel: Optional[int] = typer.Option(None, help="Slurm: array tasks running at once."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help='Preset changes, repeatable: key.path=value (a JSON literal or a string), '
                                                                     'e.g. eval.num_samples=500 or dynamics=null, or JSON (or a .json file), '
                                                                     'e.g. {"eval": {"num_samples": 500}}.'),
    wait: bool = typer.Option(False, "--wait", help="If another run holds the directory, wait for it instead of failing."),
) -> None:
    """Run a preset's studies (scaling, the ideal copier, dynamics, bias-variance, real vs synthetic,
    metrics, ...: docs/studies.md); write CSVs, figures, a findings table and a report.

    Rerunning resumes: finished students are kept, an interrupted one continues from its checkpoint.
    Under torchrun (``torchrun --nproc_per_node=K -m pfdist reproduce ...``) the K ranks share the
    teacher's maps seed-wise, then each trains its share of the students on its device
    (``--device cuda`` is cuda:LOCAL_RANK); rank 0 writes tables and report, as one process would.
    """
    from pfdist import distributed

    main = distributed.is_main()
    _check_flags(workers=workers, time_min=time_min, units_per_task=units_per_task, cpus_per_unit=cpus_per_unit,
                 gpus_per_unit=gpus_per_unit, device=device)
    parts = _shard(shard)
    try:
        options = _engine_options(engine, workers=workers, address=address, cpus_per_unit=cpus_per_unit,
                                  gpus_per_unit=gpus_per_unit, partition=partition, time_min=time_min,
                                  units_per_task=units_per_task, max_parallel=max_parallel)
        p = _preset(preset, teacher, overrides)
        summary = _run(p, out or Path("runs") / p.name, workers=workers, device=device, shard=parts, engine=engine,
                       engine_options=options, wait=wait, show_progress=main and not quiet())
    except PFDistError as e:
        fail(str(e) if main else None)
    except RunInterrupted as e:
        raise RunInterrupted(f"{e} The command: pfdist {shlex.join(sys.argv[1:])}") from None
    if main:
        _echo_summary(summary)


def _check_flags(*, workers, time_min, units_per_task, cpus_per_unit, gpus_per_unit, device) -> None:
    """Each flag given is checked under its own name, before anything is read or written."""
    from pfdist import checks

    for flag, value in (("--workers", workers), ("--time-min", time_min), ("--units-per-task", units_per_task)):
        if value is not None:
            checks.integer(flag, value, lo=1)
    if cpus_per_unit is not None:
        checks.real("--cpus-per-unit", cpus_per_unit, positive=True)
    if gpus_per_unit is not None:
        checks.real("--gpus-per-unit", gpus_per_unit, lo=0)
    if device is not None:
        checks.device("--device", device)


def _shard(shard: Optional[str]) -> tuple[int, int] | None:
    """``--shard i/m`` as (i, m)."""
    if not shard:
        return None
    try:
        i, m = (int(v) for v in shard.split("/"))
        if not 0 <= i < m:
            raise ValueError
    except ValueError:
        fail(f"--shard must be i/m with 0 <= i < m (got {shard!r}).")
    return i, m


def _preset(name: str, teacher: Optional[Path], overrides: Optional[List[str]]):
    """The preset by name or file, with ``--teacher`` and each ``--set`` applied in order."""
    from pfdist.experiments import load_preset
    from pfdist.experiments.presets import override

    p = load_preset(name)
    if teacher is not None:
        p = p.replace(teacher=str(teacher))
    for change in set_options(overrides):
        p = override(p, change)
    return p


def _run(p, out: Path, *, device: Optional[str], **kwargs) -> dict:
    """The run, in a torch.distributed process group when launched by torchrun."""
    from datetime import timedelta

    from pfdist import distributed
    from pfdist.experiments import reproduce as run

    with distributed.process_group(device, timeout=timedelta(days=RANKS_TIMEOUT_DAYS)) as device:
        return run(p, out, device=device, **kwargs)


def _echo_summary(summary: dict) -> None:
    typer.echo(f"{summary['units']} units = {summary['students']} distinct students ({summary['shared']} shared between "
               f"experiments); {summary['ran']} trained now; wall {summary['wall_s']:.0f} s "
               f"(compute of the run, summed over students: {summary['unit_wall_s_total']:.0f} s)")
    typer.echo(f"report: {summary['report'][0]} and {summary['report'][1]}")


def _engine_options(engine: str, *, workers, address, cpus_per_unit, gpus_per_unit, partition, time_min, units_per_task,
                    max_parallel) -> dict:
    """The CLI's engine flags as the chosen engine's options (flags not given: the engine's defaults);
    flags of another engine are refused."""
    given = {"--workers": workers, "--address": address, "--partition": partition, "--max-parallel": max_parallel,
             "--units-per-task": units_per_task, "--time-min": time_min,
             "--cpus-per-unit": cpus_per_unit, "--gpus-per-unit": gpus_per_unit}
    allowed = {"local": {"--workers"}, "ray": {"--address", "--cpus-per-unit", "--gpus-per-unit"},
               "slurm": {"--partition", "--max-parallel", "--units-per-task", "--time-min", "--cpus-per-unit",
                         "--gpus-per-unit"}}.get(engine)
    if allowed is None:
        raise PFDistError(f"unknown engine {engine!r}; choose local, ray or slurm.")
    stray = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if stray:
        raise PFDistError(f"{', '.join(stray)} do(es) not apply to --engine {engine}.")
    if engine == "slurm":
        for flag in ("--cpus-per-unit", "--gpus-per-unit"):
            v = given[flag]
            if v is not None and v != int(v):
                raise PFDistError(f"{flag} must be a whole number on Slurm (got {v}).")
            given[flag] = None if v is None else int(v)
    if engine == "local":
        return {}
    return {flag[2:].replace("-", "_"): v for flag, v in given.items() if v is not None and flag in allowed}
