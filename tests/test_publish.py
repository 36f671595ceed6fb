"""``pfdist export-run`` and ``pfdist findings``: a finished run's data published, its findings
recomputed from the published files alone, and the README's quick column read from them."""

import itertools
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pfdist.cli import app
from pfdist.experiments import reproduce
from pfdist.experiments.publish import run_findings

from tests.test_experiments import tiny

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "docs" / "runs" / "quick"
RUN = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    summary = reproduce(replace(tiny(), dynamics=None), run_dir, show_progress=False)
    return run_dir, summary


def test_export_run_copies_the_results_files_and_findings_recomputes_them(finished, tmp_path):
    run_dir, summary = finished
    out = tmp_path / "published"
    r = RUN.invoke(app, ["export-run", str(run_dir), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["bias_variance.csv", "bias_variance_gram.csv", "config.json",
                                                     "copier.csv", "scaling.csv", "summary.json"]
    for name in ("scaling.csv", "copier.csv", "bias_variance.csv", "config.json"):
        assert (out / name).read_bytes() == (run_dir / name).read_bytes(), name
    exported = json.loads((out / "summary.json").read_text())
    assert exported["tables"] == ["scaling.csv", "copier.csv", "bias_variance.csv", "bias_variance_gram.csv"]
    assert "report" not in exported and "figures" not in exported
    assert exported["findings"] == summary["findings"]

    r = RUN.invoke(app, ["findings", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == summary["findings"]
    assert [f.to_dict() for f in run_findings(run_dir)] == summary["findings"]
    table = RUN.invoke(app, ["findings", str(out)])
    assert table.exit_code == 0
    for row in summary["findings"]:
        assert f"{row['finding']}: {row['verdict']}" in table.output and row["measured"] in table.output


def test_export_run_refuses_an_unfinished_run_and_writes_nothing(finished, tmp_path):
    run_dir, _ = finished
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished, ignore=shutil.ignore_patterns("units", "cache", "figures"))
    (unfinished / "summary.json").unlink()  # what a run stopped before its report leaves
    out = tmp_path / "out"
    r = RUN.invoke(app, ["export-run", str(unfinished), "-o", str(out)])
    assert r.exit_code == 2 and "not a finished run" in r.output and "Traceback" not in r.output
    assert not out.exists()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "dynamics.csv").write_text("from another run\n")  # the tiny run has no dynamics study
    r = RUN.invoke(app, ["export-run", str(run_dir), "-o", str(stale)])
    assert r.exit_code == 2 and "already holds dynamics.csv" in r.output
    assert sorted(p.name for p in stale.iterdir()) == ["dynamics.csv"]
    r = RUN.invoke(app, ["export-run", str(tmp_path / "missing"), "-o", str(out)])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = RUN.invoke(app, ["findings", str(tmp_path)])
    assert r.exit_code == 2 and "no config.json" in r.output


def test_rescores_are_exported_and_their_findings_recomputed(finished, tmp_path):
    from pfdist.experiments import rescore

    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    narrow = rescore(run_dir, {"type": "kernel", "num_features": 256, "bandwidth_rule": "median_nn/4", "name": "kq"})
    out = tmp_path / "published"
    assert RUN.invoke(app, ["export-run", str(run_dir), "-o", str(out)]).exit_code == 0
    sub = out / "rescore" / Path(narrow["out_dir"]).name
    assert sorted(p.name for p in sub.iterdir()) == sorted([*(Path(t).name for t in narrow["tables"]), "summary.json"])
    for t in narrow["tables"]:
        assert (sub / Path(t).name).read_bytes() == Path(t).read_bytes()
    for where in (run_dir, out):  # the run and its export give the rescore's own findings
        r = RUN.invoke(app, ["findings", str(where), "--space", "kq", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == narrow["findings"]
    table = RUN.invoke(app, ["findings", str(out)])
    assert table.exit_code == 0 and "rescored in: kq" in table.output
    r = RUN.invoke(app, ["findings", str(out), "--space", "wide"])
    assert r.exit_code == 2 and "no rescore in a space named 'wide' (rescored: kq)" in r.output
    (Path(narrow["out_dir"]) / "copier.csv").unlink()  # a damaged rescore: refused before anything is written
    r = RUN.invoke(app, ["findings", str(run_dir), "--space", "kq"])
    assert r.exit_code == 2 and "lists copier.csv" in r.output
    r = RUN.invoke(app, ["export-run", str(run_dir), "-o", str(tmp_path / "again")])
    assert r.exit_code == 2 and "lists copier.csv" in r.output and not (tmp_path / "again").exists()


def test_published_quick_run_findings_equal_its_summary():
    r = RUN.invoke(app, ["findings", str(QUICK), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads((QUICK / "summary.json").read_text())["findings"]


def _two_digits(text: str) -> list[str]:
    return [f"{float(x):.2f}" for x in re.findall(r"\d+\.\d+", text)]


def test_readme_quick_column_is_what_findings_prints_for_the_published_run():
    """The README's quick column quotes, to two digits, what `pfdist findings docs/runs/quick` computes."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cells = [re.split(r"(?<!\\)\|", line) for line in readme.splitlines() if line.startswith("| ")]
    rows = {c[1].strip(): c[2].strip() for c in cells if len(c) >= 5}
    quick = {key: next(v for k, v in rows.items() if k.startswith(key))
             for key in ("E_gen collapses", "E_gen falls to a floor", "bias falls")}
    measured = {f.finding: f.measured for f in run_findings(QUICK)}
    collapse = next(v for k, v in measured.items() if k.startswith("E_gen collapses"))
    alpha = re.match(r"kernel: α = ([\d.]+) \(95% CI ([\d.]+)–([\d.]+)\)", collapse)
    assert f"α = {float(alpha[1]):.2f} ({float(alpha[2]):.2f}–{float(alpha[3]):.2f})" in quick["E_gen collapses"]
    floor = next(v for k, v in measured.items() if k.startswith("E_gen falls"))
    floors = re.findall(r"k: ([\d.]+) \(95% CI", floor)
    assert len(floors) == 3 and " / ".join(_two_digits(" ".join(floors))) in quick["E_gen falls to a floor"]
    bias = next(v for k, v in measured.items() if "bias" in k)
    n_max, values = re.search(r"N = (\d+): bias ([\d.]+(?: → [\d.]+)+)", bias).groups()
    assert f"{' → '.join(_two_digits(values))} (N = {n_max})" in quick["bias falls"]


@pytest.mark.parametrize("name", ["digits-distill", "quick-distill-consistency", "digits-long-training"])
def test_published_runs_findings_equal_their_summaries(name):
    published = ROOT / "docs" / "runs" / name
    assert [f.to_dict() for f in run_findings(published)] == json.loads((published / "summary.json").read_text())["findings"]


DIGITS = ROOT / "docs" / "runs" / "digits"


def _printed_numbers(directory: Path) -> set[str]:
    """Every decimal number `pfdist findings DIR` prints, for the run and each of its rescores."""
    from pfdist.experiments.publish import rescored_names

    tables = [run_findings(directory)] + [run_findings(directory, name) for name in rescored_names(directory)]
    text = " ".join(f"{f.paper} {f.measured} {f.verdict}" for table in tables for f in table)
    return set(re.findall(r"\d+\.\d+", text))


def _quoted(number: str, printed: set[str]) -> bool:
    """``number`` (as written in the docs) is one of ``printed`` rounded to the docs' digits."""
    places = len(number.split(".")[1])
    return any(f"{float(p):.{places}f}" == number for p in printed if len(p.split(".")[1]) >= places)


def _findings_section(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8").split("<!-- findings:begin -->")[1].split(
        "<!-- findings:end -->")[0]


def _not_printed(text: str, printed: set[str]) -> list[str]:
    quoted = re.findall(r"(?<![\d.^])\d+\.\d+", text)
    assert len(quoted) >= 20  # the section is a findings table, not a sentence
    return sorted({q for q in quoted if not _quoted(q, printed)})


def test_distillation_doc_quotes_only_what_findings_prints_for_digits_distill():
    published = ROOT / "docs" / "runs" / "digits-distill"
    assert not _not_printed(_findings_section("docs/distillation.md"), _printed_numbers(published))


def test_readme_bandwidth_table_quotes_only_what_findings_prints_for_quick():
    """The README's "Ψ is a knob" table: the quick run's own findings and those of its rescores."""
    assert not _not_printed(_findings_section("README.md"), _printed_numbers(QUICK))


def _readme_column(name: str) -> str:
    """The cells of one column of the README's "What the CPU presets show" table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    header = next(line for line in readme.splitlines() if line.startswith("| finding (paper) | quick"))
    column = [c.strip() for c in header.split("|")].index(name)
    rows = list(itertools.takewhile(lambda line: line.startswith("| "), readme.split(header)[1].splitlines()[2:]))
    assert len(rows) == 9
    return " ".join(re.split(r"(?<!\\)\|", line)[column] for line in rows)


def test_digits_doc_quotes_only_what_findings_prints_for_the_published_run():
    """docs/digits.md's findings section and the README's digits column quote only numbers that
    `pfdist findings docs/runs/digits` (with --space for each rescore) prints."""
    printed = _printed_numbers(DIGITS)
    assert not _not_printed(_findings_section("docs/digits.md"), printed)
    assert not _not_printed(_readme_column("digits (real 8×8 digits, U-Nets)"), printed)


def test_readme_quick_column_quotes_only_what_findings_prints():
    assert not _not_printed(_readme_column("quick (16-d teacher, MLPs)"), _printed_numbers(QUICK))


def test_published_digits_run_findings_equal_its_summary():
    assert [f.to_dict() for f in run_findings(DIGITS)] == json.loads((DIGITS / "summary.json").read_text())["findings"]
