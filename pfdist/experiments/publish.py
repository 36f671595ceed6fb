"""Publishing a finished run: its small results files in a directory of their own, and the
findings table recomputed from them (no model, no checkpoint, no cache).

:func:`export_run` copies the CSV tables, config.json, summary.json (its paths made relative to
the exported directory) and any fit files; :func:`run_findings` refits and re-detects from such a
directory, or from the run itself, with the code the report uses
(:func:`pfdist.experiments.outcome.analyze`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pfdist import checks
from pfdist.analysis.findings import Finding
from pfdist.atomic import atomic_write, atomic_write_json
from pfdist.errors import PFDistError
from pfdist.experiments.outcome import table_names
from pfdist.experiments.rescore import RESCORE_DIR, load_run

FITS = ("fits.json",)
SUMMARY = "summary.json"
CONFIG = "config.json"
# summary.json keys that name files left behind (report, figures): not exported.
LEFT_BEHIND = ("report", "figures")


def finished_summary(run_dir: str | os.PathLike) -> dict:
    """The summary.json of a finished run in ``run_dir``, after checking that its config.json is
    the one its students were made under and every table it lists is there."""
    run_dir = Path(run_dir)
    load_run(run_dir)
    path = run_dir / SUMMARY
    fix = "finish it with pfdist reproduce (same preset, same directory) first"
    if not path.is_file():
        raise PFDistError(f"{run_dir} is not a finished run (no {SUMMARY}); {fix}.")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PFDistError(f"{path} is corrupt ({e}); {fix}.") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("findings"), list) \
            or not isinstance(summary.get("tables"), list):
        raise PFDistError(f"{path} has no findings or tables, so {run_dir} is not a finished run; {fix}.")
    missing = [Path(t).name for t in summary["tables"] if not (run_dir / Path(t).name).is_file()]
    if missing:
        raise PFDistError(f"{run_dir} lists {', '.join(missing)} in {SUMMARY} but has no such file; {fix}.")
    return summary


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Copy a finished run's small results files into ``out_dir`` (each written atomically); the
    files written, in order. Checkpoints, caches, units/, descriptors and figures stay behind."""
    run_dir = checks.existing_dir(run_dir, "run directory", "give the directory pfdist reproduce wrote")
    summary = finished_summary(run_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == run_dir.resolve():
        raise PFDistError(f"{out_dir} is the run directory itself; give another directory to export into.")
    if out_dir.exists() and not out_dir.is_dir():
        raise PFDistError(f"{out_dir} is a file, not a directory; give a directory to export into.")
    names = [n for n in (CONFIG, *table_names(), *FITS) if (run_dir / n).is_file()]
    stale = [n for n in (*table_names(), *FITS) if n not in names and (out_dir / n).is_file()]
    if stale:  # findings would read them as this run's
        raise PFDistError(f"{out_dir} already holds {', '.join(stale)}, which {run_dir} has not; "
                          "export into an empty directory or remove them first.")
    subs = [(sub, _rescore_tables(sub)) for sub in rescores(run_dir)]  # every check before anything is written
    written = [atomic_write(out_dir / n, lambda tmp, n=n: shutil.copyfile(run_dir / n, tmp)) for n in names]
    exported = {k: v for k, v in summary.items() if k not in LEFT_BEHIND}
    exported["tables"] = [Path(t).name for t in summary["tables"]]
    written.append(atomic_write_json(out_dir / SUMMARY, exported))
    for sub, (sub_summary, tables) in subs:  # each pfdist rescore of the run: its tables and summary, beside the run's
        out = out_dir / RESCORE_DIR / sub.name
        written += [atomic_write(out / n, lambda tmp, n=n, sub=sub: shutil.copyfile(sub / n, tmp)) for n in tables]
        written.append(atomic_write_json(out / SUMMARY, {**sub_summary, "tables": tables,
                                                         "out_dir": f"{RESCORE_DIR}/{sub.name}"}))
    return written


def rescores(directory: Path) -> list[Path]:
    """The directories of a run's (or an exported run's) ``pfdist rescore`` results, by name."""
    return sorted(p.parent for p in (directory / RESCORE_DIR).glob(f"*/{SUMMARY}"))


def _rescore_tables(sub: Path) -> tuple[dict, list[str]]:
    """(summary, table file names) of one rescore directory, checked."""
    try:
        summary = json.loads((sub / SUMMARY).read_text(encoding="utf-8"))
        tables = [Path(t).name for t in summary["tables"]]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise PFDistError(f"{sub / SUMMARY} is corrupt ({e}); rescore the run again (pfdist rescore) or remove "
                          f"{sub}.") from None
    missing = [t for t in tables if not (sub / t).is_file()]
    if missing:
        raise PFDistError(f"{sub} lists {', '.join(missing)} in {SUMMARY} but has no such file; rescore the run "
                          f"again or remove {sub}.")
    return summary, tables


def run_findings(directory: str | os.PathLike, space: str | None = None) -> list[Finding]:
    """The findings table of a finished run or of a directory :func:`export_run` wrote, recomputed
    from its CSV tables and config.json; with ``space``, that of its ``pfdist rescore`` in the space
    of that name (or of that rescore directory's name)."""
    from pfdist.experiments.outcome import analyze, analyze_run, read_run

    directory = checks.existing_dir(directory, "run directory",
                                    "give a directory pfdist reproduce or pfdist export-run wrote")
    load_run(directory)
    if space is not None:
        sub, name = _rescored(directory, space)
        _rescore_tables(sub)  # every table its summary lists is there
        return analyze_run(read_run(sub, spaces=(name,))).findings
    if not any((directory / t).is_file() for t in table_names()):
        raise PFDistError(f"{directory} has none of {', '.join(table_names())}; "
                          "give a directory pfdist reproduce or pfdist export-run wrote.")
    return analyze(directory).findings


def rescored_names(directory: Path) -> list[str]:
    """The space names of a run's rescores (:func:`rescores`), in their order."""
    names = []
    for sub in rescores(directory):
        try:
            names.append(str(json.loads((sub / SUMMARY).read_text(encoding="utf-8"))["descriptor"]["name"]))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise PFDistError(f"{sub / SUMMARY} is corrupt; rescore the run again or remove {sub}.") from None
    return names


def _rescored(directory: Path, space: str) -> tuple[Path, str]:
    """(directory, space name) of the rescore named ``space`` (a space name or a directory name)."""
    subs, names = rescores(directory), rescored_names(directory)
    hits = [(sub, name) for sub, name in zip(subs, names) if space in (name, sub.name)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        known = ", ".join(names) or "none"
        raise PFDistError(f"{directory} has no rescore in a space named {space!r} (rescored: {known}); run pfdist "
                          f"rescore {directory} --descriptor ... first, or give one of those names.")
    raise PFDistError(f"{directory} has {len(hits)} rescores named {space!r} (different descriptors); give the "
                      f"directory name instead: {', '.join(sub.name for sub, _ in hits)}.")
