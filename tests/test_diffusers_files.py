"""diffusers directories with conditioning files: specs, the CLI, guidance, and the files refused."""

from __future__ import annotations

import json

import pytest
import torch

import pfdist
from pfdist.errors import PFDistError

diffusers = pytest.importorskip("diffusers")
from safetensors.torch import save_file  # noqa: E402

from test_diffusers_models import FEATURES, POOLED, SHAPE, TOKENS, randn, rel_err, tiny_sd3, tiny_sd_unet  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def save_pipeline(tmp_path, network, scheduler, sub: str):
    """A pipeline-layout directory: model_index.json, the network in ``sub``/, scheduler/."""
    root = tmp_path / "pipe"
    network.float().save_pretrained(root / sub)
    network.double()
    scheduler.save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiffusionPipeline", sub: ["diffusers", type(network).__name__]}))
    return root


def write_json(path, value):
    path.write_text(json.dumps(value))
    return path


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3(seed=5)


def test_sd3_spec_with_guidance_equals_the_adapters(sd3, tmp_path):
    from pfdist.specs import load_spec

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    save_pipeline(tmp_path, sd3, scheduler, "transformer")
    prompt = {"encoder_hidden_states": randn(1, TOKENS, FEATURES, seed=1), "pooled_projections": randn(1, POOLED, seed=2)}
    empty = {"encoder_hidden_states": randn(1, TOKENS, FEATURES, seed=3), "pooled_projections": randn(1, POOLED, seed=4)}
    save_file({k: v.float() for k, v in prompt.items()}, tmp_path / "prompt.safetensors")
    save_file({k: v.float() for k, v in empty.items()}, tmp_path / "empty.safetensors")
    spec = write_json(tmp_path / "sd3.json", {"type": "diffusers", "model": "pipe", "conditioning": "prompt.safetensors",
                                              "guidance": {"weight": 3.0, "conditioning": "empty.safetensors"}})
    G = load_spec(spec)
    assert G.shape == SHAPE and G.pure_noise and pfdist.ode_map(G).pure_noise
    as_saved = {k: v.float().double() for k, v in prompt.items()}, {k: v.float().double() for k, v in empty.items()}
    ref = pfdist.guided(pfdist.from_diffusers(sd3, scheduler, **as_saved[0]),
                        pfdist.from_diffusers(sd3, scheduler, **as_saved[1]), 3.0)
    x = randn(2, *SHAPE, seed=5)
    G.net.double(), G.guide.double()
    for sigma in (0.3, 7.0, float("inf")):
        assert rel_err(G(x, sigma), ref(x, sigma)) < 1e-6
    # Without guidance, the prompt alone.
    plain = load_spec(write_json(tmp_path / "plain.json", {"type": "diffusers", "model": "pipe", "conditioning": "prompt.safetensors"}))
    assert rel_err(plain.double()(x, 2.0), ref.net(x, 2.0)) < 1e-6


def test_cli_distance_between_guided_and_plain_specs(sd3, tmp_path):
    from typer.testing import CliRunner

    from pfdist.cli import app
    from pfdist.specs import load_spec

    save_pipeline(tmp_path, sd3, diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), "transformer")
    for name, seed in (("prompt", 1), ("empty", 3)):
        save_file({"encoder_hidden_states": randn(1, TOKENS, FEATURES, seed=seed).float(),
                   "pooled_projections": randn(1, POOLED, seed=seed + 1).float()}, tmp_path / f"{name}.safetensors")
    a = write_json(tmp_path / "a.json", {"type": "diffusers", "model": "pipe", "conditioning": "prompt.safetensors",
                                         "guidance": {"weight": 4.0, "conditioning": "empty.safetensors"}})
    b = write_json(tmp_path / "b.json", {"type": "diffusers", "model": "pipe", "conditioning": "prompt.safetensors"})
    out = tmp_path / "pfd.json"
    r = CliRunner().invoke(app, ["distance", str(a), str(b), "-n", "2", "--steps", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    expected = pfdist.pfd(load_spec(a), load_spec(b), num_samples=2, steps=2)
    assert json.loads(out.read_text())["pfd"] == pytest.approx(expected.value, rel=1e-5) and expected.value > 0


def test_sd_unet_directory_with_a_conditioning_file(tmp_path):
    from pfdist.models.diffusers_load import load_diffusers

    unet, scheduler = tiny_sd_unet(seed=3), diffusers.PNDMScheduler(prediction_type="v_prediction")
    unet.float().save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "unet")
    prompt = randn(1, TOKENS, FEATURES, seed=6).float()
    save_file({"encoder_hidden_states": prompt}, tmp_path / "prompt.safetensors")
    D = load_diffusers(tmp_path / "unet", conditioning=tmp_path / "prompt.safetensors")
    ref = pfdist.from_diffusers(unet, scheduler, encoder_hidden_states=prompt)
    x = randn(2, *SHAPE, seed=7).float()
    assert rel_err(D(x, 3.0), ref(x, 3.0)) < 1e-6


def test_bad_files_are_refused_with_their_names(tmp_path):
    from pfdist.specs import load_spec

    unet, scheduler = tiny_sd_unet(seed=4).float(), diffusers.DDPMScheduler()
    save_file({"encoder_hidden_states": torch.zeros(1, TOKENS, FEATURES + 1)}, tmp_path / "wide.safetensors")
    save_file({"encoder_hidden_states": torch.zeros(2, TOKENS, FEATURES)}, tmp_path / "two.safetensors")
    (tmp_path / "prompt.pt").write_bytes(b"not safetensors")
    unet.save_pretrained(tmp_path / "m")
    scheduler.save_pretrained(tmp_path / "m")

    def spec(**fields):
        name = f"spec{len(list(tmp_path.glob('spec*.json')))}.json"
        return write_json(tmp_path / name, {"type": "diffusers", "model": "m", **fields})

    cases = [
        (spec(conditioning="wide.safetensors"), r"wide\.safetensors.*must have 12 features"),
        (spec(conditioning="two.safetensors"), r"two\.safetensors.*batch 1"),
        (spec(conditioning="prompt.pt"), r"prompt\.pt must be a \.safetensors file"),
        (spec(conditioning="missing.safetensors"), "does not exist"),
        (spec(), "needs the conditioning encoder_hidden_states"),
        (spec(conditioning="../x.safetensors"), "inside"),
        (spec(prompt="x"), "has the fields"),
        (spec(conditioning="wide.safetensors", guidance={"weight": 2.0}), "'guidance' must be"),
    ]
    for path, match in cases:
        with pytest.raises(PFDistError, match=match):
            load_spec(path)
    # Pickle weights only: the .bin file is named and never read.
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    scheduler.save_pretrained(tmp_path / "bin")
    with pytest.raises(PFDistError, match=r"diffusion_pytorch_model\.bin, pickle weights"):
        load_spec(tmp_path / "bin")
    # A config that disagrees with the weights: a different shape, or tensors the weights lack.
    for key, value, match in (("cross_attention_dim", 16, "another shape"), ("layers_per_block", 2, "missing"),
                              ("down_block_types", ["CrossAttnDownBlock2D"] * 2, "missing")):
        config = tmp_path / "m" / "config.json"
        saved = config.read_text()
        config.write_text(json.dumps({**json.loads(saved), key: value}))
        with pytest.raises(PFDistError, match=f"config.json.*(disagree|{match})"):
            load_spec(tmp_path / "m")
        config.write_text(saved)
