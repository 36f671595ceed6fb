"""``pfdist export-run`` and ``pfdist findings``: a finished run's data, published and re-read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import Command, app, fail
from pfdist.errors import PFDistError


@app.command(name="export-run", cls=Command)
def export_run(
    run_dir: Path = typer.Argument(..., help="A finished run directory written by pfdist reproduce."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory to write the results files into."),
) -> None:
    """Copy a finished run's CSV tables, config.json and summary.json (KBs: no checkpoints,
    caches or figures) into a directory that pfdist findings can read."""
    from pfdist.experiments.publish import export_run as export

    try:
        written = export(run_dir, out)
    except (PFDistError, OSError) as e:
        fail(str(e))
    for f in written:
        typer.echo(f"wrote {f}")


@app.command(cls=Command)
def findings(
    directory: Path = typer.Argument(..., help="A run directory, or one pfdist export-run wrote."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of rows instead of a table."),
    space: Optional[str] = typer.Option(None, help="The table of the run's pfdist rescore in this space (its name, "
                                                   "e.g. kq, or its directory's name under rescore/)."),
) -> None:
    """Recompute the paper's findings table from a run's CSV tables and config.json (no model).

    Without --space the table is the run's own; the spaces of its rescores are listed after it."""
    from pfdist.experiments.publish import rescored_names, run_findings

    try:
        rows = [f.to_dict() for f in run_findings(directory, space)]
        others = [] if space is not None else rescored_names(directory)
    except PFDistError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        typer.echo(f"{row['finding']}: {row['verdict']}")
        typer.echo(f"  paper:    {row['paper']}")
        typer.echo(f"  measured: {row['measured']}")
    if others:
        typer.echo(f"rescored in: {', '.join(others)} (pfdist findings {directory} --space NAME)")
