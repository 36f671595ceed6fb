"""The distillation study: a tiny preset end to end, resume, findings, config validation."""

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import pfdist
from pfdist.analysis import crossing, fewer_samples_finding
from pfdist.experiments import Preset, Scaling, Student, reproduce, units_of
from pfdist.experiments.presets import MIXTURE_TEACHER, PRESETS
from pfdist.experiments.studies import STUDIES
from pfdist.experiments.studies.distill import Distill, Epochs, Spread, StepsSweep
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

TRAIN = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=2, epoch_images=512, checkpoint_every=1)
CONSTANT = replace(TRAIN, lr_schedule="constant")
EVAL = EvalConfig(num_samples=32, test_samples=32, loss_repeats=1, flow=pfdist.FlowSettings(steps=6), batch_size=32)
TEACHER = {**MIXTURE_TEACHER, "shape": [4]}
KERNEL = {"type": "kernel", "num_features": 256, "seed": 0, "fit_samples": 64}


def mlp(width):
    return Student(f"w{width}", {"arch": "mlp", "width": width, "depth": 1, "sigma_data": 1.0})


def tiny(**changes):
    students = (mlp(8), mlp(16))
    distill = Distill((2, 8, 32), students, TRAIN, steps=(1, 2), sweep=StepsSweep(8, (1, 2, 3)),
                      bias_variance=Spread(8, k=2), dynamics=Epochs((8,), mlp(8), CONSTANT, (0, 1, 2)))
    preset = Preset(name="tiny-distill", teacher=TEACHER, eval=EVAL, scaling=Scaling((2, 8, 32), students, TRAIN),
                    distill=distill, descriptors=(KERNEL, "pixels"))
    return replace(preset, **changes) if changes else preset


def rows(path):
    return list(csv.DictReader(path.open()))


def test_tiny_distill_preset_end_to_end_and_resume(tmp_path, monkeypatch):
    preset = tiny()
    summary = reproduce(preset, tmp_path, show_progress=False)
    table = rows(tmp_path / "distill.csv")
    assert len(table) == 2 * 3 * 2  # students x N x steps
    assert {(r["student"], int(r["n"]), int(r["steps"])) for r in table} == {
        (s, n, k) for s in ("w8", "w16") for n in (2, 8, 32) for k in (1, 2)}
    for r in table:  # every space side by side, intervals around the estimates
        for space in ("", "_pixels"):
            assert float(r[f"e_gen{space}_ci_low"]) <= float(r[f"e_gen{space}"]) <= float(r[f"e_gen{space}_ci_high"])
        assert 0.0 <= float(r["mem_ratio_ci_low"]) <= float(r["mem_ratio"]) <= float(r["mem_ratio_ci_high"]) <= 1.0
        assert r["method"] == "regression"
    assert len(rows(tmp_path / "distill_steps.csv")) == 2 * 3
    bv = rows(tmp_path / "distill_bias_variance.csv")
    assert len(bv) == 2 and all(int(r["k"]) == 2 for r in bv)
    for r in bv:  # mean(E_gen^2) = E_bias^2 + E_var with the 1/K mean
        assert float(r["mean_e_gen_sq"]) == pytest.approx(float(r["e_bias"]) ** 2 + float(r["e_var"]), rel=1e-4)
    # The K students' Gram matrices are kept: the unbiased terms and their intervals refit from them.
    from pfdist.analysis.bias_variance import bias_variance_ci
    from pfdist.experiments.studies.bias_variance import read_grams

    grams = read_grams([{**r, "n": int(r["n"]), "g": float(r["g"])}
                        for r in rows(tmp_path / "distill_bias_variance_gram.csv")], "kernel")
    assert set(grams) == {("w8", 8), ("w16", 8)}
    for r in bv:
        ci = bias_variance_ci(grams[r["student"], 8])
        assert ci.e_var_unbiased == pytest.approx(float(r["e_var_unbiased"]), rel=1e-4, abs=1e-9)
    bv_row = next(f for f in summary["findings"] if f["finding"].startswith("distilled: at large N, bias"))
    assert "no interval" not in bv_row["measured"] and "largest minus smallest model" in bv_row["measured"]
    dyn = rows(tmp_path / "distill_dynamics.csv")
    assert [int(r["epoch"]) for r in dyn] == [0, 1, 2]
    findings = [f["finding"] for f in summary["findings"]]
    assert sum(f.startswith("distilled, 1 step: ") for f in findings) == 3
    assert sum(f.startswith("distilled, 2 steps: ") for f in findings) == 3
    assert "which generalizes from fewer samples: distilled or data-distilled" in findings
    fewer = next(f for f in summary["findings"] if f["finding"].startswith("which generalizes"))
    assert fewer["verdict"] != "not measured" and "vs data" in fewer["measured"]
    assert any(f.endswith("distill.png") for f in summary["figures"])
    assert "Distilled few-step students" in (tmp_path / "report.md").read_text()
    # The dynamics unit's last evaluation is its final student: one run, evaluated on the way.
    record = next(json.loads(p.read_text()) for p in tmp_path.glob("units/*/results.json")
                  if json.loads(p.read_text())["eval_epochs"])
    assert record["history"][-1]["e_gen"] == record["e_gen"] and record["history"][0]["distill_loss"] is None
    # A rerun does nothing: no distillation runs again.
    distill_module = sys.modules["pfdist.protocol.distill"]  # the module (pfdist.protocol.distill is the function)
    monkeypatch.setattr(distill_module, "_fit", lambda *a, **k: pytest.fail("a finished student was distilled again"))
    again = reproduce(preset, tmp_path, show_progress=False)
    assert again["ran"] == 0
    assert rows(tmp_path / "distill.csv") == table
    # Rescoring in pixels recomputes the errors from the cached maps, distilling nothing: the run's pixel columns.
    from pfdist.experiments import rescore

    out = Path(rescore(tmp_path, "pixels")["out_dir"])
    for ran, again in zip(table, rows(out / "distill.csv")):
        for col in ("e_gen", "e_mem", "mem_ratio"):
            assert float(again[col]) == pytest.approx(float(ran[col + "_pixels"]), rel=1e-6, abs=1e-9)
    assert not (out / "distill_dynamics.csv").exists() and (out / "distill_bias_variance.csv").is_file()


