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


# ------------------------------------------------------------------------ unclear messages


@pytest.mark.parametrize("n", [str(10**23), str(2**63)])
def test_more_seeds_than_exist_says_so(specs, n):
    a, b = specs
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", n])
    one_line_error(r, "more seeds than there are")
    assert "[0, -" not in r.output  # no bounds computed from the impossible count
    with pytest.raises(pfdist.PFDistError, match="num_samples = .* more seeds than there are"):
        pfdist.pfd(pfdist.Gaussian(torch.zeros(2), torch.eye(2)), pfdist.Gaussian(torch.ones(2), torch.eye(2)),
                   num_samples=int(n))


def test_a_directory_where_a_file_is_expected_is_called_a_directory(specs, tmp_path):
    a, b = specs
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "--descriptor", str(tmp_path)])
    assert r.exit_code == 2 and r.output.splitlines()[-1] == f"error: descriptor file {tmp_path} is a directory, not a file."
    one_line_error(runner.invoke(app, ["convert", str(tmp_path), "-o", str(tmp_path / "c")]), "is a directory, not a file")
    one_line_error(runner.invoke(app, ["reproduce", "--set", str(tmp_path), "-o", str(tmp_path / "r")]),
                   "is a directory, not a file")
    one_line_error(runner.invoke(app, ["reproduce", "--preset", str(tmp_path), "-o", str(tmp_path / "r")]),
                   f"preset {tmp_path} is a directory")
    with pytest.raises(pfdist.PFDistError, match="is a directory, not a file"):
        pfdist.KernelDescriptor.load(tmp_path)
    # and the other way round: a file, or nothing, where a run directory is expected
    for cmd in (["rescore", str(a), "--descriptor", "pixels"], ["plot", str(a)]):
        one_line_error(runner.invoke(app, cmd), "is a file, not a directory")
    for cmd in (["rescore", str(tmp_path / "none"), "--descriptor", "pixels"], ["plot", str(tmp_path / "none")]):
        one_line_error(runner.invoke(app, cmd), "does not exist")


def test_set_names_a_missing_file(tmp_path):
    r = runner.invoke(app, ["reproduce", "--set", str(tmp_path / "nonexistent.json"), "-o", str(tmp_path / "r")])
    one_line_error(r, "--set file")
    assert "does not exist" in r.output and "JSON" in r.output
    (tmp_path / "bad.json").write_text("{oops")
    one_line_error(runner.invoke(app, ["reproduce", "--set", str(tmp_path / "bad.json"), "-o", str(tmp_path / "r")]),
                   f"invalid JSON in {tmp_path / 'bad.json'}")
    assert not (tmp_path / "r").exists()


def test_write_failures_name_the_destination_not_the_temporary(tmp_path):
    from pfdist.atomic import atomic_write, atomic_write_text

    def full_disk(tmp):  # open() of the temporary fails, as a full disk or a read-only directory reports it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "r.json", full_disk)
    assert e.value.filename == str(tmp_path / "r.json")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError) as e:  # the destination's parent is a file
        atomic_write_text(blocker / "r.json", "{}")
    assert e.value.filename == str(blocker / "r.json") and "is a file, not a directory" in e.value.strerror
    assert not list(tmp_path.glob(".*.tmp"))


def test_output_directories_are_checked_before_work(specs, tmp_path):
    a, _ = specs
    one_line_error(runner.invoke(app, ["convert", str(a), "-o", str(a)]), "exists and is not a directory")
    base = ["student", str(a), "--n", "8", "-o", str(tmp_path / "s")]
    one_line_error(runner.invoke(app, [*base, "--cache-dir", str(a)]), "exists and is not a directory")
    one_line_error(runner.invoke(app, [*base, "--eval", '{"bogus": 1}']), "unknown --eval keys ['bogus']")
    teacher = ["teacher", "digits", "-o", str(tmp_path / "t.safetensors"), "--train", '{"epochs": 0}']
    one_line_error(runner.invoke(app, [*teacher, "--num-samples", "-1"]), "--num-samples must be an integer >= 2")
    one_line_error(runner.invoke(app, [*teacher, "--work-dir", str(a)]), "exists and is not a directory")
    assert not (tmp_path / "t.safetensors").exists()


def _json_examples(text: str) -> list:
    """Every JSON object written in a help text."""
    decoder, found, i = json.JSONDecoder(), [], text.find("{")
    while i >= 0:
        obj, end = decoder.raw_decode(text, i)  # a malformed example fails the test here
        found.append(obj)
        i = text.find("{", end)
    return found


