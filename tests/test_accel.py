"""Device settings (channels-last, bf16 autocast, torch.compile): validated where they enter,
float32 in and out of the network, close to float32 results, and absent from the content keys of
float32 runs; `--device cuda` without CUDA is one clear error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.accel import Accel, accelerate
from pfdist.cli import app
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
UNET = {"arch": "songunet", "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "shape": [3, 8, 8]}


@pytest.mark.parametrize("make", [
    lambda: Accel(autocast="fp16"),
    lambda: Accel(channels_last="yes"),
    lambda: TrainConfig(autocast="bf15"),
    lambda: EvalConfig(compile=1),
])
def test_bad_settings_are_refused_when_built(make):
    with pytest.raises(pfdist.PFDistError, match="autocast must|must be true or false"):
        make()


def test_float32_configs_keep_their_keys_and_bf16_changes_them():
    assert not {"autocast", "channels_last", "compile"} & (set(TrainConfig().to_dict()) | set(EvalConfig().to_dict()))
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    assert TrainConfig(autocast="bf16").to_dict()["autocast"] == "bf16"
    assert EvalConfig.from_dict(EvalConfig(channels_last=True).to_dict()).channels_last


def test_bf16_unet_is_float32_in_and_out_and_close_to_float32(one_thread):
    torch.manual_seed(0)
    net = pfdist.build_network(UNET).eval()
    fast = accelerate(net, autocast="bf16", channels_last=True)
    x, sigma = torch.randn(4, 3, 8, 8), torch.tensor([0.1, 1.0, 5.0, 40.0])
    with torch.no_grad():
        ref, out = net(x, sigma), fast(x, sigma)
    assert out.dtype == torch.float32 and out.is_contiguous()
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 3e-2  # bfloat16 keeps 8 bits of mantissa: differs, by about 2^-8 per layer
    assert pfdist.hashing.fingerprint(fast) != pfdist.hashing.fingerprint(net)  # never shares a cache entry
    assert accelerate(net) is net and accelerate(net, Accel()) is net  # all off: the network itself


def test_bf16_pfd_is_close_to_float32(one_thread):
    torch.manual_seed(0)
    a, b = pfdist.build_network(UNET).eval(), pfdist.build_network({**UNET, "model_channels": 8}).eval()
    kw = dict(shape=(3, 8, 8), num_samples=6, steps=4, batch_size=3)
    ref = pfdist.pfd(a, b, **kw)
    fast = pfdist.pfd(accelerate(a, autocast="bf16"), accelerate(b, autocast="bf16"), **kw)
    assert abs(fast.value - ref.value) < 0.05 * ref.value


def test_bf16_training_runs_and_stays_near_float32(tmp_path, one_thread):
    data = torch.randn(16, 3, 8, 8)
    cfg = dict(batch_size=8, epochs=1, epoch_images=32, lr=1e-3, checkpoint_every=1)
    ref = pfdist.train(pfdist.build_network(UNET, seed=0), data, TrainConfig(**cfg), tmp_path / "f32")
    fast = pfdist.train(pfdist.build_network(UNET, seed=0), data, TrainConfig(**cfg, autocast="bf16", channels_last=True),
                        tmp_path / "bf16")
    assert abs(fast.history[0] - ref.history[0]) < 0.05 * ref.history[0]


def test_cuda_without_cuda_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for args in (["distance", str(EXAMPLES / "teacher.json"), str(EXAMPLES / "other.json"), "--device", "cuda"],
                 ["student", str(EXAMPLES / "teacher.json"), "-N", "8", "-o", str(tmp_path / "s"), "--device", "cuda"],
                 ["reproduce", "--preset", "quick", "-o", str(tmp_path / "r"), "--device", "cuda"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "CUDA is not available" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


def test_cli_autocast_flag_is_validated(tmp_path):
    r = CliRunner().invoke(app, ["distance", str(EXAMPLES / "teacher.json"), str(EXAMPLES / "other.json"),
                                 "--autocast", "fp8"])
    assert r.exit_code == 2 and "autocast must be one of ['bf16']" in r.output
