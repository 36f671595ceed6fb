"""Bad values an attack run fed to the public API and the model files: each is one PFDistError that
says what was wrong (never a traceback of another type, never a huge allocation)."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass

import pytest
import torch

import pfdist
from pfdist.errors import CheckpointError, PFDistError

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = {"arch": "mlp", "shape": [3, 2], "width": 16, "depth": 2}


def test_sigma_max_too_large_for_float32_is_refused():
    with pytest.raises(PFDistError, match="sigma_max must be at most"):
        pfdist.FlowSettings(sigma_max=1e300)
    with pytest.raises(PFDistError, match="steps must be an integer in"):
        pfdist.FlowSettings(steps=10**9)
    assert pfdist.FlowSettings(sigma_max=1000.0).sigma_max == 1000.0  # VE-size grids stay valid
    g = pfdist.Gaussian(torch.zeros(2), torch.eye(2))
    with pytest.raises(PFDistError, match="sigma_min must be at least"):  # was "model a produced NaN or Inf"
        pfdist.pfd(g, g, num_samples=4, sigma_min=1e-300)


@pytest.mark.parametrize("rule", ["median_nn/0", "median_nn/0.0", "median_nn*0"])
def test_bandwidth_rule_dividing_by_zero_is_refused(rule):
    from pfdist.descriptors import check_spec

    with pytest.raises(PFDistError, match="not a positive number"):
        check_spec({"type": "kernel", "bandwidth_rule": rule})


def test_combine_of_non_results_is_refused():
    with pytest.raises(PFDistError, match="combine joins PFDResult objects"):
        pfdist.PFDResult.combine([1, 2])


@pytest.mark.parametrize("shape", [(-1,), "ab", (2, 0), ("a",)])
def test_generator_and_noise_refuse_bad_shapes(shape):
    with pytest.raises(PFDistError, match="shape"):
        pfdist.generator(lambda x: x, shape=shape)
    with pytest.raises(PFDistError, match="shape"):
        pfdist.noise(range(3), shape)


def test_noise_refuses_seeds_that_are_not_integers():
    with pytest.raises(PFDistError, match="each seed must be an integer"):
        pfdist.noise(["a"], (2,))
    with pytest.raises(PFDistError, match="sigma_max must be a finite number"):
        pfdist.noise(range(2), (2,), float("nan"))


def test_kernel_fit_refuses_one_dimensional_samples_and_huge_feature_counts():
    with pytest.raises(PFDistError, match=r"samples must be a tensor \(n, \*shape\)"):
        pfdist.KernelDescriptor.fit(torch.randn(10))
    with pytest.raises(PFDistError, match="fewer features"):
        pfdist.KernelDescriptor.fit(torch.randn(10, 3), num_features=2**40)


def test_load_edm_on_a_missing_device_is_refused_before_reading(tmp_path):
    (tmp_path / "snapshot.pkl").write_bytes(b"not read")
    device, match = ("cuda:999", "does not exist") if torch.cuda.is_available() else ("cuda", "CUDA is not available")
    with pytest.raises(PFDistError, match=match):
        pfdist.load_edm(tmp_path / "snapshot.pkl", device=device)


def test_checkpoint_with_malformed_optimizer_keys_is_a_checkpoint_error(tmp_path):
    from pfdist.training import TrainConfig, train
    from pfdist.training import load_checkpoint
    from pfdist.training.checkpoint import CHECKPOINT_JSON

    train(pfdist.build_network({"arch": "mlp", "shape": [2], "width": 8, "depth": 1}), torch.randn(8, 2),
          TrainConfig(batch_size=8, epochs=1, epoch_images=8, checkpoint_every=1), tmp_path)
    path = tmp_path / CHECKPOINT_JSON
    info = json.loads(path.read_text())
    assert load_checkpoint(tmp_path).optimizer_state  # the untouched checkpoint loads
    for scalars in ({"abc.step": 1.0}, {"0": 1.0}, [1, 2]):
        path.write_text(json.dumps({**info, "optimizer_scalars": scalars}))
        with pytest.raises(CheckpointError, match="optimizer"):
            load_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    from pfdist.models.export import export_denoiser

    net = pfdist.build_network(MLP, seed=0).eval()
    path = tmp_path_factory.mktemp("pt2") / "mlp.pt2"
    export_denoiser(net, path)
    return path


def test_exporting_a_pt2_program_again_is_refused(pt2, tmp_path):
    from typer.testing import CliRunner

    from pfdist.cli import app

    r = CliRunner().invoke(app, ["export", str(pt2), "-o", str(tmp_path / "again.pt2")])
    assert r.exit_code == 2 and "already a .pt2 program" in r.output and r.exception.__class__ is SystemExit
    assert not (tmp_path / "again.pt2").exists()


def _with_meta(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("extra/pfdist.json"):
                data = edit(data)
            zout.writestr(info, data)
    return dst


def _drop(key):
    return lambda b: json.dumps({k: v for k, v in json.loads(b).items() if k != key}).encode()


def _set(**fields):
    return lambda b: json.dumps({**json.loads(b), **fields}).encode()


@pytest.mark.parametrize("edit, match", [
    (_drop("shape"), "shape = None"),                        # a missing key
    (_set(label_dim="x"), "label_dim = 'x'"),                # a wrong type
    (_set(dtype="foo"), "dtype = 'foo'"),
    (_set(batch=5), "batch = 5"),
    (_set(shape=[5]), r"shape = \[5\]"),                     # a wrong shape
    (_set(label_dim=3), "label_dim = 3"),                    # labels the program does not take
    (_set(sigma_max="inf"), "sigma_max = 'inf'"),
    (lambda b: b"{not json", "without pfdist's pfdist.json"),  # invalid JSON
], ids=["missing", "type", "dtype", "batch", "shape", "labels", "sigma", "json"])
def test_tampered_pt2_metadata_is_refused(pt2, tmp_path, edit, match):
    from pfdist.specs import load_spec

    load_spec(pt2)  # the untouched program loads
    with pytest.raises(PFDistError, match=match):
        load_spec(_with_meta(pt2, tmp_path / "tampered.pt2", edit))


@dataclass(frozen=True)
class _DiesJob:
    """A unit whose worker process is killed (as by the OOM killer) while it runs."""

    index: int
    label: str = "student N=8"
    run_dir: str = "runs/x"
    threads: int | None = None

    def __call__(self):
        os._exit(9)


def test_a_killed_worker_is_one_error_saying_how_to_resume():
    from pfdist.experiments.engines.local import LocalEngine

    with pytest.raises(PFDistError, match=r"worker process died .* student N=8.* run the same command again"):
        LocalEngine(workers=2).run([_DiesJob(0), _DiesJob(1)], done=lambda job: None)


def _tiny_unet():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D")), diffusers.DDPMScheduler()


def test_label_dim_on_an_unconditional_unet_is_refused():
    unet, scheduler = _tiny_unet()
    with pytest.raises(PFDistError, match="this UNet2DModel is unconditional"):
        pfdist.from_diffusers(unet, scheduler, label_dim=3)
    assert pfdist.from_diffusers(unet, scheduler).label_dim == 0


def test_diffusers_dir_whose_config_disagrees_with_its_weights(tmp_path):
    from pfdist.specs import load_spec

    unet, scheduler = _tiny_unet()
    unet.save_pretrained(tmp_path)
    scheduler.save_pretrained(tmp_path)
    load_spec(tmp_path)  # as saved, it loads
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "block_out_channels": [16, 32]}))
    with pytest.raises(PFDistError, match="do not fit the network its config.json describes"):
        load_spec(tmp_path)


def test_more_bad_api_values_found_by_the_attack_pass():
    g, h = pfdist.Gaussian(torch.zeros(2), torch.eye(2)), pfdist.Gaussian(torch.ones(2), torch.eye(2))
    with pytest.raises(PFDistError, match="progress must be a function"):
        pfdist.pfd(g, h, num_samples=4, progress=3)
    with pytest.raises(PFDistError, match=r"data must be \(N, \*shape\) with N >= 1"):
        pfdist.nearest_neighbors(torch.zeros(3, 2), torch.zeros(0, 2))
    with pytest.raises(PFDistError, match=r"sigma_max must be <= 1e\+06, got 1e\+300; noise that large overflows"):
        pfdist.generator(lambda x: x, sigma_max=1e300, shape=(2,))
    for bad in ([-1.0, -2.0], [float("nan"), 1.0]):  # a math domain error / a NaN PFD before
        with pytest.raises(PFDistError, match="squared distances: finite numbers >= 0"):
            pfdist.PFDResult.from_per_sample(torch.tensor(bad), seed=0)


@pytest.mark.parametrize("width", [2**20, 2**40])
def test_a_network_too_large_to_build_is_refused_before_allocating(width):
    with pytest.raises(PFDistError, match="parameters, more than the"):
        pfdist.build_network({"arch": "mlp", "shape": [2], "width": width, "depth": 1})