def test_distilling_epoch_by_epoch_is_one_uninterrupted_run(tmp_path):
    """The dynamics' premise: with a constant lr, distilling to epoch 1 then on to 2 from the checkpoint
    gives, bit for bit, the student of one run to epoch 2."""
    teacher = pfdist.ode_map(pfdist.specs.build_distribution(TEACHER), EVAL.flow)
    kw = dict(method="regression", steps=2, num_pairs=8, net={**mlp(8).net, "shape": [4]})
    whole = pfdist.distill(teacher, train=CONSTANT, out_dir=tmp_path / "whole", **kw)
    pfdist.distill(teacher, train=replace(CONSTANT, epochs=1), out_dir=tmp_path / "staged", **kw)
    staged = pfdist.distill(teacher, train=CONSTANT, out_dir=tmp_path / "staged", **kw)
    x_T = torch.randn(16, 4) * 80
    assert torch.equal(whole.fn(x_T), staged.fn(x_T))


def test_pairs_are_the_training_set_the_copier_is_built_on(tmp_path):
    """E_mem's reference: the study's training set of a unit equals the outputs of its distillation pairs."""
    from pfdist.experiments.units import Context

    preset = tiny()
    ctx = Context(preset, tmp_path)
    teacher = pfdist.ode_map(ctx.teacher, EVAL.flow)
    units = [u for u in units_of(preset) if u.experiment == "distill"]
    independent = next(u for u in units if u.dataset_index == 1)
    nested = next(u for u in units if u.n == 8 and u.dataset_index == 0)  # a prefix of the N = 32 set
    for unit in (independent, nested):
        pairs = pfdist.distill_pairs(teacher, unit.n, dataset=unit.dataset_index)[1]
        assert torch.allclose(pairs, ctx.train_data(unit), atol=1e-5)


def test_units_and_keys():
    preset = tiny()
    units = [u for u in units_of(preset) if u.experiment == "distill"]
    assert len(units) == 12 + 6 + 4 + 1
    bv = [u for u in units if u.dataset_index]
    assert sorted({u.dataset_index for u in bv}) == [1, 2] and len({u.train.seed for u in bv}) == 2


