"""Portable .pt2 programs: the reloaded program equals the model it was exported from."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

import pfdist
from pfdist.errors import PFDistError
from pfdist.models.export import export_denoiser, load_exported
from pfdist.specs import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMAS = (0.002, 0.3, 2.0, 80.0)


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    net = pfdist.build_network({"arch": "mlp", "shape": [3, 2], "width": 16, "depth": 2}, seed=0).eval()
    path = tmp_path_factory.mktemp("pt2") / "mlp.pt2"
    export_denoiser(net, path)
    return net, path


def test_exported_network_equals_the_network(mlp_file):
    net, path = mlp_file
    loaded = load_spec(path)
    assert loaded.shape == (3, 2) and loaded.batch_range[1] is None
    for batch in (1, 2, 7):
        x = torch.randn(batch, 3, 2, generator=torch.Generator().manual_seed(batch))
        for sigma in SIGMAS:
            assert torch.allclose(loaded(x, sigma), net(x, sigma), rtol=1e-5, atol=1e-6)
    sigma = torch.tensor([0.01, 1.0, 30.0])  # per-sample sigmas
    x = torch.randn(3, 3, 2)
    assert torch.allclose(loaded(x, sigma), net(x, sigma), rtol=1e-5, atol=1e-6)


def test_cli_export_and_distance(mlp_file, tmp_path):
    from typer.testing import CliRunner

    from pfdist.cli import app

    net, _ = mlp_file
    pfdist.save_denoiser(tmp_path / "net.safetensors", net)
    r = CliRunner().invoke(app, ["export", str(tmp_path / "net.json"), "-o", str(tmp_path / "net.pt2")])
    assert r.exit_code == 0, r.output
    assert "trust" in CliRunner().invoke(app, ["export", "--help"]).output
    exported = load_spec(tmp_path / "net.pt2")
    out = tmp_path / "pfd.json"
    r = CliRunner().invoke(app, ["distance", str(tmp_path / "net.pt2"), str(tmp_path / "net.json"), "-n", "4",
                                 "--steps", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    # The same map on both sides: the distance is zero up to float32 rounding.
    assert json.loads(out.read_text())["pfd"] < 1e-4
    assert load_spec(tmp_path / "net.pt2").fingerprint() == exported.fingerprint()  # a content hash


def test_exported_gaussian_keeps_float64(tmp_path):
    g = pfdist.Gaussian(torch.zeros(4, dtype=torch.float64), torch.diag(torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)))
    export_denoiser(g, tmp_path / "g.pt2", dtype=torch.float64)
    loaded = load_exported(tmp_path / "g.pt2")
    x = torch.randn(5, 4, dtype=torch.float64)
    for sigma in SIGMAS:
        assert torch.allclose(loaded(x, sigma), g(x, sigma), rtol=1e-12, atol=1e-12)
    with pytest.raises(PFDistError, match="float64"):
        loaded(x.float(), 1.0)
    with pytest.raises(PFDistError, match="export it again"):
        loaded.to(torch.float32)


def test_exported_diffusers_model_is_class_conditional(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
        norm_num_groups=2, num_class_embeds=3, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    D = pfdist.from_diffusers(unet, diffusers.DDPMScheduler(prediction_type="v_prediction"))
    export_denoiser(D, tmp_path / "d.pt2")
    loaded = load_exported(tmp_path / "d.pt2")
    assert (loaded.label_dim, loaded.sigma_min, loaded.sigma_max) == (3, D.sigma_min, D.sigma_max)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        labels = torch.arange(batch) % 3
        for sigma in SIGMAS:
            ref = D(x, sigma, labels)
            assert torch.allclose(loaded(x, sigma, labels), ref, rtol=1e-4, atol=1e-5)
            one_hot = torch.nn.functional.one_hot(labels, 3).float()
            assert torch.allclose(loaded(x, sigma, one_hot), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(PFDistError, match="class-conditional"):
        loaded(x, 1.0)


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info, data)


def test_archives_with_pickles_are_refused_before_loading(mlp_file, tmp_path):
    _, path = mlp_file

    def pickled_weights(name, data):
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            next(iter(config["config"].values()))["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    def sample_inputs(name, data):
        return b"\x80\x04pickle" if "sample_inputs" in name else data

    def opaque_constant(name, data):
        return data.replace(b"tensor_0", b"opaque_obj_0") if "constants" in name else data

    for edit in (pickled_weights, sample_inputs, opaque_constant):
        _rewrite(path, tmp_path / "bad.pt2", edit)
        with pytest.raises(PFDistError, match="pickle"):
            load_spec(tmp_path / "bad.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(PFDistError, match="not a readable"):
        load_spec(tmp_path / "junk.pt2")