def _help_examples() -> dict:
    import typer

    out = {}

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        for param in cmd.params:
            examples = _json_examples(getattr(param, "help", None) or "")
            if examples:
                out[(" ".join(path), param.opts[0])] = examples

    walk(typer.main.get_command(app), [])
    return out


def test_every_json_example_in_the_help_is_accepted(tmp_path):
    """What --help shows is runnable: each JSON example goes through the command's own validation."""
    from pfdist.cli.protocol import _protocol_inputs
    from pfdist.descriptors import check_spec
    from pfdist.experiments import load_preset
    from pfdist.experiments.digits_teacher import DIGITS_TEACHER_TRAIN
    from pfdist.experiments.presets import override
    from pfdist.training import TrainConfig

    teacher = tmp_path / "img.json"
    teacher.write_text(json.dumps({**GOOD_LRM, "shape": [1, 8, 8]}))

    def protocol(net=None, train=None, evaluate=None):
        _, _, net_config, _, _ = _protocol_inputs(teacher, net, train, evaluate)
        pfdist.build_network(net_config)

    validators = {
        "--net": lambda ex: protocol(net=ex),
        "--train": lambda ex: protocol(train=ex),
        "--eval": lambda ex: protocol(evaluate=ex),
        "--set": lambda ex: override(load_preset("quick"), json.loads(ex)),
        "--descriptor": check_spec,
    }
    teacher_train = lambda ex: TrainConfig.from_dict({**DIGITS_TEACHER_TRAIN.to_dict(), **json.loads(ex)})  # noqa: E731
    examples = _help_examples()
    assert ("student", "--net") in examples and ("reproduce", "--set") in examples  # the walk finds them
    for (command, option), objects in examples.items():
        check = teacher_train if command == "teacher digits" else validators[option]
        for obj in objects:
            check(json.dumps(obj))


def test_steps_help_states_the_range_the_check_uses(specs):
    import re

    from pfdist.settings import MAX_STEPS, MIN_STEPS

    help_text = runner.invoke(app, ["distance", "--help"], terminal_width=400).output
    text = " ".join(help_text.replace("│", " ").split())  # rich may wrap the help inside its table
    assert re.search(rf"Sigma-grid steps, {MIN_STEPS}\.\.{MAX_STEPS}\b", text), text
    a, b = specs
    one_line_error(runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "--steps", str(MIN_STEPS - 1)]),
                   f"--steps must be an integer in [{MIN_STEPS}, {MAX_STEPS}]")
    with pytest.raises(pfdist.PFDistError, match=rf"steps must be an integer in \[{MIN_STEPS}, {MAX_STEPS}\]"):
        pfdist.FlowSettings(steps=MAX_STEPS + 1)
    assert runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "--steps", str(MIN_STEPS)]).exit_code == 0


@pytest.mark.parametrize("args, match", [
    (["distance", "A", "B", "-n", "1e23"], "Invalid value for '--num-samples'"),
    (["bias-variance", "A", "-N", "4", "-K", "1.5", "-o", "OUT"], "Invalid value for '--k'"),
    (["distance", "A"], "Missing argument 'B'"),
    (["student", "A", "-N", "4"], "Missing option '--out'"),
    (["distance", "A", "B", "--bogus"], "No such option: --bogus"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_values_the_parser_refuses_are_one_line_too(specs, tmp_path, args, match):
    a, b = specs
    args = [{"A": str(a), "B": str(b), "OUT": str(tmp_path / "o")}.get(x, x) for x in args]
    r = runner.invoke(app, args)
    one_line_error(r, match)
    assert "--help)" in r.output  # where to look next


@pytest.mark.parametrize("args, match", [
    (["--engine", "slurm", "--time-min", "-5"], "--time-min must be an integer >= 1"),      # was 'time_min'
    (["--units-per-task", "0"], "--units-per-task must be an integer >= 1"),                # was 'does not apply'
    (["--engine", "ray", "--cpus-per-unit", "nan"], "--cpus-per-unit must be a finite number"),
    (["--engine", "ray", "--gpus-per-unit", "-1"], "--gpus-per-unit must be >= 0"),
])
def test_reproduce_engine_options_are_named_as_typed(tmp_path, args, match):
    one_line_error(runner.invoke(app, ["reproduce", *args, "-o", str(tmp_path / "r")]), match)
    assert not (tmp_path / "r").exists()
