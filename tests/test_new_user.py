"""What a new user meets first: interrupting a run, progress, the command line's help and
descriptors, skipped tests, figures and the report's wording."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_skipped_fixture_tests_say_where_they_looked_and_how_to_point_there(monkeypatch, tmp_path):
    import edm_fixtures

    monkeypatch.setenv("PFDIST_EDM_FIXTURES", str(tmp_path / "nowhere"))
    reason = edm_fixtures.skip_reason()
    assert str(tmp_path / "nowhere") in reason and "PFDIST_EDM_FIXTURES=" in reason
    assert edm_fixtures.find() is None
    monkeypatch.delenv("PFDIST_EDM_FIXTURES")
    looked = edm_fixtures.candidates()
    assert ROOT.parent / "shared/fixtures/edm" in looked and ROOT / "shared/fixtures/edm" in looked
    assert all(str(p) in edm_fixtures.skip_reason() for p in looked)
    (tmp_path / "edm").mkdir()
    monkeypatch.setenv("PFDIST_EDM_FIXTURES", str(tmp_path / "edm"))
    assert edm_fixtures.find() == tmp_path / "edm"


def _help(*command: str) -> str:
    """A command's --help as one line of words (the table borders and wrapping removed)."""
    from typer.testing import CliRunner

    from pfdist.cli import app

    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return " ".join(r.output.replace("│", " ").split())


def test_student_help_quotes_the_training_defaults_the_command_uses(tmp_path):
    import re

    from pfdist.cli.protocol import _protocol_inputs
    from pfdist.experiments import get_preset

    text = _help("student")
    m = re.search(r"epoch is ([\d ]+) images.*batch_size (\d+), lr ([\d.e-]+), lr_schedule (\w+), epochs (\d+), "
                  r"EMA half-life ([\d ]+) images", text)
    assert m, text
    quoted = (int(m[1].replace(" ", "")), int(m[2]), float(m[3]), m[4], int(m[5]), float(m[6].replace(" ", "")))
    teacher = tmp_path / "g.json"
    teacher.write_text('{"type": "gaussian", "mean": [0.0, 0.0], "cov": [[1.0, 0.0], [0.0, 1.0]]}')
    used = _protocol_inputs(teacher, None, None, None)[3]
    quick = get_preset("quick").scaling.train
    for t in (used, quick):
        assert quoted == (t.epoch_images, t.batch_size, t.lr, t.lr_schedule, t.epochs, t.ema_halflife_images)
    assert _protocol_inputs(teacher, None, '{"epochs": 3}', None)[3].epochs == 3


@pytest.mark.parametrize("command", [(), ("student",), ("distance",), ("reproduce",), ("rescore",), ("teacher",),
                                     ("teacher", "digits"), ("convert",), ("export",), ("plot",), ("bias-variance",)])
def test_help_has_no_type_placeholders_for_flags_or_braces_around_arguments(command):
    import re

    text = _help(*command)
    assert "<bool>" not in text
    usage = text.split("Usage:", 1)[1].split("[OPTIONS]", 1)[1].split(" ")[1:4]
    assert not any(re.fullmatch(r"\{\w+\}", w) for w in usage), usage


def _gaussians(tmp_path):
    import json

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"type": "gaussian", "mean": [0.0, 0.0], "cov": [[1.0, 0.3], [0.3, 0.5]]}))
    b.write_text(json.dumps({"type": "gaussian", "mean": [0.5, 0.0], "cov": [[1.0, 0.0], [0.0, 1.0]]}))
    return a, b


@pytest.mark.usefixtures("one_thread")
def test_distance_takes_the_descriptor_names_and_specs_of_rescore_and_presets(tmp_path):
    import json

    from typer.testing import CliRunner

    import pfdist
    from pfdist.cli import app
    from pfdist.descriptors import KernelDescriptor
    from pfdist.protocol import TEST_SEED, teacher_samples
    from pfdist.specs import load_spec

    a, b = _gaussians(tmp_path)
    runner = CliRunner()

    def distance(*extra: str) -> dict:
        out = tmp_path / "r.json"
        r = runner.invoke(app, ["distance", str(a), str(b), "-n", "64", "--steps", "8", "-o", str(out), *extra])
        assert r.exit_code == 0, r.output
        return json.loads(out.read_text())

    pixels = distance("--descriptor", "pixels")
    assert pixels["pfd"] == distance()["pfd"] == pfdist.pfd(load_spec(a), load_spec(b), num_samples=64,
                                                           steps=8).value
    spec = {"type": "kernel", "num_features": 64, "fit_samples": 50, "bandwidth_rule": "median_nn"}
    kernel = distance("--descriptor", json.dumps(spec))
    # Oracle: the same kernel fitted by hand on A's samples on the test seeds.
    da = load_spec(a)
    fit = teacher_samples(da, range(TEST_SEED, TEST_SEED + 50), shape=(2,), settings=pfdist.FlowSettings(steps=8))
    psi = KernelDescriptor.fit(fit, num_features=64, seed=0, bandwidth_factor=1.0)
    expected = pfdist.pfd(da, load_spec(b), num_samples=64, steps=8, descriptor=psi).value
    assert kernel["pfd"] == pytest.approx(expected, rel=1e-6) and kernel["pfd"] != pixels["pfd"]
    assert kernel["descriptor"]["type"] == "kernel"
    bad = runner.invoke(app, ["distance", str(a), str(b), "-n", "64", "--descriptor", '{"type": "kernel", "x": 1}'])
    assert bad.exit_code == 2 and "unknown field" in bad.output
