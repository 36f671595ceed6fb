"""Inputs an attacker (or an accident) would try: each is refused with one clear error, writes
nothing, runs no code from a data file, and never changes a result silently."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.descriptors import check_spec, resolve
from pfdist.errors import PFDistError
from pfdist.models.export import export_denoiser
from pfdist.specs import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")


# --- .pt2 archives are checked before anything in them is read, as a model or as a descriptor ---

class _Payload:
    """Unpickling this creates ``marker``: a stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _pickle_bytes(marker) -> bytes:
    buffer = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buffer)
    return buffer.getvalue()


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info)))


def _evil_archives(tmp_path, marker):
    """A valid exported denoiser, then three copies that run code (create ``marker``) when read."""
    good = tmp_path / "good.pt2"
    export_denoiser(pfdist.build_network({"arch": "mlp", "shape": [3, 2], "width": 8, "depth": 1}, seed=0), good)
    payload = _pickle_bytes(marker)

    def sample_inputs(name, data):  # torch.export.save's default: example inputs as a pickle
        return payload if "sample_inputs" in name else data

    def pickled_constant(name, data):  # a constant saved with use_pickle
        if name.endswith("constants_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        return payload if name.endswith("data/constants/tensor_0") else data

    def shape_expression(name, data):  # sympy.sympify evaluates expressions as Python
        if name.endswith("models/model.json"):
            text = json.loads(data)
            program = json.dumps(text)
            old = next(iter(_expr_strings(text)))
            evil = f"__import__('builtins').open({str(marker)!r}, 'w') and {old}"
            return program.replace(json.dumps(old), json.dumps(evil)).encode()
        return data

    paths = []
    for edit in (sample_inputs, pickled_constant, shape_expression):
        path = tmp_path / f"{edit.__name__}.pt2"
        _rewrite(good, path, edit)
        paths.append(path)
    return good, paths


def _expr_strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from [value] if key == "expr_str" else _expr_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expr_strings(value)


def test_malicious_pt2_is_refused_as_model_and_descriptor_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    good, evil = _evil_archives(tmp_path, marker)
    load_spec(good)  # the unedited archive loads
    teacher = "examples/teacher.json"
    runner = CliRunner()
    for path in evil:
        loaders = {
            "model": lambda: load_spec(path),
            "descriptor path": lambda: resolve(str(path)),
            "pfd(descriptor=...)": lambda: pfdist.pfd(load_spec(teacher), load_spec(teacher), num_samples=2,
                                                      steps=2, descriptor=resolve(str(path))),
            "file spec": lambda: resolve({"type": "file", "path": str(path)}),
            "sscd spec": lambda: resolve({"type": "sscd", "path": str(path)}),
        }
        for what, load in loaders.items():
            with pytest.raises(PFDistError, match="pickle|not arithmetic"):
                load()
            assert not marker.exists(), f"{path.name} as {what} ran its payload"
        for args in (["distance", teacher, teacher, "-n", "2", "--steps", "2", "--descriptor", str(path)],
                     ["distance", str(path), teacher, "-n", "2", "--steps", "2"]):
            r = runner.invoke(app, args)
            assert r.exit_code == 2 and "Traceback" not in r.output, r.output
            assert "pickle" in r.output or "not arithmetic" in r.output, r.output
            assert not marker.exists(), f"{path.name} via `pfdist {' '.join(args)}` ran its payload"


def test_every_pt2_load_goes_through_the_archive_check():
    """``torch.export.load`` is called in one place, after :func:`pfdist.pt2.check_archive`."""
    import ast
    from pathlib import Path

    root = Path(pfdist.__file__).parent
    callers = sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                     for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("export.load"))
    assert callers == ["pt2.py"]


# --- a failed start writes nothing, so the corrected command is not locked out ---

