"""EDM2 snapshots on the command line: "edm" specs (guided, decoded, one class) give the Python
API's maps, and converted EDM2 checkpoints keep their data space and encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from edm_fixtures import EDM2_FIXTURES as FIXTURES, needs_edm2_fixtures as needs_fixtures
from pfdist.cli import app
from pfdist.errors import PFDistError
from pfdist.specs import load_map, load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = ("edm2-latent-cond.pkl", "edm2-latent-uncond.pkl", "edm2-latent-cond-xs.pkl", "edm2-rgb-uncond.pkl", "tiny-sd-vae")
runner = CliRunner()


@pytest.fixture
def home(tmp_path):
    """A directory holding (links to) the EDM2 fixtures, where the specs are written."""
    for name in FILES:
        (tmp_path / name).symlink_to(FIXTURES / name)
    return tmp_path


def spec(home: Path, name: str, **fields) -> Path:
    path = home / name
    path.write_text(json.dumps({"type": "edm", "path": "edm2-latent-cond.pkl", **fields}))
    return path


def cfg(weight: float) -> dict:
    return {"guidance": {"guide": "edm2-latent-uncond.pkl", "weight": weight}, "vae": "tiny-sd-vae"}


def python_map(weight: float, flow: pfdist.FlowSettings, class_labels: int | None = None):
    net = pfdist.load_edm(FIXTURES / "edm2-latent-cond.pkl")
    D = pfdist.guided(net, pfdist.load_edm(FIXTURES / "edm2-latent-uncond.pkl"), weight)
    vae = pfdist.load_edm_decoder(FIXTURES / "edm2-latent-cond.pkl", vae=FIXTURES / "tiny-sd-vae")
    return pfdist.ode_map(D, flow, class_labels=class_labels, decoder=vae)


@needs_fixtures
def test_cli_distance_of_guided_decoded_specs_is_the_python_apis(home):
    a, b = spec(home, "a.json", **cfg(1.4), class_label=3), spec(home, "b.json", **cfg(2.0), class_label=3)
    out = home / "r.json"
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "--seed", "7", "--steps", "3", "-o", str(out)])
    assert r.exit_code == 0, r.output
    flow = pfdist.FlowSettings(steps=3)
    expected = pfdist.pfd(python_map(1.4, flow, 3), python_map(2.0, flow, 3), num_samples=4, seed=7)
    record = json.loads(out.read_text())
    assert record["pfd"] == expected.value and expected.value > 0  # same seeds, same maps: the same bits
    phi = load_map(a, flow)
    assert phi.shape == (3, 16, 16) and phi.noise_shape == (4, 8, 8)  # images, from 4x8x8 latents
    assert phi.fingerprint() == python_map(1.4, flow, 3).fingerprint()
    # --steps reaches the spec's map: another grid, another value.
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "--seed", "7", "--steps", "5", "-o", str(out)])
    assert r.exit_code == 0 and json.loads(out.read_text())["pfd"] != expected.value


@needs_fixtures
def test_a_decoded_spec_against_itself_is_zero_and_without_vae_it_is_the_latent_denoiser(home):
    a = spec(home, "a.json", **cfg(1.4))
    out = home / "r.json"
    r = runner.invoke(app, ["distance", str(a), str(a), "-n", "3", "--steps", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["pfd"] == 0.0
    latent = spec(home, "latent.json", guidance={"guide": "edm2-latent-cond-xs.pkl", "weight": 2.0})
    D = load_spec(latent)  # autoguidance, no decoder: a denoiser on latents
    assert load_map(latent) is not None and D.shape == (4, 8, 8)
    x, sigma = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.5, 3.0])
    ref = pfdist.guided(pfdist.load_edm(FIXTURES / "edm2-latent-cond.pkl"),
                        pfdist.load_edm(FIXTURES / "edm2-latent-cond-xs.pkl"), 2.0)
    labels = torch.eye(10)[[1, 4]]
    assert torch.equal(D(x, sigma, labels), ref(x, sigma, labels))
    with pytest.raises(PFDistError, match="is a map"):
        load_spec(a)  # a decoded spec is not a denoiser (a preset's teacher)


@needs_fixtures
@pytest.mark.parametrize("fields, match", [
    ({"path": "missing.pkl"}, "'path' names .*missing.pkl, which does not exist"),
    ({"path": "/etc/passwd"}, "'path' '/etc/passwd' must be a path inside"),
    ({"guidance": {"guide": "edm2-latent-uncond.pkl"}}, "'guidance' must be"),
    ({"guidance": {"guide": "edm2-latent-uncond.pkl", "weight": "big"}}, "guidance weight must be a finite number"),
    ({"guidance": {"guide": "../x.pkl", "weight": 1.4}}, "'guidance guide' '../x.pkl' must be a path inside"),
    ({"guidance": {"guide": "edm2-rgb-uncond.pkl", "weight": 1.4}}, "guided: net works on samples of shape"),
    ({"vae": "no-vae"}, "'vae' names .*no-vae, which does not exist"),
    ({"vae": "edm2-rgb-uncond.pkl"}, "is not a diffusers AutoencoderKL directory"),
    ({"path": "bad.json"}, "bad.json does not match its config|bad.safetensors"),  # itself: no recursion
    ({"path": "tiny-sd-vae"}, "holds no model.safetensors"),
    ({"class_label": 10}, "'class_label' 10 is not a class of edm2-latent-cond.pkl"),
    ({"class_label": 1.5}, "'class_label' must be an integer, got 1.5; a class index"),
    ({"weight": 2}, r"an 'edm' spec has the fields \['path', 'guidance', 'vae', 'class_label'\]"),
])
def test_each_bad_field_is_one_clear_line_naming_the_field_and_the_file(home, fields, match):
    bad = spec(home, "bad.json", **fields)
    with pytest.raises(PFDistError, match=match) as e:
        load_map(bad)
    assert str(e.value).startswith(f"{bad}: ")
    r = runner.invoke(app, ["distance", str(bad), str(bad), "-n", "2", "--steps", "2"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert [line for line in r.output.splitlines() if line.startswith("error:")] == [f"error: {e.value}"]


@needs_fixtures
def test_the_decoders_fingerprint_is_its_content_not_its_directory(home):
    """The same VAE read from two places is one decoder: caches keyed by it are shared."""
    here = pfdist.load_edm_decoder(home / "edm2-latent-cond.pkl", vae=home / "tiny-sd-vae")
    there = pfdist.load_edm_decoder(FIXTURES / "edm2-latent-cond.pkl", vae=FIXTURES / "tiny-sd-vae")
    assert here.vae.config["_name_or_path"] != there.vae.config["_name_or_path"]
    assert here.fingerprint() == there.fingerprint()
    assert here.fingerprint() != pfdist.load_edm_decoder(home / "edm2-latent-cond.pkl", vae=home / "tiny-sd-vae",
                                                         dtype=torch.float64).fingerprint()


@needs_fixtures
def test_a_converted_edm2_checkpoint_keeps_its_encoder_and_data_space(home):
    from pfdist.hashing import fingerprint

    for name in ("edm2-latent-cond", "edm2-rgb-uncond"):
        r = runner.invoke(app, ["convert", str(home / f"{name}.pkl"), "-o", str(home / name)])
        assert r.exit_code == 0, r.output
        net, original = load_spec(home / name), pfdist.load_edm(home / f"{name}.pkl")
        assert net.encoder == original.encoder and net.data_space == original.data_space
        assert fingerprint(net) == fingerprint(original)  # caches keyed by the snapshot serve the converted model
        record = json.loads((home / name / "model.json").read_text())
        assert record["data_space"] == original.data_space and record["encoder"]["class_name"] == original.encoder.class_name
    vae = home / "tiny-sd-vae"
    reference = pfdist.load_edm_decoder(home / "edm2-latent-cond.pkl", vae=vae).fingerprint()
    for where in ("edm2-latent-cond", "edm2-latent-cond/model.json", "edm2-latent-cond/model.safetensors"):
        assert pfdist.load_edm_decoder(home / where, vae=vae).fingerprint() == reference
    rgb = pfdist.load_edm_decoder(home / "edm2-rgb-uncond")
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert rgb.vae is None and torch.equal(rgb(x), pfdist.load_edm_decoder(home / "edm2-rgb-uncond.pkl")(x))
    torch.testing.assert_close(rgb(x), ((x * 127.5 + 128).clip(0, 255)) / 127.5 - 1)  # StandardRGBEncoder.decode
    # The converted model in a spec, guided and decoded, is the snapshot's map: PFD exactly 0.
    a = spec(home, "a.json", **cfg(1.4))
    b = spec(home, "b.json", **{**cfg(1.4), "path": "edm2-latent-cond"})
    out = home / "r.json"
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", "3", "--steps", "2", "-o", str(out)])
    assert r.exit_code == 0 and json.loads(out.read_text())["pfd"] == 0.0, r.output


@needs_fixtures
@pytest.mark.parametrize("change, match", [
    ({"encoder": {"class_name": "PickledEncoder"}}, "'encoder' must be an EDM2 encoder record"),
    ({"encoder": {"class_name": "StabilityVAEEncoder", "vae_name": "v", "scale": [1, 1], "bias": [0, 0]},
      "data_space": "latent:v:scale=[1.0, 1.0]:bias=[0.0, 0.0]"}, "the encoder has 2 channels but the network 4"),
    ({"encoder": {"class_name": "StabilityVAEEncoder", "vae_name": "v", "scale": ["1"] * 4, "bias": [0] * 4}},
     r"the encoder's scale\[0\] must be a finite number"),
    ({"data_space": "rgb"}, "'data_space' 'rgb' is not its encoder's 'latent:tiny-sd-vae"),
    ({"net_config": {"arch": "mlp", "shape": [2]}}, "does not match its config"),
])
def test_a_converted_checkpoints_bad_encoder_record_is_a_clear_error(home, change, match):
    runner.invoke(app, ["convert", str(home / "edm2-latent-cond.pkl"), "-o", str(home / "conv")])
    config = home / "conv" / "model.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(PFDistError, match=match):
        load_spec(home / "conv")


@needs_fixtures
def test_a_decoder_of_a_checkpoint_without_an_encoder_record_is_refused(home):
    from pfdist.nets import build_network
    from pfdist.training import save_denoiser

    save_denoiser(home / "m.safetensors", build_network({"arch": "mlp", "shape": [2]}))
    with pytest.raises(PFDistError, match="records no EDM2 encoder"):
        pfdist.load_edm_decoder(home / "m.safetensors")
    record = json.loads((home / "m.json").read_text())
    (home / "m.json").write_text(json.dumps({**record, "encoder": {"class_name": "StandardRGBEncoder"}, "data_space": "rgb"}))
    with pytest.raises(PFDistError, match="'encoder' describes an EDM2 network's data, but the network is a"):
        load_spec(home / "m.safetensors")
    with pytest.raises(PFDistError, match="neither an EDM2 snapshot"):
        pfdist.load_edm_decoder(home / "nothing")


@needs_fixtures
def test_a_kernel_descriptor_is_fitted_on_the_decoded_images_of_a_spec(home):
    from pfdist.protocol import TEST_SEED

    a, b = spec(home, "a.json", **cfg(1.4)), spec(home, "b.json", **cfg(2.0))
    out = home / "r.json"
    kernel = '{"type": "kernel", "num_features": 64, "fit_samples": 8}'
    r = runner.invoke(app, ["distance", str(a), str(b), "-n", "4", "--steps", "2", "--descriptor", kernel, "-o", str(out)])
    assert r.exit_code == 0, r.output
    flow = pfdist.FlowSettings(steps=2)
    teacher = pfdist.flow_outputs(python_map(1.4, flow), num_samples=8, seed=TEST_SEED)
    assert teacher.values.shape == (8, 3, 16, 16)  # fitted on images, not latents
    psi = pfdist.KernelDescriptor.fit(teacher.values, num_features=64, seed=0)
    expected = pfdist.pfd(python_map(1.4, flow), python_map(2.0, flow), num_samples=4, descriptor=psi)
    assert json.loads(out.read_text())["pfd"] == pytest.approx(expected.value, rel=1e-6)


@needs_fixtures
def test_a_pixel_snapshot_decodes_with_vae_rgb_and_a_latent_one_needs_its_vae(home):
    rgb = home / "rgb.json"
    rgb.write_text(json.dumps({"type": "edm", "path": "edm2-rgb-uncond.pkl", "vae": "rgb"}))
    flow = pfdist.FlowSettings(steps=2)
    phi = load_map(rgb, flow)
    expected = pfdist.ode_map(pfdist.load_edm(FIXTURES / "edm2-rgb-uncond.pkl"), flow,
                              decoder=pfdist.load_edm_decoder(FIXTURES / "edm2-rgb-uncond.pkl"))
    assert phi.fingerprint() == expected.fingerprint() and phi.shape == (3, 8, 8)
    with pytest.raises(PFDistError, match=r"latent\.json: .*is a latent model .*tiny-sd-vae"):
        load_map(spec(home, "latent.json", vae="rgb"))


@needs_fixtures
def test_a_preset_teacher_may_be_a_guided_edm2_spec_but_not_a_decoded_one(home):
    from pfdist.experiments.units import load_teacher

    latent = spec(home, "latent.json", guidance={"guide": "edm2-latent-uncond.pkl", "weight": 1.4})
    teacher = load_teacher(str(latent))
    assert teacher.weight == 1.4 and teacher.shape == (4, 8, 8) and teacher.label_dim == 10
    with pytest.raises(PFDistError, match="is a map"):
        load_teacher(str(spec(home, "decoded.json", **cfg(1.4))))
