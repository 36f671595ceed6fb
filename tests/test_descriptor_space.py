"""Experiments in descriptor space: a tiny run measured in a kernel space and in pixels, the ideal
copier reference, unit keys, and ``pfdist rescore`` reproducing the run from its cached maps."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.analysis import read_rows
from pfdist.cli import app
from pfdist.descriptors import KernelDescriptor, median_nn_distance
from pfdist.experiments import (BiasVarianceStudy, Context, Dynamics, Preset, Scaling, Student, reproduce, rescore,
                                units_of)
from pfdist.experiments.presets import MIXTURE_TEACHER
from pfdist.protocol import TEST_SEED, EvalConfig
from pfdist.training import TrainConfig

TRAIN = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=2, epoch_images=512, checkpoint_every=1)
EVAL = EvalConfig(num_samples=32, test_samples=32, loss_repeats=1, flow=pfdist.FlowSettings(steps=6), batch_size=32)
KERNEL = {"type": "kernel", "num_features": 256, "seed": 0, "fit_samples": 64}
STUDENT = Student("w8", {"arch": "mlp", "width": 8, "depth": 1, "sigma_data": 1.0})


def preset(**changes):
    p = Preset(name="tiny-kernel", teacher={**MIXTURE_TEACHER, "shape": [4]}, eval=EVAL,
               scaling=Scaling((4, 16), (STUDENT,), TRAIN),
               dynamics=Dynamics((16,), STUDENT, replace(TRAIN, lr_schedule="constant"), (0, 2)),
               bias_variance=BiasVarianceStudy((16,), (STUDENT,), TRAIN, k=2, seeds="per_student"),
               descriptors=(KERNEL, "pixels"))
    return replace(p, **changes)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    run_dir = tmp_path_factory.mktemp("kernel-run")
    reproduce(preset(), run_dir, show_progress=False)
    return run_dir


def test_tables_hold_both_spaces_side_by_side(run):
    for name in ("scaling.csv", "dynamics.csv"):
        rows = read_rows(run / name)
        assert rows and all(0 <= r["e_gen"] <= 2 for r in rows)  # kernel space: unit vectors
        assert all(r["e_gen_pixels"] > 0 and r["e_mem_pixels"] >= 0 for r in rows)
    bv = read_rows(run / "bias_variance.csv")
    assert bv[0]["seeds"] == "per_student" and {"e_var_unbiased", "e_bias_pixels", "e_var_unbiased_pixels"} <= set(bv[0])
    assert bv[0]["e_var_unbiased"] == pytest.approx(2 * bv[0]["e_var"])  # K = 2: K/(K-1)
    report = (run / "report.md").read_text()
    assert "kernel" in report and "per_student" in report


def test_kernel_is_fitted_on_teacher_samples_and_saved(run):
    teacher = pfdist.random_low_rank_mixture(**{k: v for k, v in MIXTURE_TEACHER.items() if k not in ("type", "shape")},
                                             shape=(4,))
    samples = pfdist.flow_outputs(teacher, shape=(4,), num_samples=64, seed=TEST_SEED, flow=EVAL.flow).values
    psi = KernelDescriptor.load(run / "descriptors" / "kernel.safetensors")
    assert psi.bandwidth == pytest.approx(0.5 * median_nn_distance(samples), rel=1e-6)
    assert psi.num_features == 256


def test_ideal_copier_matches_pfd_of_the_empirical_flow(run):
    ctx = Context(preset(), run)
    rows = {r["n"]: r for r in read_rows(run / "copier.csv")}
    assert sorted(rows) == [4, 16]
    for n in (4, 16):
        train = pfdist.flow_outputs(ctx.teacher, shape=(4,), num_samples=n, seed=0, flow=EVAL.flow).values
        r = pfdist.pfd(pfdist.EmpiricalDenoiser(train), ctx.teacher, shape=(4,), num_samples=EVAL.num_samples,
                       seed=EVAL.seed, steps=EVAL.flow.steps)
        assert rows[n]["e_gen_pixels"] == pytest.approx(r.value, rel=1e-4)
        assert 0 < rows[n]["e_gen"] <= 2


def test_unit_keys_include_the_descriptors(run):
    unit = units_of(preset())[0]
    assert Context(preset(), run).key(unit) != Context(preset(descriptors=("pixels",)), run / "other").key(unit)
    units = [u for u in units_of(preset()) if u.experiment == "bias_variance"]
    assert len({u.train.seed for u in units}) == 2  # per_student seeds


def test_rescore_reproduces_the_run_without_training(run, monkeypatch):
    import pfdist.protocol.student as student_module

    monkeypatch.setattr(student_module, "train", lambda *a, **k: pytest.fail("rescore trained a student"))
    for spec, suffix in (("pixels", "_pixels"), ({"type": "saved", "path": str(run / "descriptors" / "kernel.safetensors"),
                                                  "name": "kernel"}, "")):
        summary = rescore(run, spec)
        name = "pixels" if spec == "pixels" else "kernel"
        ran = {(r["n"]): r for r in read_rows(run / "scaling.csv")}
        out = Path(summary["out_dir"])
        assert out.parent == run / "rescore" and out.name.startswith(name + "-")
        again = {(r["n"]): r for r in read_rows(out / "scaling.csv")}
        assert summary["students"] == len(ran) == 2
        for n, r in again.items():
            for col in ("e_gen", "e_mem", "mem_ratio"):
                assert r[col] == pytest.approx(ran[n][col.replace("e_gen", "e_gen" + suffix).replace(
                    "e_mem", "e_mem" + suffix).replace("mem_ratio", "mem_ratio" + suffix)], rel=1e-9, abs=1e-12)
        bv_run, bv_again = read_rows(run / "bias_variance.csv")[0], read_rows(out / "bias_variance.csv")[0]
        assert bv_again["e_var"] == pytest.approx(bv_run["e_var" + suffix], rel=1e-9)


def test_rescore_command_in_a_new_kernel_space(run):
    result = CliRunner().invoke(app, ["rescore", str(run), "--descriptor",
                                      '{"type": "kernel", "num_features": 64, "name": "wide", "bandwidth_rule": "median_nn"}'])
    assert result.exit_code == 0, result.output
    (out,) = (run / "rescore").glob("wide-*")
    rows = read_rows(out / "scaling.csv")
    assert len(rows) == 2 and all(0 <= r["e_gen"] <= 2 for r in rows)
    assert (out / "descriptors" / "wide.safetensors").is_file()
    bad = CliRunner().invoke(app, ["rescore", str(run), "--descriptor", "no-such-file.pt"])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_two_kernel_specs_of_one_name_keep_their_own_results(run):
    specs = [{"type": "kernel", "num_features": 64, "bandwidth_rule": rule} for rule in ("median_nn", "median_nn/4")]
    first, second = (rescore(run, spec) for spec in specs)
    assert first["fingerprint"] != second["fingerprint"] and first["out_dir"] != second["out_dir"]
    for summary, spec in zip((first, second), specs):
        saved = json.loads((Path(summary["out_dir"]) / "summary.json").read_text())
        assert saved["descriptor"]["bandwidth_rule"] == spec["bandwidth_rule"]
        assert saved["fingerprint"] == summary["fingerprint"]
    e_gen = [[r["e_gen"] for r in read_rows(Path(s["out_dir"]) / "scaling.csv")] for s in (first, second)]
    assert e_gen[0] != e_gen[1]  # each table was measured in its own space
    assert rescore(run, specs[0])["out_dir"] == first["out_dir"]  # the same spec finds its directory again


@pytest.mark.parametrize("descriptors", [(), "pixels", ("pixels", "pixels"), ({"type": "kernel", "num_features": 3},)])
def test_preset_refuses_bad_descriptors(descriptors):
    with pytest.raises(pfdist.PFDistError):
        preset(descriptors=descriptors)


def test_preset_round_trips_with_descriptors():
    p = preset()
    again = Preset.from_dict(p.to_dict())
    assert again.key() == p.key() and again.spaces == ("kernel", "pixels")
    assert preset(descriptors=("pixels",)).key() != p.key()


def test_the_findings_of_every_scored_space_side_by_side(run):
    """Ψ is a knob: the copier's report section lists α, floors and the copier's flatness in the run's
    spaces and in each rescored kernel bandwidth, each from its own tables."""
    from pfdist.experiments import STUDIES, analyze

    rules = ("median_nn/4", "median_nn*2")
    summaries = [rescore(run, {"type": "kernel", "num_features": 64, "bandwidth_rule": r, "name": "k" + str(i)})
                 for i, r in enumerate(rules)]
    found = analyze(run)
    (table,) = [b for b in STUDIES["copier"].report(found.result("copier"), found.run) if b[0] == "table"]
    by_space = {row[0]: row for row in table[2]}
    assert {"kernel", "pixels", "k0", "k1"} <= set(by_space)  # (the module's other tests rescore too)
    for i, (rule, summary) in enumerate(zip(rules, summaries)):
        row = by_space[f"k{i}"]
        assert row[1] == f"rescore ({rule})"
        plateau = summary["copier_plateau"][f"k{i}"]
        assert f"{plateau['max_over_min']:.3f}" in row[4]  # the rescored copier, not the run's
        copier = read_rows(Path(summary["out_dir"]) / "copier.csv")
        assert plateau["max_over_min"] == pytest.approx(max(r["e_gen"] for r in copier) / min(r["e_gen"] for r in copier))
