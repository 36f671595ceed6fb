"""What a run shows, from its results files alone: every study analysed, the findings table, the
figures, the report's sections and summary.json's results. Nothing here runs a model.

Studies are analysed in registry order; each sees the results of those before it
(:class:`pfdist.experiments.studies.RunData`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfdist import checks
from pfdist.analysis.results import read_rows
from pfdist.analysis.spaces import run_spaces
from pfdist.errors import PFDistError
from pfdist.experiments.studies import STUDIES, RunData

SAMPLES = "samples.safetensors"


@dataclass(frozen=True)
class RunAnalysis:
    """A run's tables analysed: ``run.results[name]`` per study, and the findings table."""

    run: RunData
    findings: list

    def result(self, name: str) -> Any:
        return self.run.results.get(name)


def read_run(run_dir: str | os.PathLike, spaces: tuple[str, ...] | None = None) -> RunData:
    """Every table of the registry's studies found in ``run_dir``, checked against its columns;
    ``spaces`` default to the run's config.json; the summaries of its rescored spaces."""
    run_dir = Path(run_dir)
    rows = {table: read_rows(run_dir / table, required=columns)
            for study in STUDIES.values() for table, columns in study.tables.items() if (run_dir / table).is_file()}
    return RunData(run_dir, spaces or run_spaces(run_dir), rows, {}, rescored_summaries(run_dir))


def rescored_summaries(run_dir: Path) -> list[dict[str, Any]]:
    """The summary.json of every ``pfdist rescore`` of the run (RUN_DIR/rescore/*/), by name."""
    import json

    out = []
    for path in sorted((run_dir / "rescore").glob("*/summary.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):  # one being written, or damaged: left out of the table
            continue
    return out


def analyze(run_dir: str | os.PathLike) -> RunAnalysis:
    """Fits, verdicts and the findings table of a run (or of an exported run's directory)."""
    return analyze_run(read_run(run_dir))


def analyze_run(run: RunData) -> RunAnalysis:
    """Every study's analysis of ``run``'s rows, in registry order, and the findings table."""
    for name, study in STUDIES.items():
        run.results[name] = study.analyze(run)
    findings = [f for name, study in STUDIES.items() for f in study.findings(run.results[name], run)]
    return RunAnalysis(run, findings)


def draw(run_dir: str | os.PathLike, analysis: RunAnalysis | None = None) -> list[Path]:
    """Every figure of a run (in run_dir/figures) from its results files; never runs a model."""
    from pfdist.atomic import CorruptFileError, load_tensors_checked, warn_corrupt
    from pfdist.plots import plot_sample_grid  # matplotlib: not in the processes that train

    run_dir = checks.existing_dir(run_dir, "run directory", "pass the directory an experiment wrote its results to")
    analysis = analysis if analysis is not None else analyze(run_dir)
    run, out = analysis.run, run_dir / "figures"
    if not run.rows:
        raise PFDistError(f"{run_dir} has none of {', '.join(table_names())}; pass the directory an experiment "
                          "wrote its results to")
    figures = [p for name, study in STUDIES.items() for p in study.figures(run.results[name], run, out)]
    if (run_dir / SAMPLES).is_file():
        try:
            grid, _ = load_tensors_checked(run_dir / SAMPLES)
        except CorruptFileError as e:  # rewritten by the next `pfdist reproduce` of this run
            warn_corrupt(e, "no sample grid; rerun pfdist reproduce to rewrite it")
            return figures
        import torch

        names = sorted(grid, key=lambda k: int(k.split(" ", 1)[0]))
        images = torch.cat([grid[k] for k in names]).numpy()
        figures += plot_sample_grid(images, out / "samples.png", rows_labels=[k.split(" ", 1)[1] for k in names])
    return figures


def summary_sentences(analysis: RunAnalysis) -> list[str]:
    """The studies' sentences for the report's "What this run shows"."""
    run = analysis.run
    return [line for name, study in STUDIES.items() for line in study.summary(run.results[name], run)]


def report_sections(analysis: RunAnalysis) -> list[tuple]:
    """The studies' report sections, in registry order."""
    run = analysis.run
    return [block for name, study in STUDIES.items() for block in study.report(run.results[name], run)]


def captions() -> dict[str, str]:
    """Every figure's caption, by file stem."""
    out = {"samples": "Samples of the teacher and of the students at the smallest and largest N, on the same seeds."}
    for study in STUDIES.values():
        out.update(study.captions)
    return out


def summary_results(analysis: RunAnalysis) -> dict[str, Any]:
    """What summary.json records of the analysis: each study's results and the findings table."""
    run, out = analysis.run, {}
    for name, study in STUDIES.items():
        out.update(study.summary_json(run.results[name], run))
    return {**out, "findings": [f.to_dict() for f in analysis.findings]}


def table_names() -> tuple[str, ...]:
    """Every table a run can have, in registry order."""
    return tuple(t for study in STUDIES.values() for t in study.tables)
