"""The CLI and distribution files, end to end."""

import json

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.specs import load_spec, save_distribution

runner = CliRunner()


def test_every_command_has_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert "distance" in commands
    for name in commands:
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output


def test_distance_matches_python_api(tmp_path):
    spec_a = {"type": "low_rank_mixture", "shape": [5], "num_components": 2, "rank": 2, "seed": 0}
    spec_b = {"type": "gaussian", "mean": [0.0] * 5, "cov": torch.eye(5).tolist()}
    (tmp_path / "a.json").write_text(json.dumps(spec_a))
    (tmp_path / "b.json").write_text(json.dumps(spec_b))
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["distance", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-n", "20", "-o", str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads(out.read_text())
    expected = pfdist.pfd(load_spec(tmp_path / "a.json"), load_spec(tmp_path / "b.json"), num_samples=20)
    assert record["pfd"] == pytest.approx(expected.value, rel=1e-12)
    assert record["nfe"] == 35 and record["num_samples"] == 20
    assert record["ci95"][0] <= record["pfd"] <= record["ci95"][1]


def test_distance_bad_input_is_one_clear_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"type": "gaussian", "mean": [0.0], "cov": [[1.0]]}))
    (tmp_path / "b.json").write_text(json.dumps({"type": "gaussian", "mean": [0.0, 0.0], "cov": [[1.0, 0], [0, 1.0]]}))
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["distance", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(out)])
    assert r.exit_code == 2 and "different data shapes" in r.output
    assert not out.exists()  # nothing written half
    (tmp_path / "c.json").write_text("{not json")
    r = runner.invoke(app, ["distance", str(tmp_path / "a.json"), str(tmp_path / "c.json")])
    assert r.exit_code == 2 and "not valid JSON" in r.output


@pytest.mark.parametrize("make", [
    lambda: pfdist.random_low_rank_mixture((2, 3, 3), 3, 2, noise_std=0.1, seed=2),
    lambda: pfdist.Gaussian(torch.zeros(3), torch.diag(torch.tensor([1.0, 2.0, 0.0]))),
    lambda: pfdist.EmpiricalDenoiser(torch.randn(10, 4)),
])
def test_save_and_load_round_trip(tmp_path, make):
    dist = make()
    save_distribution(dist, tmp_path / "d.safetensors")
    loaded = load_spec(tmp_path / "d.safetensors")
    x = torch.randn(4, *dist.shape)
    torch.testing.assert_close(loaded.denoise(x, 0.5), dist.denoise(x, 0.5), atol=1e-5, rtol=1e-5)


def test_spec_errors(tmp_path):
    with pytest.raises(pfdist.PFDistError, match="type must be one of"):
        (tmp_path / "x.json").write_text(json.dumps({"type": "banana"}))
        load_spec(tmp_path / "x.json")
    with pytest.raises(pfdist.PFDistError, match="needs the field 'cov'"):
        (tmp_path / "y.json").write_text(json.dumps({"type": "gaussian", "mean": [0.0]}))
        load_spec(tmp_path / "y.json")
    (tmp_path / "z.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(pfdist.PFDistError, match="not a readable safetensors"):
        load_spec(tmp_path / "z.safetensors")


def test_distance_takes_seeds_in_edm_syntax(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"type": "low_rank_mixture", "shape": [3], "num_components": 2, "rank": 1, "seed": 0}))
    (tmp_path / "b.json").write_text(json.dumps({"type": "gaussian", "mean": [0.0] * 3, "cov": torch.eye(3).tolist()}))
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    runs = {}
    for name, args in (("n", ["-n", "6", "--seed", "40"]), ("range", ["--seeds", "40-45"]), ("list", ["--seeds", "40-42,50,43"])):
        r = runner.invoke(app, ["distance", a, b, *args, "--steps", "4", "--per-sample", "-o", str(tmp_path / f"{name}.json")])
        assert r.exit_code == 0, r.output
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert runs["range"]["per_sample"] == runs["n"]["per_sample"] and runs["range"]["seed"] == 40
    # per-seed values follow the seeds given; the seed of a seed's noise does not depend on its neighbours
    alone = pfdist.pfd(load_spec(a), load_spec(b), seeds=[50, 51], steps=4).per_sample[0].item()
    assert runs["list"]["per_sample"] == runs["n"]["per_sample"][:3] + [alone] + runs["n"]["per_sample"][3:4]
    assert runs["list"]["seed"] is None and runs["list"]["seeds"] == "40-42,50,43" and runs["list"]["num_samples"] == 5
    for args, message in ((["--seeds", "0-9", "-n", "4"], "--seeds replaces --seed"), (["--seeds", "9-0"], "runs backwards"),
                          (["--seeds", "0-4,3"], "seed 3 twice"), (["--seeds", "1,x"], "separated by commas")):
        r = runner.invoke(app, ["distance", a, b, *args])
        assert r.exit_code == 2 and message in r.output, r.output
