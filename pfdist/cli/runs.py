"""``pfdist rescore`` and ``pfdist plot``: new tables and figures from a finished run, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import Command, SPEC_HELP, app, fail
from pfdist.errors import PFDistError


@app.command(cls=Command)
def rescore(
    run_dir: Path = typer.Argument(..., help="A run directory written by pfdist reproduce."),
    descriptor: str = typer.Option(..., help=SPEC_HELP),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Recompute E_gen, E_mem, copy share, the ideal copier and bias-variance of every finished
    student under another descriptor, from the run's cached maps (no retraining)."""
    from pfdist.experiments import rescore as run_rescore

    try:
        summary = run_rescore(run_dir, descriptor, device=device)
    except PFDistError as e:
        fail(str(e))
    name = summary["descriptor"]["name"]
    alpha = (summary.get("collapse_alpha") or {}).get(name)
    plateau = (summary.get("copier_plateau") or {}).get(name)
    typer.echo(f"{summary.get('students', 0)} students rescored in {name} space"
               + (f"; collapse alpha = {alpha['alpha']:.3f} (95% CI {alpha['ci95'][0]:.3f}-{alpha['ci95'][1]:.3f})"
                  if alpha else "")
               + (f"; ideal copier max/min {plateau['max_over_min']:.3f} ({plateau['verdict']})" if plateau else ""))
    for t in summary["tables"]:
        typer.echo(f"wrote {t}")


@app.command(cls=Command)
def plot(run_dir: Path = typer.Argument(..., help="A run directory written by pfdist reproduce.")) -> None:
    """Redraw every figure of a run from its results files, without running any model."""
    from pfdist.experiments import draw

    try:
        figures = draw(run_dir)
    except PFDistError as e:
        fail(str(e))
    for f in figures:
        typer.echo(f"wrote {f}")
