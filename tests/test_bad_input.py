"""Bad input gives one clear PFDistError (one line from the CLI), never a traceback or a silently
reinterpreted value. Each case is one found by an attack run."""

import errno
import json
import math
import os

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.specs import build_distribution, load_spec, save_distribution

runner = CliRunner()
GOOD_LRM = {"type": "low_rank_mixture", "shape": [4], "num_components": 2, "rank": 2, "seed": 0}
GOOD_GMM = {"type": "gaussian_mixture", "weights": [1, 1], "means": [[0, 0], [3, 3]], "factors": [[[1], [0]], [[0], [1]]],
            "noise_std": 0.1}


@pytest.mark.parametrize("spec, match", [
    ({**GOOD_GMM, "means": [[0, 0], [3]]}, "rectangular"),                      # ragged means
    ({**GOOD_GMM, "means": [["a", 0], [3, 3]]}, "nested list of numbers"),      # string means
    ({**GOOD_GMM, "factors": [[[float("nan")], [0]], [[0], [1]]]}, "NaN"),       # NaN factors
    ({**GOOD_GMM, "noise_std": "0.1"}, "noise_std must be a finite number"),     # string noise_std
    ({**GOOD_GMM, "noise_std": -0.1}, "noise_std must be >= 0"),                 # sign was dropped
    ({**GOOD_LRM, "noise_std": -0.2}, "noise_std must be >= 0"),
    ({**GOOD_LRM, "scale": float("nan")}, "scale must be a finite number"),
    ({**GOOD_LRM, "num_components": "4"}, "num_components must be an integer"),
    ({**GOOD_LRM, "num_components": 4.7}, "num_components must be an integer"),  # was truncated to 4
    ({**GOOD_LRM, "shape": [0]}, r"shape\[0\] must be an integer >= 1"),        # gave PFD 0
    ({**GOOD_LRM, "shape": [-1]}, r"shape\[0\] must be an integer >= 1"),
    ({**GOOD_LRM, "shape": [100_000_000]}, "values per sample"),                  # huge allocation
    ({**GOOD_LRM, "shape": [8192, 4096]}, "values per sample"),
    ({**GOOD_LRM, "seed": 2**64}, "seed must be an integer in"),
    ({**GOOD_LRM, "noise_sd": 0.1}, "unknown fields"),                           # a typo is not ignored
    ({"type": "gaussian_mixture", "weights": [1], "means": [[0.0]]}, "exactly one of 'covs'"),
    ({"type": "gaussian", "mean": [0.0, 1.0], "cov": [[1.0, 0.0], [0.0, float("inf")]]}, "NaN or Inf"),
    ({"type": "empirical", "data": [[0.0], [1.0, 2.0]]}, "rectangular"),
])
def test_malformed_specs_are_refused(spec, match):
    with pytest.raises(pfdist.PFDistError, match=match):
        build_distribution(spec)


def test_api_constructors_refuse_what_specs_refuse():
    with pytest.raises(pfdist.PFDistError, match="noise_std must be >= 0"):
        pfdist.GaussianMixture([1.0], torch.zeros(1, 2), factors=torch.ones(1, 2, 1), noise_std=-0.5)
    with pytest.raises(pfdist.PFDistError, match="num_components must be an integer"):
        pfdist.random_low_rank_mixture(4, 4.7, 2)
    with pytest.raises(pfdist.PFDistError, match="shape"):
        pfdist.random_low_rank_mixture((0,), 2, 1)
    with pytest.raises(pfdist.PFDistError, match="NaN or Inf"):
        pfdist.Gaussian(torch.tensor([0.0, float("nan")]), torch.eye(2))
    # A valid mixture still matches its spec twin exactly.
    a = build_distribution(GOOD_LRM)
    b = pfdist.random_low_rank_mixture([4], 2, 2, seed=0)
    assert a.fingerprint() == b.fingerprint()


def test_file_references_stay_inside_the_spec_directory(tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_distribution(pfdist.EmpiricalDenoiser(torch.randn(3, 2)), outside)
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    for ref in (str(outside), "../outside.safetensors"):
        (spec_dir / "e.json").write_text(json.dumps({"type": "empirical", "data": ref}))
        with pytest.raises(pfdist.PFDistError, match="inside"):
            load_spec(spec_dir / "e.json")


def test_safetensors_mixture_without_factors(tmp_path):
    from pfdist.atomic import atomic_save_tensors

    atomic_save_tensors(tmp_path / "m.safetensors", {"weights": torch.ones(2), "means": torch.zeros(2, 3)},
                        metadata={"pfdist_type": "gaussian_mixture"})
    with pytest.raises(pfdist.PFDistError, match="exactly one of 'covs'"):
        load_spec(tmp_path / "m.safetensors")


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture
def specs(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(GOOD_LRM))
    b.write_text(json.dumps({**GOOD_LRM, "seed": 1}))
    return a, b


def one_line_error(result, match):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], result.output


@pytest.mark.parametrize("args, match", [
    (["--seed", str(2**64)], "--seed must be an integer"),
    (["--seed", "-1"], "--seed must be an integer"),
    (["--device", "meta"], "cannot run models"),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], "cuda"),
    (["--device", "banana"], "not a torch device"),
    pytest.param(["--device", "mps"], "MPS is not available", marks=pytest.mark.skipif(
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available(), reason="this machine has MPS")),
    (["--steps", "100000000"], "--steps must be an integer"),
    (["--steps", "0"], "--steps must be an integer"),
    (["--batch-size", "0"], "--batch-size must be an integer"),
    (["--num-samples", "0"], "--num-samples must be an integer"),
])
def test_distance_options_are_checked(specs, args, match):
    a, b = specs
    one_line_error(runner.invoke(app, ["distance", str(a), str(b), "-n", "4", *args]), match)


