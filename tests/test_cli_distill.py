"""``pfdist distill`` end to end: the Python API's numbers, resuming, ``pfdist distance`` on a
distilled student, and one-line refusals that write nothing."""

import json

import pytest
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.specs import load_spec
from pfdist.training import TrainConfig

runner = CliRunner()
TEACHER = {"type": "gaussian", "mean": [0.5, -0.5, 0.0, 1.0],
           "cov": [[1.0, 0.3, 0.0, 0.0], [0.3, 0.8, 0.0, 0.0], [0.0, 0.0, 0.5, 0.1], [0.0, 0.0, 0.1, 0.4]]}
NET = {"width": 16, "depth": 1}
TRAIN = {"epochs": 2, "epoch_images": 512, "batch_size": 64}
N, M = 16, 64


def _args(teacher, out, method="regression", steps="1", pairs=str(N), multistep="segments"):
    return ["distill", str(teacher), "--method", method, "--steps", steps, "--num-pairs", pairs, "-o", str(out),
            "--net", json.dumps(NET), "--train", json.dumps(TRAIN), "--seed", "3", "--num-samples", str(M),
            "--multistep", multistep]


@pytest.fixture
def teacher(tmp_path):
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps(TEACHER))
    return path


def test_distill_matches_the_api_and_resumes(tmp_path, teacher):
    out = tmp_path / "student"
    r = runner.invoke(app, _args(teacher, out))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "results.json").read_text())
    assert rec["nfe"] == 1 and f"{rec['e_gen']['pfd']:.4f}" in r.output

    teacher_map = pfdist.ode_map(load_spec(teacher))
    student = pfdist.distill(teacher_map, method="regression", steps=1, num_pairs=N, net=NET,
                             train=TrainConfig.from_dict(TRAIN), seed=3)
    e_gen = pfdist.pfd(student, teacher_map, num_samples=M, seed=100_000)
    outputs = pfdist.distill_pairs(teacher_map, N)[1]
    e_mem = pfdist.pfd(student, pfdist.EmpiricalDenoiser(outputs), num_samples=M, seed=100_000)
    assert rec["e_gen"]["pfd"] == pytest.approx(e_gen.value, rel=1e-5)
    assert rec["e_mem"]["pfd"] == pytest.approx(e_mem.value, rel=1e-5)
    assert rec["e_gen"]["ci95"][0] <= rec["e_gen"]["pfd"] <= rec["e_gen"]["ci95"][1]

    checkpoint = (out / "checkpoint.json").read_text()
    r = runner.invoke(app, _args(teacher, out))  # a finished run of the same settings trains no more
    assert r.exit_code == 0, r.output
    assert (out / "checkpoint.json").read_text() == checkpoint
    assert json.loads((out / "results.json").read_text()) == rec

    # pfdist distance reads the directory as the student's one-step map, not as a denoiser
    d = tmp_path / "d.json"
    r = runner.invoke(app, ["distance", str(out), str(teacher), "-n", str(M), "--steps", "18", "-o", str(d)])
    assert r.exit_code == 0, r.output
    assert json.loads(d.read_text())["pfd"] == pytest.approx(rec["e_gen"]["pfd"], rel=1e-5)
    r = runner.invoke(app, _args(out, tmp_path / "other"))  # a distilled student is no teacher
    assert r.exit_code == 2 and "distilled student" in r.output and not (tmp_path / "other").exists()


@pytest.mark.parametrize("change, says", [
    ({"method": "distil"}, "unknown distillation method"),
    ({"steps": "0"}, "--steps"),
    ({"steps": "19"}, "teacher's grid has 18 steps"),
    ({"pairs": "0"}, "--num-pairs"),
    ({"method": "progressive", "steps": "16"}, "progressive"),
    ({"method": "consistency", "steps": "2", "multistep": "renoise"}, "multistep must be one of"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, teacher, change, says):
    out = tmp_path / "student"
    r = runner.invoke(app, _args(teacher, out, **change))
    assert r.exit_code == 2, r.output
    assert says in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_bad_train_config_writes_nothing(tmp_path, teacher):
    out = tmp_path / "student"
    args = _args(teacher, out)
    args[args.index("--train") + 1] = '{"epoch": 2}'
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "epoch" in r.output and not out.exists()


def test_progress_counts_every_step_of_every_round(teacher):
    calls = []
    train = TrainConfig.from_dict({**TRAIN, "epochs": 1})
    pfdist.distill(load_spec(teacher), method="progressive", steps=4, num_pairs=N, net=NET, train=train,
                   progress=lambda step, total, loss: calls.append((step, total)))
    per_round = train.steps_per_epoch(N)  # 16 = 4 * 2^2: two rounds
    assert calls == [(s, 2 * per_round) for s in range(1, 2 * per_round + 1)]
