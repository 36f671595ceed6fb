"""Training: EDM loss oracle, determinism, bit-exact resume, checkpoints, errors."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

import pfdist.training.checkpoint as checkpoint_module
import pfdist.training.trainer as trainer_module
from pfdist.errors import CheckpointError, NonFiniteError, PFDistError
from pfdist.nets import build_network, normalize_config
from pfdist.training import (
    DataOrder,
    TrainConfig,
    edm_loss,
    learning_rate,
    load_checkpoint,
    load_denoiser,
    save_denoiser,
    train,
)

MLP = {"arch": "mlp", "shape": [3], "width": 16, "depth": 1, "sigma_data": 1.0}
TINY = TrainConfig(batch_size=4, lr=1e-3, epochs=4, epoch_images=8, checkpoint_every=1,
                   ema_halflife_images=16)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(0))


def fit(net_config, data, config, out_dir, **kwargs):
    """train() on a fresh network with the initial weights pfdist's protocols give it."""
    return train(build_network(net_config, seed=config.init_seed), data, config, out_dir, **kwargs)


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# EDM loss.


def expected_gaussian_loss(s: float, sigma_data: float, P_mean: float, P_std: float) -> float:
    """E_{ln sigma ~ N(P_mean, P_std^2)} lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2) (Gauss-Hermite).

    s^2 sigma^2 / (s^2 + sigma^2) is the posterior variance of y ~ N(mu, s^2) given y + sigma n.
    """
    z, w = np.polynomial.hermite_e.hermegauss(80)
    sigma = np.exp(P_mean + P_std * z)
    lam = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return float(np.sum(w * lam * s**2 * sigma**2 / (s**2 + sigma**2)) / np.sqrt(2 * np.pi))


@pytest.mark.parametrize("shape", [(1,), (3, 4)])
@pytest.mark.parametrize("s, sigma_data", [(0.5, 0.5), (1.0, 0.5), (0.3, 1.0)])
def test_edm_loss_of_exact_gaussian_denoiser(shape, s, sigma_data):
    mu = 0.7

    def exact(x, sigma):  # E[y | y + sigma n = x] for y ~ N(mu, s^2 I)
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return mu + s**2 / (s**2 + sigma**2) * (x - mu)

    g = torch.Generator().manual_seed(1)
    y = mu + s * torch.randn(100_000, *shape, generator=g, dtype=torch.float64)
    loss = edm_loss(exact, y, generator=g, sigma_data=sigma_data)
    assert loss.shape == (100_000,)
    want = expected_gaussian_loss(s, sigma_data, -1.2, 1.2)
    if s == sigma_data:
        assert want == pytest.approx(1.0, rel=1e-9)  # lambda cancels the posterior variance
    stderr = loss.std().item() / math.sqrt(loss.numel())
    assert abs(loss.mean().item() - want) < 4 * stderr


def test_edm_loss_randomness_is_the_generator_only():
    net = build_network(MLP, seed=0)
    y = torch.randn(5, 3)
    state = torch.get_rng_state()
    a = edm_loss(net, y, generator=torch.Generator().manual_seed(3), sigma_data=1.0)
    b = edm_loss(net, y, generator=torch.Generator().manual_seed(3), sigma_data=1.0)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)


# Config, schedule, data order.


def test_train_config_json_round_trip():
    config = TrainConfig(seed=3, lr_schedule="cosine", warmup_images=10, epoch_images=100,
                         adam_betas=(0.9, 0.99), grad_clip=1.0, ema_halflife_images=None)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(PFDistError, match=r"unknown TrainConfig keys \['lr_scheduel'\]"):
        TrainConfig.from_dict({"lr_scheduel": "cosine"})
    for bad in ({"lr_schedule": "step"}, {"batch_size": 0}, {"lr": -1.0}, {"adam_betas": (0.9, 1.0)}):
        with pytest.raises(PFDistError, match="TrainConfig"):
            TrainConfig(**bad)


