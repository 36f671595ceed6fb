"""The protocol's commands end to end: student, bias-variance, and distance to a trained student."""

import json

from typer.testing import CliRunner

from pfdist.cli import app

runner = CliRunner()
TEACHER = {"type": "low_rank_mixture", "shape": [4], "num_components": 2, "rank": 2, "seed": 0}
NET = '{"width": 16, "depth": 1}'
TRAIN = '{"epochs": 2, "epoch_images": 256, "batch_size": 64}'
EVAL = '{"num_samples": 16, "test_samples": 16, "loss_repeats": 1, "steps": 6}'


def test_student_then_distance(tmp_path):
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps(TEACHER))
    out = tmp_path / "student"
    r = runner.invoke(app, ["student", str(teacher), "--n", "8", "-o", str(out), "--net", NET, "--train", TRAIN,
                            "--eval", EVAL])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "results.json").read_text())
    assert "E_GEN" in r.output and f"{rec['e_gen']['pfd']:.4f}" in r.output
    r = runner.invoke(app, ["distance", str(out), str(teacher), "-n", "16", "--steps", "6", "-o", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    assert abs(json.loads((tmp_path / "d.json").read_text())["pfd"] - rec["e_gen"]["pfd"]) < 1e-5


def test_bias_variance_command(tmp_path):
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps(TEACHER))
    r = runner.invoke(app, ["bias-variance", str(teacher), "--n", "8", "--k", "2", "-o", str(tmp_path / "bv"),
                            "--net", NET, "--train", TRAIN, "--eval", EVAL])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "bv" / "bias_variance.json").read_text())
    assert rep["k"] == 2 and abs(rep["identity_gap"]) < 1e-9 * rep["mean_e_gen_sq"]


def test_bad_json_option(tmp_path):
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps(TEACHER))
    r = runner.invoke(app, ["student", str(teacher), "--n", "8", "-o", str(tmp_path / "s"), "--train", "{epochs: 2}"])
    assert r.exit_code == 2 and "--train must be a JSON object" in r.output
    r = runner.invoke(app, ["student", str(teacher), "--n", "8", "-o", str(tmp_path / "s"), "--train", '{"epoch": 2}'])
    assert r.exit_code == 2 and "epoch" in r.output
