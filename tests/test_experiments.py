"""Tiny end-to-end runs of every experiment, resume, and run-directory checks."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.experiments import BiasVarianceStudy, Dynamics, Preset, Scaling, Student, get_preset, reproduce, units_of
from pfdist.experiments.presets import MIXTURE_TEACHER, PRESETS
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

TRAIN = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=2, epoch_images=512, checkpoint_every=1)
EVAL = EvalConfig(num_samples=32, test_samples=32, loss_repeats=1, flow=pfdist.FlowSettings(steps=6), batch_size=32)


def mlp(width):
    return Student(f"w{width}", {"arch": "mlp", "width": width, "depth": 1, "sigma_data": 1.0})


def tiny(teacher=None, **changes):
    preset = Preset(
        name="tiny",
        teacher=teacher or {**MIXTURE_TEACHER, "shape": [4]},
        eval=EVAL,
        scaling=Scaling((2, 8, 32), (mlp(8), mlp(16)), TRAIN),
        dynamics=Dynamics((4, 32), mlp(8), replace(TRAIN, lr_schedule="constant", epochs=3), (0, 1, 3)),
        bias_variance=BiasVarianceStudy((8,), (mlp(8), mlp(16)), TRAIN, k=2),
    )
    return replace(preset, **changes)


def test_tiny_reproduce_end_to_end(tmp_path):
    summary = reproduce(tiny(), tmp_path, show_progress=False)
    for name in ("scaling.csv", "dynamics.csv", "bias_variance.csv", "report.md", "report.html", "config.json"):
        assert (tmp_path / name).is_file(), name
    scaling = (tmp_path / "scaling.csv").read_text().splitlines()
    assert len(scaling) == 1 + 3 * 2
    dynamics = (tmp_path / "dynamics.csv").read_text().splitlines()
    assert len(dynamics) == 1 + 2 * 3
    assert {p.split("/")[-1] for p in summary["figures"]} >= {"scaling.png", "dynamics.png", "bias_variance.png"}
    bv = (tmp_path / "bias_variance.csv").read_text().splitlines()
    assert len(bv) == 1 + 2
    report = (tmp_path / "report.md").read_text()
    assert "wall time" in report.lower()
    # scaling and bias-variance share the dataset-0 students
    assert summary["ran"] < len(units_of(tiny()))


def test_rerun_recomputes_nothing_finished(tmp_path, monkeypatch):
    preset = tiny()
    reproduce(preset, tmp_path, show_progress=False)
    import pfdist.protocol.student as student_module

    monkeypatch.setattr(student_module, "train", lambda *a, **k: pytest.fail("a finished student was retrained"))
    summary = reproduce(preset, tmp_path, show_progress=False)
    assert summary["ran"] == 0


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    preset = tiny(dynamics=None, bias_variance=None)
    import pfdist.protocol.student as student_module

    real_train, calls, interrupt = student_module.train, [], [True]

    def flaky(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 3 and interrupt and interrupt.pop():
            raise KeyboardInterrupt  # Ctrl-C during the third student
        return real_train(*args, **kwargs)

    monkeypatch.setattr(student_module, "train", flaky)
    with pytest.raises(KeyboardInterrupt):
        reproduce(preset, tmp_path, show_progress=False)
    finished = {p.parent for p in tmp_path.glob("units/*/results.json")}
    assert len(finished) == 2
    calls.clear()
    reproduce(preset, tmp_path, show_progress=False)
    assert len(calls) == 6 - 2 and not finished & set(calls)


def test_run_dir_of_another_config_is_refused(tmp_path):
    reproduce(tiny(dynamics=None, bias_variance=None), tmp_path, show_progress=False)
    other = tiny(dynamics=None, bias_variance=None, eval=replace(EVAL, num_samples=40))
    with pytest.raises(pfdist.PFDistError, match="another config"):
        reproduce(other, tmp_path, show_progress=False)


def test_sharded_runs_add_up(tmp_path):
    preset = tiny(dynamics=None, bias_variance=None)
    a = reproduce(preset, tmp_path, shard=(0, 2), show_progress=False)
    b = reproduce(preset, tmp_path, shard=(1, 2), show_progress=False)
    assert a["ran"] + b["ran"] == 6
    assert len((tmp_path / "scaling.csv").read_text().splitlines()) == 7


def test_paper_preset_at_tiny_size_with_a_teacher_checkpoint(tmp_path):
    teacher_net = pfdist.nets.build_network(
        {"arch": "songunet", "shape": [3, 8, 8], "model_channels": 8, "channel_mult": [1], "num_blocks": 1,
         "attn_resolutions": [], "sigma_data": 0.5}, seed=0)
    path = tmp_path / "teacher.safetensors"
    pfdist.training.save_denoiser(path, teacher_net)
    paper = get_preset("paper", teacher=str(path))
    assert paper.eval.num_samples == 10_000 and paper.eval.flow.steps == 18
    assert [2**6, 2**16] == [min(paper.scaling.ns), max(paper.scaling.ns)]
    small = replace(
        paper,
        eval=EVAL,
        scaling=replace(paper.scaling, ns=(2, 8), students=(Student("u8", {**paper.scaling.students[0].net,
                        "model_channels": 8, "channel_mult": [1], "num_blocks": 1, "attn_resolutions": []}),),
                        train=replace(TRAIN, epochs=1, epoch_images=64)),
        dynamics=None, bias_variance=None,
    )
    summary = reproduce(small, tmp_path / "run", show_progress=False)
    assert any(f.endswith("samples.png") for f in summary["figures"])


def test_presets_are_well_formed():
    for name in PRESETS:
        p = get_preset(name)
        assert Preset.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    quick = get_preset("quick")
    assert len(quick.scaling.students) >= 3 and quick.bias_variance.k >= 3  # K = 3: the unbiased estimates need K >= 2


def test_cli_unknown_preset_and_plot_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["reproduce", "--preset", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown preset" in r.output
    r = runner.invoke(app, ["plot", str(tmp_path)])
    assert r.exit_code == 2 and "none of" in r.output


def test_error_estimate_adds_solver_error_columns_beside_the_intervals(tmp_path):
    preset = tiny(dynamics=None, bias_variance=None, eval=replace(EVAL, error_estimate=True),
                  scaling=Scaling((2, 8), (mlp(8),), TRAIN))
    reproduce(preset, tmp_path, show_progress=False)
    import csv

    rows = list(csv.DictReader((tmp_path / "scaling.csv").open()))
    assert len(rows) == 2 and all(float(r["e_gen_solver_error"]) > 0 and float(r["e_mem_solver_error"]) > 0 for r in rows)
    header = (tmp_path / "scaling.csv").read_text().splitlines()[0].split(",")
    assert header.index("e_gen_solver_error") > header.index("e_gen_ci_high")
    report = (tmp_path / "report.md").read_text()
    assert "Discretisation error" in report and "E_gen solver error" in report
    reproduce(tiny(dynamics=None, bias_variance=None, scaling=Scaling((2,), (mlp(8),), TRAIN)), tmp_path / "off",
              show_progress=False)
    assert "solver_error" not in (tmp_path / "off" / "scaling.csv").read_text()
    off = (tmp_path / "off" / "report.md").read_text()
    assert "E_gen solver error" not in off and "The teacher's map on the evaluation grid" in off


def test_every_report_gives_the_teacher_maps_discretisation_error(tmp_path):
    """Without per-student estimates, the report and summary still carry the teacher map's
    solver error: the same number as estimating that map alone on the same seeds."""
    from pfdist.solver_error import map_solver_error

    preset = tiny(dynamics=None, bias_variance=None, scaling=Scaling((2,), (mlp(8),), TRAIN))
    summary = reproduce(preset, tmp_path, show_progress=False)
    record = summary["teacher_solver_error"]
    from pfdist.experiments.units import Context

    teacher = Context(preset, tmp_path, None).teacher
    alone = map_solver_error(teacher, flow=EVAL.flow, shape=(4,), seed=EVAL.seed, num_samples=EVAL.num_samples)
    assert record["solver_error"] == pytest.approx(alone, rel=1e-12) and alone > 0
    assert (record["solver"], record["steps"], record["num_seeds"]) == ("heun", 6, 32)
    assert "The teacher's map on the evaluation grid (heun, 6 steps)" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["teacher_solver_error"] == record
