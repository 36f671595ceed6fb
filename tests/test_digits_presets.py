"""The digits setting: replicated dynamics and real-vs-synthetic training data, end to end at tiny size."""

import json
from dataclasses import replace

import pytest
import torch

import pfdist
from pfdist.analysis import read_rows
from pfdist.data import real_data
from pfdist.errors import PFDistError
from pfdist.experiments import Dynamics, Preset, Scaling, Student, reproduce, units_of
from pfdist.experiments import RealVsSynthetic
from pfdist.hashing import content_hash
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig, load_checkpoint

pytest.importorskip("sklearn")

TRAIN = TrainConfig(batch_size=32, lr=3e-3, lr_schedule="onecycle", epochs=1, epoch_images=64, checkpoint_every=1)
EVAL = EvalConfig(num_samples=16, test_samples=16, loss_repeats=1, flow=pfdist.FlowSettings(steps=4), batch_size=16)
TEACHER = {"type": "digits_mixture", "rank": 4}  # exact, cheap, same shape as the digits


def mlp(width):
    return Student(f"w{width}", {"arch": "mlp", "width": width, "depth": 1, "sigma_data": 0.75})


def tiny(**changes) -> Preset:
    return replace(Preset(
        name="tiny-digits", teacher=TEACHER, eval=EVAL,
        scaling=Scaling((4, 8), (mlp(8),), TRAIN),
        dynamics=Dynamics((8,), mlp(8), replace(TRAIN, lr_schedule="constant", epochs=2), (0, 1, 2), seeds=(0, 1, 2)),
        real_vs_synthetic=RealVsSynthetic((4, 8), (mlp(8),), TRAIN, "digits"),
    ), **changes)


def test_digits_machinery_end_to_end(tmp_path, one_thread):
    preset = tiny()
    assert Preset.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset
    summary = reproduce(preset, tmp_path, show_progress=False)
    dyn = read_rows(tmp_path / "dynamics.csv")
    assert sorted({r["seed"] for r in dyn}) == [0, 1, 2] and len(dyn) == 3 * 3
    real = read_rows(tmp_path / "real_vs_synthetic.csv")
    assert sorted((r["n"], r["train_data"]) for r in real) == [(4, "digits"), (4, "teacher"), (8, "digits"),
                                                               (8, "teacher")]
    # The real-data students trained on the first N of the shuffled digits, the others on teacher samples.
    from pfdist.experiments import Context

    ctx = Context(preset, tmp_path)
    for unit in units_of(preset):
        if unit.experiment == "real_vs_synthetic":
            expected = real_data("digits")[: unit.n] if unit.source == "digits" else ctx.train_data(unit)
            assert load_checkpoint(ctx.unit_dir(unit)).info["data_hash"] == content_hash(expected)
    report = (tmp_path / "report.md").read_text()
    assert "Real vs synthetic" in report and "copy share real" in report
    # synthetic students of real_vs_synthetic are the scaling students (shared units)
    assert summary["ran"] == len({ctx.key(u) for u in units_of(preset)}) < len(units_of(preset))


def test_real_data_is_a_fixed_nested_shuffle_of_the_digits():
    x = real_data("digits")
    assert x.shape == (1797, 1, 8, 8) and torch.equal(x, real_data("digits"))
    assert torch.equal(x.reshape(1797, -1).sort(0).values, pfdist.load_digits().reshape(1797, -1).sort(0).values)


def test_bad_replicates_and_real_data_are_refused(tmp_path):
    with pytest.raises(PFDistError, match="seeds"):
        Dynamics((8,), mlp(8), TRAIN, (0, 1), seeds=(1, 1))
    with pytest.raises(PFDistError, match="unknown real data"):
        RealVsSynthetic((8,), (mlp(8),), TRAIN, "cifar")
    too_many = tiny(real_vs_synthetic=RealVsSynthetic((2048,), (mlp(8),), TRAIN, "digits"), scaling=None,
                    dynamics=None)
    with pytest.raises(PFDistError, match="fewer than N"):
        reproduce(too_many, tmp_path, show_progress=False)