def test_unit_key_follows_method_and_steps(tmp_path):
    from pfdist.experiments.units import Context

    preset = tiny()
    ctx = Context(preset, tmp_path)
    unit = STUDIES["distill"].units(preset.distill)[0]
    keys = {ctx.key(unit), ctx.key(replace(unit, options=(("method", "regression"), ("steps", 3)))),
            ctx.key(replace(unit, options=(("method", "consistency"), ("steps", 1)))), ctx.student_key(unit)}
    assert len(keys) == 4


@pytest.mark.parametrize("change, match", [
    (dict(method="dmd"), "distill.method"),
    (dict(steps=(0, 1)), "distill.steps"),
    (dict(steps=(1, 1)), "distinct"),
    (dict(ns=(2, 2)), "distinct"),
    (dict(ns=(0, 4)), "distill.ns"),
    (dict(bias_variance=Spread(8, k=1)), "bias_variance.k"),
    (dict(steps=4), "distill.steps"),
    (dict(sweep=StepsSweep(8, (0,))), "sweep.steps"),
    (dict(dynamics=Epochs((8,), mlp(8), TRAIN, (0, 1))), "constant"),
    (dict(dynamics=Epochs((8,), mlp(8), CONSTANT, (0, 5))), "eval_epochs"),
])
def test_bad_configs_are_refused_when_built(change, match):
    base = tiny().distill
    with pytest.raises(pfdist.PFDistError, match=match):
        replace(base, **change)


@pytest.mark.parametrize("steps, match", [(7, "grid has 6 steps"), (4, "at most 3")])
def test_steps_beyond_the_teachers_grid_are_refused_before_anything_runs(tmp_path, steps, match):
    method = "progressive" if steps == 4 else "regression"
    preset = tiny(distill=Distill((2,), (mlp(8),), TRAIN, steps=(steps,), method=method))
    with pytest.raises(pfdist.PFDistError, match=match):
        reproduce(preset, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_config_round_trip_and_dict_errors():
    preset = tiny()
    assert Preset.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset
    d = preset.to_dict()
    d["distill"]["sweep"] = {"n": 8}
    with pytest.raises(pfdist.PFDistError, match="distill.sweep: missing required keys"):
        Preset.from_dict(d)
    d = preset.to_dict()
    d["distill"]["method"] = "magic"
    with pytest.raises(pfdist.PFDistError, match="distill.method must be one of"):
        Preset.from_dict(d)


def test_presets_with_the_study_round_trip_and_others_keep_their_keys(monkeypatch):
    assert "digits-distill" in PRESETS
    p = PRESETS["digits-distill"]()
    assert Preset.from_dict(json.loads(json.dumps(p.to_dict()))) == p and p.distill is not None
    for name in ("quick", "digits"):
        assert PRESETS[name]().distill is None
    import pfdist.experiments.config as config

    keys = {name: PRESETS[name]().key() for name in ("quick", "digits")}
    monkeypatch.setattr(config, "OWN", tuple(s for s in config.OWN if s != "distill"))  # as before the study
    assert keys == {name: PRESETS[name]().key() for name in ("quick", "digits")}


def _curve(label, es, se=0.01, steps=None):
    return [{"student": label, "params": 100, "n": 2 ** (i + 1), "e_gen": e, "e_gen_stderr": se, "steps": steps}
            for i, e in enumerate(es)]


def test_crossing_rule_on_known_curves():
    c = crossing(_curve("a", [1.0, 1.0, 0.5, 0.0, 0.0]), 1)  # mid 0.5 reached at log2 N = 3
    assert c.log2_n == pytest.approx(3.0) and c.interval[0] < 3.0 < c.interval[1]
    assert crossing(_curve("a", [1.0, 0.99, 1.0]), 1).log2_n is None  # no significant fall
    early = crossing(_curve("a", [1.0, 0.0, 0.0, 0.0, 0.0]), 1)
    late = crossing(_curve("a", [1.0, 1.0, 1.0, 1.0, 0.0]), None)
    assert fewer_samples_finding([early, late], True).verdict == "distilled from fewer samples"
    verdict = fewer_samples_finding([replace(late, steps=1), replace(early, steps=None)], True).verdict
    assert verdict == "data-distilled from fewer samples"
    same = crossing(_curve("a", [1.0, 1.0, 0.5, 0.0, 0.0], se=0.3), None)
    assert fewer_samples_finding([replace(same, steps=1), same], True).verdict == "not resolved"
    assert fewer_samples_finding([early], False).verdict == "not measured"
