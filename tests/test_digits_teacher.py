"""The shipped digits teacher and the command that retrains it."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.data import DIGITS_TEACHER
from pfdist.experiments.digits_teacher import DIGITS_TEACHER_NET, DIGITS_TEACHER_TRAIN
from pfdist.hashing import content_hash
from pfdist.nets import normalize_config
from pfdist.specs import load_spec

pytest.importorskip("sklearn")


def test_shipped_teacher_loads_with_the_config_that_made_it():
    teacher = load_spec("pfdist:digits-unet")
    record = json.loads(DIGITS_TEACHER.with_suffix(".json").read_text())
    info = record["info"]
    assert teacher.config == normalize_config(DIGITS_TEACHER_NET) == record["net_config"]
    assert info["train_config"] == DIGITS_TEACHER_TRAIN.to_dict() and info["command"] == "pfdist teacher digits"
    assert info["data_hash"] == content_hash(pfdist.load_digits())
    assert info["params"] == pfdist.count_parameters(teacher)
    # It generalizes: almost none of its samples copy a digit, while the exact empirical flow copies all.
    assert info["copy_share"]["ci95"][1] <= 0.02 and info["ideal_copier_copy_share"]["value"] >= 0.99
    x = teacher(torch.zeros(2, 1, 8, 8), 1.0)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_teacher_command_is_deterministic_given_its_seed(tmp_path, one_thread):
    runner = CliRunner()
    tiny = ["teacher", "digits", "--train", '{"epochs": 1, "epoch_images": 256}', "--num-samples", "8"]

    def run(name, *extra):
        r = runner.invoke(app, [*tiny, *extra, "-o", str(tmp_path / f"{name}.safetensors")])
        assert r.exit_code == 0, r.output
        return load_file(tmp_path / f"{name}.safetensors")

    a, b, c = run("a"), run("b"), run("c", "--seed", "1")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    info = json.loads((tmp_path / "a.json").read_text())["info"]
    assert info["ideal_copier_copy_share"]["value"] == 1.0  # the exact empirical flow lands on training digits
    assert (tmp_path / "a.png").stat().st_size > 0
    r = runner.invoke(app, ["teacher", "digits", "-o", str(tmp_path / "t.pt")])
    assert r.exit_code == 2 and ".safetensors" in r.output


def test_digits_presets_span_the_sizes_they_claim():
    from pfdist.experiments import get_preset
    from pfdist.nets import build_network

    for name, (low, top) in (("digits", (2**4, 2**12)), ("digits-full", (2**3, 2**14))):
        p = get_preset(name)
        assert p.teacher == "pfdist:digits-unet" and max(p.scaling.ns) == top and min(p.scaling.ns) == low
        params = {s.label: pfdist.count_parameters(build_network({**s.net, "shape": [1, 8, 8]}))
                  for s in p.scaling.students}
        unets = [v for k, v in params.items() if k.startswith("unet")]
        assert len(unets) >= 4 and max(unets) / min(unets) >= 30
        assert any(k.startswith("mlp") for k in params)
        assert len(p.dynamics.seeds) >= 3 and p.dynamics.train.lr_schedule == "constant"
        assert all(s.label.startswith("unet") for s in p.bias_variance.students)
        assert max(p.real_vs_synthetic.ns) <= 1797


def test_digits_preset_at_tiny_size_end_to_end(tmp_path, one_thread):
    from dataclasses import replace

    from pfdist.analysis import read_rows
    from pfdist.experiments import get_preset, reproduce
    from pfdist.protocol import EvalConfig

    p = get_preset("digits")
    train = replace(p.scaling.train, batch_size=32, epochs=1, epoch_images=64)
    small = replace(
        p, eval=EvalConfig(num_samples=16, test_samples=16, loss_repeats=1, flow=pfdist.FlowSettings(steps=4), batch_size=16),
        scaling=replace(p.scaling, ns=(4, 16), students=(p.scaling.students[0], p.scaling.students[-1]), train=train),
        dynamics=replace(p.dynamics, ns=(16,), eval_epochs=(0, 1, 2),
                         train=replace(p.dynamics.train, batch_size=32, epochs=2, epoch_images=64, warmup_images=0)),
        bias_variance=replace(p.bias_variance, ns=(16,), students=p.bias_variance.students[:1], train=train, k=2),
        real_vs_synthetic=replace(p.real_vs_synthetic, ns=(4, 16), train=train), metrics=replace(p.metrics, subsets=4))
    reproduce(small, tmp_path, show_progress=False)
    assert len(read_rows(tmp_path / "scaling.csv")) == 4 and len(read_rows(tmp_path / "bias_variance.csv")) == 1
    assert {r["seed"] for r in read_rows(tmp_path / "dynamics.csv")} == set(p.dynamics.seeds)
    assert {r["train_data"] for r in read_rows(tmp_path / "real_vs_synthetic.csv")} == {"digits", "teacher"}
    assert (tmp_path / "figures" / "samples.png").is_file() and "Real vs synthetic" in (tmp_path / "report.md").read_text()
    assert "## Findings: paper vs measured" in (tmp_path / "report.md").read_text()

    # The sample grid's tensors carry a checksum: a damaged file is detected and not drawn.
    from pfdist.atomic import CorruptFileWarning
    from pfdist.experiments import draw

    grid = tmp_path / "samples.safetensors"
    data = bytearray(grid.read_bytes())
    data[-3] ^= 0xFF
    grid.write_bytes(bytes(data))
    with pytest.warns(CorruptFileWarning, match="samples.safetensors fails its checksum"):
        figures = draw(tmp_path)
    assert figures and not any(f.name == "samples.png" for f in figures)