def test_distance_out_is_checked_before_computing(specs, tmp_path, monkeypatch):
    import pfdist.metric

    monkeypatch.setattr(pfdist.metric, "pfd", lambda *a, **k: pytest.fail("computed before checking --out"))
    a, b = specs
    one_line_error(runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "-o", str(tmp_path)]), "is a directory")
    one_line_error(runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "-o", str(a / "r.json")]), "is a file")


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_failures_are_one_line_with_the_path(specs, tmp_path, monkeypatch, fault):
    def broken_fsync(fd):  # as a full disk or a read-only file system reports it: no file name
        raise OSError(fault, os.strerror(fault))

    monkeypatch.setattr(os, "fsync", broken_fsync)
    a, b = specs
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "-o", str(out)])
    assert r.exit_code == 2 and f"error: {out}: {os.strerror(fault)}" in r.output, r.output
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))  # nothing half-written, no temporaries


def test_student_options_are_checked_before_training(specs, tmp_path, monkeypatch):
    import pfdist.protocol.student as student_module

    monkeypatch.setattr(student_module, "train", lambda *a, **k: pytest.fail("trained before validating"))
    a, _ = specs
    base = ["student", str(a), "--n", "8"]
    one_line_error(runner.invoke(app, [*base, "-o", str(a)]), "not a directory")
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path / "s"), "--device", "meta"]), "cannot run models")
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path / "s"), "--eval-epochs", "0,x"]), "--eval-epochs")
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path / "s"), "--train", '{"epochs": 2}',
                                       "--eval-epochs", "3"]), "--eval-epochs must be an integer in [0, 2]")
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path / "s"), "--train", '{"batch_size": 2.5}']),
                   "batch_size must be an int")
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path / "s"), "--eval", '{"num_samples": 2.5}']),
                   "num_samples must be an integer")
    one_line_error(runner.invoke(app, [*base, "-o", str(tmp_path / "s"), "--eval", '{"loss_repeats": 0}']),
                   "loss_repeats must be an integer")
    assert not (tmp_path / "s").exists()


def test_reproduce_workers_are_checked(tmp_path):
    for workers in ("0", "-1"):
        r = runner.invoke(app, ["reproduce", "--preset", "quick", "--workers", workers, "-o", str(tmp_path / "r")])
        one_line_error(r, "--workers must be an integer >= 1")
    assert not (tmp_path / "r").exists()


def test_checks_do_not_coerce():
    from pfdist import checks

    assert checks.integer("n", 4) == 4 and checks.real("x", 2) == 2.0
    for bad in (4.7, 4.0, "4", True, None):
        with pytest.raises(pfdist.PFDistError):
            checks.integer("n", bad)
    for bad in (math.nan, math.inf, "1.0", False):
        with pytest.raises(pfdist.PFDistError):
            checks.real("x", bad)


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.pop("tensors_sha256"), "no valid 'tensors_sha256'"),        # integrity check was skipped
    (lambda r: r.update(tensors_sha256=None), "no valid 'tensors_sha256'"),
    (lambda r: r.update(tensors_file="../elsewhere/s.safetensors"), "bare file name"),
    (lambda r: r.update(tensors_file="/etc/passwd"), "bare file name"),
])
def test_denoiser_records_need_a_bare_name_and_a_checksum(tmp_path, edit, match):
    net = pfdist.build_network({"arch": "mlp", "shape": [4], "width": 8, "depth": 1}, seed=0)
    path = pfdist.save_denoiser(tmp_path / "s.safetensors", net)
    record = json.loads(path.with_suffix(".json").read_text())
    edit(record)
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(pfdist.CheckpointError, match=match):
        pfdist.load_denoiser(path)
    with pytest.raises(pfdist.CheckpointError, match=match):
        load_spec(path.with_suffix(".json"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=2.5), "batch_size"), (dict(batch_size=None), "batch_size"),
    (dict(seed=1.5), "seed must be an integer"), (dict(seed=2**64), "seed must be an integer"),
    (dict(seed=-1), "seed must be an integer"), (dict(shape=(-1,)), "shape"),
    (dict(num_samples=2.5), "num_samples"), (dict(device="meta"), "cannot run models"),
])
@pytest.mark.parametrize("api", ["pfd", "flow_outputs"])
def test_api_arguments_are_checked(api, kwargs, match):
    a, b = pfdist.Gaussian(torch.zeros(2), torch.eye(2)), pfdist.Gaussian(torch.ones(2), torch.eye(2))
    if "shape" in kwargs:  # a callable that does not say its shape
        a = b = lambda x, sigma: x * 0
    with pytest.raises(pfdist.PFDistError, match=match):
        if api == "pfd":
            pfdist.pfd(a, b, **{"num_samples": 4, **kwargs})
        else:
            pfdist.flow_outputs(a, **{"num_samples": 4, **kwargs})


@pytest.mark.parametrize("kwargs, match", [(dict(steps="4"), "steps"), (dict(steps=2.5), "steps"),
                                           (dict(rho=float("inf")), "rho"), (dict(sigma_max=float("nan")), "sigma_max")])
def test_flow_settings_are_checked(kwargs, match):
    g = pfdist.Gaussian(torch.zeros(2), torch.eye(2))
    with pytest.raises(pfdist.PFDistError, match=match):
        pfdist.pfd(g, g, num_samples=4, **kwargs)