STUDENT = {"label": "m", "net": {"arch": "mlp", "width": 8, "depth": 1}}
TINY_TRAIN = {"epochs": 1, "epoch_images": 32, "batch_size": 16}
TINY = {"name": "tiny", "teacher": {"type": "low_rank_mixture", "shape": [4], "num_components": 2, "rank": 2,
                                    "scale": 1.0, "mean_scale": 1.5, "noise_std": 0.2, "seed": 0},
        "eval": {"num_samples": 16, "test_samples": 16, "loss_repeats": 1, "steps": 4, "batch_size": 16},
        "scaling": {"ns": [4], "students": [STUDENT], "train": TINY_TRAIN}}


def _tiny(**changes) -> dict:
    return json.loads(json.dumps({**TINY, **changes}))


BAD_STARTS = {
    "invalid student net": (_tiny(scaling={"ns": [4], "students": [{"label": "m", "net": {"arch": "mlp", "width": -3}}],
                                           "train": TINY_TRAIN}), "width"),
    "missing descriptor file": (_tiny(descriptors=[{"type": "file", "path": "/nonexistent/net.pt2"}]), "does not exist"),
    "N > 2^20": (_tiny(scaling={"ns": [2**20 + 1], "students": [STUDENT], "train": TINY_TRAIN}), "largest supported"),
    "eval epoch past the last": (_tiny(scaling=None, dynamics={"ns": [4], "student": STUDENT, "train": TINY_TRAIN,
                                                               "eval_epochs": [0, 5]}), "eval_epochs"),
    "no studies": (_tiny(scaling=None), "no study"),
    "real data of another shape": (_tiny(scaling=None, real_vs_synthetic={"ns": [4], "students": [STUDENT],
                                                                          "train": TINY_TRAIN}), "shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_STARTS))
def test_a_failed_start_writes_nothing_and_the_corrected_command_claims(tmp_path, case):
    from pfdist.experiments import load_preset
    from pfdist.experiments.run import CONFIG, claim_run_dir, prepare

    bad, message = BAD_STARTS[case]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    run_dir = tmp_path / "run"
    r = CliRunner().invoke(app, ["reproduce", "--preset", str(tmp_path / "bad.json"), "--out", str(run_dir)])
    assert r.exit_code == 2 and "Traceback" not in r.output and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not run_dir.exists(), sorted(p.name for p in run_dir.rglob("*"))
    (tmp_path / "good.json").write_text(json.dumps(TINY))
    good = load_preset(str(tmp_path / "good.json"))
    prepare(good, run_dir)
    claim_run_dir(good, run_dir)  # the corrected command's claim: no "holds a run of another config"
    assert json.loads((run_dir / CONFIG).read_text())["key"] == good.key()


# --- a preset's name is a name, not a path ---

@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", "..", ".hidden", "", "x" * 65, 3])
def test_preset_name_must_be_one_safe_path_component(tmp_path, monkeypatch, name):
    from pfdist.experiments import load_preset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.json").write_text(json.dumps(_tiny(name=name)))
    with pytest.raises(PFDistError, match="name"):
        load_preset("p.json")
    r = CliRunner().invoke(app, ["reproduce", "--preset", "p.json"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "name" in r.output, r.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["p.json"]  # nothing written, inside runs/ or out


# --- values that used to be reinterpreted silently are refused ---

def test_combine_refuses_parts_of_different_comparisons():
    teacher, other = load_spec("examples/teacher.json"), load_spec("examples/other.json")
    first = pfdist.pfd(teacher, other, num_samples=4, seed=0, steps=4)
    rest = pfdist.pfd(teacher, other, num_samples=4, seed=4, steps=4)
    whole = pfdist.pfd(teacher, other, num_samples=8, seed=0, steps=4)
    torch.testing.assert_close(pfdist.PFDResult.combine([rest, first]).per_sample, whole.per_sample)
    for wrong in (pfdist.pfd(teacher, teacher, num_samples=4, seed=4, steps=4),  # another model pair
                  pfdist.pfd(teacher, other, num_samples=4, seed=4, steps=4, descriptor=lambda x: 2 * x)):
        with pytest.raises(PFDistError, match="different models or descriptors"):
            pfdist.PFDResult.combine([first, wrong])
    # Outputs precomputed by flow_outputs are the same map as the model itself.
    outputs = pfdist.flow_outputs(teacher, num_samples=8, seed=0, flow=pfdist.FlowSettings(steps=4))
    pfdist.PFDResult.combine([first, pfdist.pfd(outputs, other, num_samples=4, seed=4, steps=4)])


@pytest.mark.parametrize("shape", [(2.7,), (0,), (-1,), (2, 0)])
def test_generator_shape_must_be_positive_integers(shape):
    with pytest.raises(PFDistError, match="shape"):
        pfdist.generator(lambda x: x, shape=shape)


def _tiny_unet():
    diffusers = pytest.importorskip("diffusers")
    return diffusers, diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,),
                                            layers_per_block=1, down_block_types=("DownBlock2D",),
                                            up_block_types=("UpBlock2D",), norm_num_groups=4)


def test_diffusers_schedules_and_labels_out_of_range_are_refused():
    diffusers, unet = _tiny_unet()
    cases = [(lambda: pfdist.from_diffusers(unet, diffusers.DDPMScheduler(), label_dim=2.5), "label_dim"),
             (lambda: pfdist.from_diffusers(unet, diffusers.DDPMScheduler(beta_start=0.5, beta_end=1.5)), "betas"),
             (lambda: pfdist.from_diffusers(unet, diffusers.EDMEulerScheduler(sigma_data=0.0)), "sigma_data"),
             (lambda: pfdist.from_diffusers(unet, diffusers.EDMEulerScheduler(sigma_min=5.0, sigma_max=1.0)), "below")]
    for make, message in cases:
        with pytest.raises(PFDistError, match=message):
            make()
    # The schedules that are valid still load, zero terminal SNR included.
    assert pfdist.from_diffusers(unet, diffusers.DDPMScheduler(rescale_betas_zero_snr=True)).sigma_max > 1e3


def test_negative_kernel_seed_is_refused():
    from pfdist.descriptors import KernelDescriptor

    samples = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(PFDistError, match="seed"):
        KernelDescriptor.fit(samples, num_features=4, seed=-1)  # torch would use 2^64 - 1
    with pytest.raises(PFDistError, match="seed"):
        KernelDescriptor.random(3, 1.0, num_features=4, seed=-1)
    with pytest.raises(PFDistError, match="seed"):
        check_spec({"type": "kernel", "seed": -1})


@pytest.mark.parametrize("study, message", [
    ({"scaling": {"ns": [4, 4], "students": [STUDENT], "train": TINY_TRAIN}}, "ns must be distinct"),
    ({"scaling": {"ns": [4], "students": [STUDENT, STUDENT], "train": TINY_TRAIN}}, "labels must be distinct"),
    ({"scaling": {"ns": [4], "students": [STUDENT, {**STUDENT, "label": "n"}], "train": TINY_TRAIN}},
     "nets must be distinct"),
    ({"bias_variance": {"ns": [8, 8], "students": [STUDENT], "train": TINY_TRAIN, "k": 2}}, "ns must be distinct"),
    ({"dynamics": {"ns": [4, 4], "student": STUDENT, "train": TINY_TRAIN, "eval_epochs": [0, 1]}}, "ns must be distinct"),
])
def test_duplicate_ns_or_students_are_refused(tmp_path, study, message):
    from pfdist.experiments import load_preset

    (tmp_path / "p.json").write_text(json.dumps(_tiny(**{"scaling": None, **study})))
    with pytest.raises(PFDistError, match=message):
        load_preset(str(tmp_path / "p.json"))


def test_slurm_engine_options_and_absent_slurm_are_refused(tmp_path, monkeypatch):
    from pfdist.experiments.engines import get_engine

    for option, value in (("max_parallel", -3), ("mem_gb", -3), ("poll_s", 0)):
        with pytest.raises(PFDistError, match=option):
            get_engine("slurm", **{option: value}, cluster="local")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(PFDistError, match="no Slurm"):
        get_engine("slurm")
    r = CliRunner().invoke(app, ["reproduce", "--engine", "slurm", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "no Slurm" in r.output and not (tmp_path / "run").exists(), r.output
    get_engine("slurm", cluster="local")  # submitit's local executor is asked for by name


def test_convert_refuses_nan_weights(tmp_path, monkeypatch):
    from test_edm import write_edm_snapshot

    net = pfdist.build_network({"arch": "songunet", "shape": [1, 8, 8], "model_channels": 4, "channel_mult": [1, 2],
                                "num_blocks": 1, "attn_resolutions": [], "precond": "edm"}, seed=0).eval()
    with torch.no_grad():
        next(net.parameters())[0] = float("nan")
    write_edm_snapshot(net, tmp_path / "snap.pkl", monkeypatch)
    r = CliRunner().invoke(app, ["convert", str(tmp_path / "snap.pkl"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "NaN" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out").exists()


# --- sizes that cannot finish or fit in memory are refused up front, with the reason ---

def test_unbounded_sizes_are_refused_with_the_reason(tmp_path):
    from pfdist import checks

    teacher = load_spec("examples/teacher.json")
    with pytest.raises(PFDistError, match="more than pfdist runs"):
        pfdist.pfd(teacher, teacher, num_samples=10**15)
    with pytest.raises(PFDistError, match="more than pfdist runs"):
        pfdist.EvalConfig(num_samples=10**12)
    with pytest.raises(PFDistError, match="nearest-neighbour"):
        check_spec({"type": "kernel", "fit_samples": 10**8})
    with pytest.raises(PFDistError, match="cannot finish"):
        pfdist.TrainConfig(epochs=10**12)
    with pytest.raises(PFDistError, match="test loss"):
        pfdist.EvalConfig(test_samples=2048, loss_repeats=10**12)
    with pytest.raises(PFDistError, match="kept in memory"):  # few seeds, but of a huge shape
        pfdist.flow_outputs(pfdist.generator(lambda x: x, shape=(4096, 1024)), num_samples=1000)
    assert checks.size("k", checks.MAX_STUDENTS, checks.MAX_STUDENTS, "why", lo=2) == checks.MAX_STUDENTS
    runner = CliRunner()
    teacher_file = "examples/teacher.json"
    for args in (["bias-variance", teacher_file, "-N", "4", "--k", "100000000", "-o", str(tmp_path / "bv")],
                 ["distance", teacher_file, teacher_file, "-n", str(10**15)],
                 ["reproduce", "--set", json.dumps({"eval": {"num_samples": 10**12}}), "-o", str(tmp_path / "run")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "more than pfdist runs" in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "bv").exists() and not (tmp_path / "run").exists()


def test_more_reinterpreted_values_found_by_an_attack_pass_are_refused():
    """Truthy strings as flags, out-of-range descriptor sizes, a negative T, k = 0 neighbours."""

    bad_specs = [({"type": "file", "path": "net.pt2", "normalize": "no"}, "true or false"),
                 ({"type": "sscd", "path": "sscd.pt", "quantize": "no"}, "true or false"),
                 ({"type": "sscd", "path": "sscd.pt", "size": 2.5}, "size"),
                 ({"type": "sscd", "path": "sscd.pt", "size": 0}, "size"),
                 ({"type": "sscd", "path": "sscd.pt", "interpolation": "nearest-ish"}, "interpolation")]
    for spec, message in bad_specs:
        with pytest.raises(PFDistError, match=message):
            check_spec(spec)
    a = pfdist.Gaussian(torch.zeros(2), torch.eye(2))
    b = pfdist.Gaussian(torch.ones(2), torch.eye(2))
    with pytest.raises(PFDistError, match="sigma_max"):
        pfdist.gaussian_pfd(a, b, sigma_max=-3.0)  # was the value at T = 3
    with pytest.raises(PFDistError, match="sigma_max"):
        pfdist.noise(range(2), (3,), sigma_max=-1.0)
    with pytest.raises(PFDistError, match="k must be"):
        pfdist.nearest_neighbors(torch.zeros(3, 2), torch.zeros(4, 2), k=0)  # was an empty result
