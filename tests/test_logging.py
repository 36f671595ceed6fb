"""Diagnostics through the "pfdist" logger: the CLI's -v / -q, pfdist warnings as one line, and a
cluster worker's log file in the run directory."""

import logging
import warnings
from pathlib import Path

import typer
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.cli.common import _OneLineErrors, _root
from pfdist.experiments.engines.job import log_to_run_dir

runner = CliRunner()
A, B = (str(Path(__file__).resolve().parents[1] / "examples" / f) for f in ("teacher.json", "other.json"))


def test_verbosity_flags_set_the_level():
    loud = runner.invoke(app, ["-v", "distance", A, B, "-n", "4", "--steps", "2"])
    assert loud.exit_code == 0 and "info: PFD of" in loud.output and "on 4 seeds (100000-100003), heun" in loud.output
    quiet = runner.invoke(app, ["-q", "distance", A, B, "-n", "4", "--steps", "2"])
    assert quiet.exit_code == 0 and quiet.output.startswith("PFD = ")
    plain = runner.invoke(app, ["distance", A, B, "-n", "4", "--steps", "2"]).output
    assert "sample/s" in plain and "info:" not in plain  # the bar, unless -q; info lines only with -v
    both = runner.invoke(app, ["-q", "-v", "distance", A, B])
    assert both.exit_code == 2 and "contradict" in both.output
    assert logging.getLogger("pfdist").level == logging.NOTSET  # the command's settings end with it


def test_pfdist_warnings_are_one_log_line_that_quiet_silences():
    demo = typer.Typer(cls=_OneLineErrors)
    demo.callback()(_root)

    @demo.command()
    def warn() -> None:
        warnings.warn("cache_dir is ignored: the model has no fingerprint", pfdist.PFDistWarning)

    @demo.command()
    def nothing() -> None:
        pass

    shown = runner.invoke(demo, ["warn"])
    assert shown.exit_code == 0 and shown.output == "warning: cache_dir is ignored: the model has no fingerprint\n"
    assert runner.invoke(demo, ["-q", "warn"]).output == ""


def test_a_worker_logs_to_its_run_directory(tmp_path):
    root = logging.getLogger("pfdist")
    level = root.level
    try:
        first = log_to_run_dir(tmp_path / "run1", logging.INFO)
        logging.getLogger("pfdist.experiments").info("unit 3: finished in 1.0 s")
        logging.getLogger("pfdist.flows").debug("below the file's level")
        second = log_to_run_dir(tmp_path / "run2", logging.INFO)  # the next run of a long-lived worker
        logging.getLogger("pfdist").warning("in the second run")
        assert first.parent == tmp_path / "run1" / "logs" and first.name.endswith(".log")
        assert "INFO pfdist.experiments: unit 3: finished in 1.0 s" in first.read_text()
        assert "below" not in first.read_text() and "second" not in first.read_text()
        assert "WARNING pfdist: in the second run" in second.read_text()
    finally:
        for handler in [h for h in root.handlers if getattr(h, "pfdist_run_log", False)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
