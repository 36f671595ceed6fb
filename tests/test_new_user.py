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
                                     ("teacher", "digits"), ("convert",), ("export",), ("plot",), ("bias-variance",),
                                     ("export-run",), ("findings",)])
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
    fit = teacher_samples(da, range(TEST_SEED, TEST_SEED + 50), shape=(2,), flow=pfdist.FlowSettings(steps=8))
    psi = KernelDescriptor.fit(fit, num_features=64, seed=0, bandwidth_factor=1.0)
    expected = pfdist.pfd(da, load_spec(b), num_samples=64, steps=8, descriptor=psi).value
    assert kernel["pfd"] == pytest.approx(expected, rel=1e-6) and kernel["pfd"] != pixels["pfd"]
    assert kernel["descriptor"]["type"] == "kernel"
    bad = runner.invoke(app, ["distance", str(a), str(b), "-n", "64", "--descriptor", '{"type": "kernel", "x": 1}'])
    assert bad.exit_code == 2 and "unknown field" in bad.output


def _slow_tiny_preset(path: Path) -> Path:
    """Ten students of a few seconds each, two local workers."""
    import json

    from pfdist.experiments import Preset, Scaling, Student
    from pfdist.experiments.presets import MIXTURE_TEACHER
    from pfdist import FlowSettings
    from pfdist.protocol import EvalConfig
    from pfdist.training import TrainConfig

    train = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=40, epoch_images=1024, checkpoint_every=1)
    students = tuple(Student(f"w{w}", {"arch": "mlp", "width": w, "depth": 1, "sigma_data": 1.0}) for w in (8, 16))
    preset = Preset(name="tiny", teacher={**MIXTURE_TEACHER, "shape": [4]},
                    eval=EvalConfig(num_samples=32, test_samples=32, loss_repeats=1, flow=FlowSettings(steps=6),
                                    batch_size=32),
                    scaling=Scaling((4, 8, 16, 32, 64), students, train), workers=2)
    path.write_text(json.dumps(preset.to_dict()))
    return path


def _live_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` still running (zombies, exited and waiting for init, do not count)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(stat.parent.name)
    return live


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the run's processes")
def test_one_ctrl_c_stops_every_worker_keeps_finished_units_and_says_how_to_resume(tmp_path):
    import signal
    import time

    preset = _slow_tiny_preset(tmp_path / "tiny.json")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pfdist", "reproduce", "--preset", str(preset), "--out", str(out)]
    # Its own process group, as a shell gives a foreground job: SIGINT to the group is one Ctrl-C.
    # A terminal's foreground job has SIGINT's default action, whatever this test process inherited
    # (an earlier test or a library may have left SIGINT ignored, and children inherit that).
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("units/*/results.json")):
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.1)
        before = {f: f.read_bytes() for f in out.glob("units/*/results.json")}
        os.killpg(p.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=20)
        stopped_s = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and stopped_s < 15, (p.returncode, stopped_s, err[-2000:])
    deadline = time.monotonic() + 5
    while _live_members(p.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _live_members(p.pid), "worker processes outlived the run"
    assert "Exception ignored" not in err and "Traceback" not in err, err[-2000:]
    assert "run the same command again to resume" in err and f"--out {out}" in err, err[-2000:]
    after = {f: f.read_bytes() for f in out.glob("units/*/results.json")}
    assert all(after.get(f) == b for f, b in before.items())  # finished units kept as they were
    assert len(after) <= len(before) + 2 < 10  # no new students started after the Ctrl-C
    assert f"{len(after)} of 10 students are finished" in err


@pytest.mark.usefixtures("one_thread")
def test_every_phase_of_a_run_has_a_progress_bar_on_stderr(tmp_path, capfd):
    from pfdist.experiments import Preset, Scaling, Student, reproduce
    from pfdist.experiments.presets import MIXTURE_TEACHER
    from pfdist import FlowSettings
    from pfdist.protocol import EvalConfig
    from pfdist.training import TrainConfig

    train = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=1, epoch_images=256)
    preset = Preset(name="bars", teacher={**MIXTURE_TEACHER, "shape": [4]},
                    eval=EvalConfig(num_samples=32, test_samples=32, loss_repeats=1, flow=FlowSettings(steps=6),
                                    batch_size=32),
                    scaling=Scaling((4, 8), (Student("w8", {"arch": "mlp", "width": 8, "depth": 1}),), train),
                    descriptors=({"type": "kernel", "num_features": 16, "fit_samples": 40}, "pixels"))
    reproduce(preset, tmp_path / "run", workers=1)
    out, err = capfd.readouterr()
    for phase in ("descriptor fit: teacher samples", "teacher maps", "teacher test samples", "training set N=8",
                  "ideal copier N=4", "ideal copier N=8", "students", "tables", "analysis"):
        assert f"{phase}:" in err, phase
    assert "teacher maps" not in out  # progress goes to stderr only
    assert "/32 " in err and "/40 " in err and "2/2 " in err  # bars count samples and students


def test_loading_a_diffusers_model_prints_no_accelerate_notice(tmp_path, capfd):
    diffusers = pytest.importorskip("diffusers")
    from pfdist.models.diffusers_load import load_diffusers

    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                                 layers_per_block=1, norm_num_groups=4)
    unet.save_pretrained(tmp_path / "m")
    diffusers.EulerDiscreteScheduler().save_pretrained(tmp_path / "m")
    capfd.readouterr()
    load_diffusers(tmp_path / "m")
    out, err = capfd.readouterr()
    assert "accelerate" not in out + err


def test_ray_engine_hides_rays_own_warnings_and_only_those():
    import warnings

    from pfdist.experiments.engines.ray import quiet_ray

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_ray():
            for module in ("ray", "ray._private.worker"):
                warnings.warn_explicit("a Ray notice", UserWarning, "worker.py", 1, module=module)
                warnings.warn_explicit("a Ray future default", FutureWarning, "worker.py", 1, module=module)
            warnings.warn_explicit("a pfdist warning", UserWarning, "x.py", 1, module="pfdist.analysis.collapse")
            warnings.warn_explicit("another library", UserWarning, "y.py", 1, module="rayleigh")
    assert sorted(str(w.message) for w in seen) == ["a pfdist warning", "another library"]


def test_package_metadata_uses_the_spdx_license_string():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # a table here is deprecated by setuptools
    requires = project["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in requires)  # the first setuptools that reads the SPDX form


@pytest.mark.skipif(not Path("/usr/bin/make").exists() and not Path("/bin/make").exists(), reason="needs make")
def test_make_says_what_it_does_before_each_environment_step(tmp_path):
    plan = subprocess.run(["make", "-n", "-B", f"{tmp_path}/v/bin/pfdist", f"VENV={tmp_path}/v"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    steps = [i for i, line in enumerate(plan) if " -m venv " in line or " install " in line]
    assert len(steps) == 4
    assert all(plan[i - 1].startswith("echo ") for i in steps), plan