def test_epoch_length():
    assert TrainConfig(batch_size=128, epoch_images=None).steps_per_epoch(1000) == 8  # N rounded up to batches
    assert TrainConfig(batch_size=128).steps_per_epoch(1000) == 100  # default: 12 800 images
    assert TrainConfig(batch_size=128, epoch_images=4096).steps_per_epoch(5) == 32
    assert TrainConfig(batch_size=128, epoch_images=4096).steps_per_epoch(65536) == 32


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_learning_rate_schedule(schedule):
    config = TrainConfig(lr=1.0, batch_size=10, warmup_images=100, lr_schedule=schedule)
    lrs = [learning_rate(config, s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(0 < lr <= 1 for lr in lrs)
    if schedule == "constant":
        assert lrs[-1] == 1.0
    else:
        assert lrs[-1] < 0.02 and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


@pytest.mark.parametrize("n, batch_size", [(1, 8), (5, 3), (7, 64), (5000, 128)])
def test_data_order_is_a_stream_of_permutations(n, batch_size):
    order = DataOrder(seed=2, n=n)
    steps = -(-3 * n // batch_size) + 1
    stream = torch.cat([order.indices(s, batch_size) for s in range(steps)])
    for p in range(3):  # every pass visits each item once
        assert torch.equal(stream[p * n : (p + 1) * n].sort().values, torch.arange(n))
    again = DataOrder(seed=2, n=n).indices(steps - 1, batch_size)  # a pure function of the step
    assert torch.equal(again, stream[(steps - 1) * batch_size :])
    if n > 1:
        assert not torch.equal(DataOrder(seed=3, n=n).indices(0, batch_size), stream[:batch_size])


# Training, resume, checkpoints.


def test_resume_after_kill_is_bit_identical(tmp_path, data):
    config = TrainConfig(**{**TINY.to_dict(), "lr_schedule": "cosine", "warmup_images": 8})
    full = fit(MLP, data, config, tmp_path / "full")

    class Killed(Exception):
        pass

    def kill(epoch, ema, stats):
        raise Killed

    with pytest.raises(Killed):
        fit(MLP, data, config, tmp_path / "cut", callback=kill, epochs_to_eval=[2])
    assert load_checkpoint(tmp_path / "cut").info["epoch"] == 1  # evaluations run before their epoch's checkpoint
    resumed = fit(MLP, data, config, tmp_path / "cut")
    assert resumed.history == full.history
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert_same_state(a.net, b.net)
    assert_same_state(a.ema, b.ema)
    for idx in a.optimizer_state:
        assert_same_state(a.optimizer_state[idx], b.optimizer_state[idx])
    assert_same_state(full.denoiser.state_dict(), resumed.denoiser.state_dict())


def test_more_epochs_continue_a_constant_schedule(tmp_path, data):
    full = fit(MLP, data, TINY, tmp_path / "full")
    fit(MLP, data, TrainConfig(**{**TINY.to_dict(), "epochs": 2}), tmp_path / "more")
    more = fit(MLP, data, TINY, tmp_path / "more")
    assert more.history == full.history
    assert_same_state(full.denoiser.state_dict(), more.denoiser.state_dict())
    again = fit(MLP, data, TINY, tmp_path / "more")  # already done: loads, trains nothing
    assert_same_state(full.denoiser.state_dict(), again.denoiser.state_dict())


def test_resume_with_dropout_unet_is_bit_identical(tmp_path):
    unet = {"arch": "songunet", "shape": [1, 8, 8], "model_channels": 4, "channel_mult": [1, 2],
            "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.2}
    images = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(batch_size=2, epochs=2, epoch_images=4, checkpoint_every=1)
    full = fit(unet, images, config, tmp_path / "full")
    fit(unet, images, TrainConfig(**{**config.to_dict(), "epochs": 1}), tmp_path / "cut")
    torch.manual_seed(123)  # the global RNG must not matter
    resumed = fit(unet, images, config, tmp_path / "cut")
    assert_same_state(full.denoiser.state_dict(), resumed.denoiser.state_dict())


def test_callbacks_progress_and_batch_larger_than_n(tmp_path):
    seen, steps = [], []
    one = torch.ones(1, 3)

    def callback(epoch, ema, stats):
        assert not ema.training and stats["epoch"] == epoch
        seen.append((epoch, stats["step"]))

    config = TrainConfig(batch_size=8, epochs=3, epoch_images=16, checkpoint_every=2)
    result = fit(MLP, one, config, tmp_path, callback=callback, epochs_to_eval=[0, 1, 3],
                   progress=lambda s, total, loss: steps.append((s, total)))
    assert seen == [(0, 0), (1, 2), (3, 6)]
    assert steps == [(s, 6) for s in range(1, 7)]
    assert len(result.history) == 3 and all(math.isfinite(h) for h in result.history)
    with pytest.raises(PFDistError, match="epochs_to_eval"):
        fit(MLP, one, config, tmp_path, epochs_to_eval=[4])


def test_mlp_learns_to_denoise_two_points(tmp_path):
    points = torch.tensor([[-1.0, 0.5], [1.0, -0.5]])
    config = TrainConfig(batch_size=64, lr=1e-2, epochs=4, epoch_images=6400, ema_halflife_images=1000)
    net = {"arch": "mlp", "shape": [2], "width": 64, "depth": 2, "sigma_data": 1.0}
    denoiser = fit(net, points, config, tmp_path).denoiser

    def optimal(x, sigma):  # the empirical-optimal denoiser (posterior mean over the two points)
        w = torch.softmax(-(x[:, None] - points[None]).square().sum(-1) / (2 * sigma**2), dim=1)
        return w @ points

    y = points.repeat(100, 1)
    for sigma in (0.2, 1.0):
        x = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            out = denoiser(x, sigma)
        assert (out - optimal(x, sigma)).norm(dim=1).mean() < 0.25 * sigma
        if sigma == 0.2:  # near-points are mapped onto their point (identity would be ~1.25 sigma off)
            assert (out - y).norm(dim=1).mean() < 0.25 * sigma


def test_train_takes_the_module_and_stores_its_config(tmp_path, data):
    net = build_network(MLP, seed=7)
    twin = copy.deepcopy(net)
    result = train(net, data, TINY, tmp_path / "a")
    assert load_checkpoint(tmp_path / "a").info["net_config"] == normalize_config(MLP) == net.config
    assert_same_state(load_checkpoint(tmp_path / "a").net, net.state_dict())  # trained in place; the EMA returned
    assert_same_state(train(twin, data, TINY, tmp_path / "b").denoiser.state_dict(), result.denoiser.state_dict())
    other = train(build_network(MLP, seed=8), data, TINY, tmp_path / "c")  # initial weights are the caller's
    assert other.history != result.history
    with pytest.raises(PFDistError, match=r"not its config: pass build_network\(net_config"):
        train(MLP, data, TINY, tmp_path / "d")
    with pytest.raises(PFDistError, match="precond 'edm'; got 'vp'"):
        train(build_network({"arch": "mlp", "shape": [3], "precond": "vp"}), data, TINY, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_checkpoint_and_denoiser_round_trip(tmp_path, data):
    result = fit(MLP, data, TINY, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.info["epoch"] == 4 and ckpt.info["step"] == 8 and ckpt.info["history"] == result.history
    assert_same_state(ckpt.ema, result.denoiser.state_dict())
    assert set(ckpt.optimizer_state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    path = save_denoiser(tmp_path / "student.safetensors", result.denoiser, info={"n": 6})
    loaded = load_denoiser(path)
    assert_same_state(loaded.state_dict(), result.denoiser.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(loaded(x, 0.3), result.denoiser(x, 0.3))
    assert json.loads(path.with_suffix(".json").read_text())["info"] == {"n": 6}


def test_crash_between_tensors_and_json_keeps_the_old_pair(tmp_path, data, monkeypatch):
    fit(MLP, data, TrainConfig(**{**TINY.to_dict(), "epochs": 1}), tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(MLP, data, TINY, tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).info["epoch"] == 1
    assert fit(MLP, data, TINY, tmp_path).history == fit(MLP, data, TINY, tmp_path / "b").history


# Errors.


def test_checkpoint_errors(tmp_path, data):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "empty")
    run = tmp_path / "run"
    fit(MLP, data, TrainConfig(**{**TINY.to_dict(), "epochs": 1}), run)
    tensors = run / load_checkpoint(run).info["tensors_file"]
    good = tensors.read_bytes()

    tensors.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        fit(MLP, data, TINY, run)
    tensors.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(run)
    tensors.write_bytes(good)

    json_path = run / "checkpoint.json"
    text = json_path.read_text()
    json_path.write_text(text[:20])
    with pytest.raises(CheckpointError, match="corrupt.*delete"):
        fit(MLP, data, TINY, run)
    json_path.write_text(text)

    mismatches = [
        ({**MLP, "width": 32}, data, TINY, "net_config"),
        (MLP, data, TrainConfig(**{**TINY.to_dict(), "lr": 2e-3}), r"train_config \['lr'\]"),
        (MLP, data + 1, TINY, "other data"),
        (MLP, data, TrainConfig(**{**TINY.to_dict(), "lr_schedule": "cosine"}), "lr_schedule"),
        (MLP, data, TrainConfig(**{**TINY.to_dict(), "epochs": 0}), "beyond"),
    ]
    for net_config, d, config, match in mismatches:
        with pytest.raises(CheckpointError, match=f"{match}.*delete .* or pass the same config"):
            fit(net_config, d, config, run)
    fit(MLP, data, TINY, run, resume=False)  # starting over is always possible


def test_denoiser_file_errors(tmp_path):
    net = build_network(MLP)
    with pytest.raises(PFDistError, match="build_network"):
        save_denoiser(tmp_path / "a.safetensors", build_network(MLP).model)
    with pytest.raises(PFDistError, match=".safetensors"):
        save_denoiser(tmp_path / "a.pt", net)
    path = save_denoiser(tmp_path / "a.safetensors", net)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_denoiser(path)
    with pytest.raises(CheckpointError, match="no denoiser config"):
        load_denoiser(tmp_path / "b.safetensors")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, data, monkeypatch):
    calls = []

    def poisoned(net, y, **kwargs):
        calls.append(1)
        loss = checkpoint_module_edm_loss(net, y, **kwargs)
        return loss * math.nan if len(calls) == 4 else loss

    checkpoint_module_edm_loss = trainer_module.edm_loss
    monkeypatch.setattr(trainer_module, "edm_loss", poisoned)
    with pytest.raises(NonFiniteError, match=r"step 3 \(0-based, epoch 2\).*last good checkpoint"):
        fit(MLP, data, TINY, tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.info["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt.net.values())


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(4, 2), r"shape \[4, 2\].*\(N, \*\[3\]\)"),
        (torch.zeros(0, 3), "N >= 1"),
        (torch.zeros(4, 3, dtype=torch.int64), "floating-point"),
        (torch.tensor([[0.0, math.nan, 0.0]]), "NaN"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, bad, match):
    with pytest.raises(PFDistError, match=match):
        fit(MLP, bad, TINY, tmp_path)
    with pytest.raises(PFDistError, match="TrainConfig"):
        train(build_network(MLP), torch.zeros(4, 3), TINY.to_dict(), tmp_path)
