"""Training a denoiser with the EDM loss, Adam and an EMA of the weights, resumable bit-exactly.

Randomness of step ``s`` is a pure function of ``(seed, s)``: the noise levels and noise come
from a generator seeded by ``hash(seed, "noise", s)``, the batch is items ``[s B, (s + 1) B)``
of the data stream below, the learning rate and EMA decay are functions of ``s``. So a run
resumed from a checkpoint continues exactly as if it had never stopped. The initial weights are
those of the network passed in; pfdist's protocols build it with ``seed=config.init_seed``
(``hash(seed, "init")``).

Data stream. An endless concatenation of random permutations of ``range(N)``; each pass sees
every training item once. Passes are drawn in blocks of ``K = ceil(4096 / N)`` permutations,
block ``b`` being the row-wise argsort of a ``(K, N)`` uniform matrix from a generator seeded
by ``hash(seed, "order", b)`` (blocks keep tiny N cheap). A batch larger than N simply spans
several passes, so every item appears about equally often.

Epoch. An epoch is ``epoch_images`` training images (default 12 800, as in the presets)
rounded up to whole batches, ``ceil(epoch_images / batch_size)`` steps, whatever N is; the
paper does not define an epoch for small N, and a fixed count makes "epoch 100" the same amount
of optimisation for every N, in the API, the CLI and the presets alike. ``epoch_images=None``
opts into N rounded up to whole batches (the usual epoch); epochs then need not align with
passes of the stream.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import Tensor

from pfdist.accel import accelerate
from pfdist.errors import CheckpointError, NonFiniteError, PFDistError
from pfdist.hashing import content_hash
from pfdist.nets import EDMPrecond, NetSpec
from pfdist.training.checkpoint import has_checkpoint, load_checkpoint, restore_optimizer, save_checkpoint
from pfdist.training.loss import edm_loss
from pfdist.training.metrics import write_metrics

from pfdist.training.config import DROPOUT, NOISE, ORDER, TrainConfig, derive_seed, ema_beta, learning_rate


class DataOrder:
    """Batch indices of step ``s``: items ``[s B, (s + 1) B)`` of the data stream (module doc)."""

    def __init__(self, seed: int, n: int, device: torch.device | str | None = None):
        self.seed, self.n, self.device = seed, n, device
        self.passes_per_block = -(-4096 // n)
        self.block_len = self.passes_per_block * n
        self._blocks: dict[int, Tensor] = {}

    def block(self, b: int) -> Tensor:
        if b not in self._blocks:
            g = torch.Generator().manual_seed(derive_seed(self.seed, ORDER, b))
            keys = torch.rand(self.passes_per_block, self.n, generator=g, dtype=torch.float64)
            self._blocks = {k: v for k, v in self._blocks.items() if k >= b - 1}
            self._blocks[b] = keys.argsort(dim=1, stable=True).reshape(-1).to(self.device)
        return self._blocks[b]

    def indices(self, step: int, batch_size: int) -> Tensor:
        """(batch_size,) int64 indices into the data."""
        start, end, L = step * batch_size, (step + 1) * batch_size, self.block_len
        parts = [self.block(b)[max(start - b * L, 0): min(end - b * L, L)]
                 for b in range(start // L, (end - 1) // L + 1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class TrainState:
    """What changes during training: the network, its EMA, Adam and the step counter."""

    net: EDMPrecond
    ema: EDMPrecond
    optimizer: torch.optim.Optimizer
    order: DataOrder
    step: int = 0

    forward: Any = None  # the network as the loss calls it (pfdist.accel.accelerate)

    def __post_init__(self) -> None:
        # Cached once: walking the module tree every step costs more than a tiny network.
        self.params = list(self.net.parameters())
        self.ema_params = list(self.ema.parameters())
        self.dropout = bool(self.net.config and self.net.config.get("dropout", 0) > 0)


def make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.adam_betas,
                            eps=config.adam_eps, foreach=True)


def make_state(net: EDMPrecond, config: TrainConfig, n: int, device: torch.device | str) -> TrainState:
    """Fresh state: ``net`` (trained in place, moved to ``device``), EMA = copy of its weights, step 0."""
    net = config.accel.prepare(net.to(device).train())
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    return TrainState(net, ema, make_optimizer(net, config), DataOrder(config.seed, n, device),
                      forward=accelerate(net, config.accel))


def train_step(state: TrainState, data: Tensor, config: TrainConfig, total_steps: int) -> Tensor:
    """One step: EDM loss on batch ``state.step``, backward, (clip), Adam, EMA.

    data: (N, *shape). Returns the batch's mean loss, a 0-d tensor (no device sync).
    """
    s, net = state.step, state.net
    y = data[state.order.indices(s, config.batch_size)]
    generator = torch.Generator(device=data.device)
    generator.manual_seed(derive_seed(config.seed, NOISE, s))
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(config, s, total_steps)

    # Loss and gradient (dropout, if any, draws from the global RNG pinned to (seed, s)).
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices) if state.dropout else contextlib.nullcontext():
        if state.dropout:
            torch.manual_seed(derive_seed(config.seed, DROPOUT, s))
        loss = edm_loss(state.forward or net, y, generator=generator, sigma_data=net.sigma_data,
                        P_mean=config.P_mean, P_std=config.P_std).mean()
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    # Update.
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.params, config.grad_clip, foreach=True)
    state.optimizer.step()
    with torch.no_grad():
        weight = 1.0 - ema_beta(config, s)
        for ema_param, param in zip(state.ema_params, state.params):
            ema_param.lerp_(param, weight)
    state.step = s + 1
    return loss.detach()


class TrainResult(NamedTuple):
    """``denoiser``: the EMA network in eval mode; ``history[e - 1]``: mean train loss of epoch e;
    ``evaluations``: ``{"epoch": e, **callback's record}`` for every evaluated epoch, in order,
    including those done before a resume (they are saved with each checkpoint)."""

    denoiser: EDMPrecond
    history: list[float]
    evaluations: list[dict[str, Any]] = []


Callback = Callable[[int, EDMPrecond, dict[str, Any]], "dict[str, Any] | None"]


def _check_net(net: Any) -> EDMPrecond:
    if isinstance(net, (dict, NetSpec)):
        raise PFDistError("train takes the network itself, not its config: pass "
                          "build_network(net_config, seed=train_config.init_seed).")
    if not isinstance(net, EDMPrecond):
        config = getattr(net, "config", None)
        got = config.get("precond") if isinstance(config, dict) else type(net).__name__
        raise PFDistError(f"pfdist trains with EDM's loss, which needs a network of pfdist.build_network with precond "
                          f"'edm'; got {got!r}.")
    if not isinstance(net.config, dict):
        raise PFDistError("net has no config to store in its checkpoints; build it with pfdist.build_network.")
    return net


def _check_data(data: Any, net_config: dict) -> Tensor:
    if not isinstance(data, Tensor) or not data.is_floating_point():
        raise PFDistError(f"data must be a floating-point tensor (N, *shape); got {type(data).__name__}"
                          f"{'' if not isinstance(data, Tensor) else ' of ' + str(data.dtype)}.")
    shape = list(net_config["shape"])
    if data.ndim != len(shape) + 1 or list(data.shape[1:]) != shape or data.shape[0] < 1:
        raise PFDistError(f"data has shape {list(data.shape)} but the network expects (N, *{shape}) "
                          f"with N >= 1; reshape the data or build the network for the data's shape.")
    if not torch.isfinite(data).all():
        raise PFDistError("data contains NaN or Inf; clean the training set.")
    return data.to(torch.float32).contiguous()


def _check_resumable(saved: dict, wanted: dict, config: TrainConfig, out_dir: Path) -> None:
    fix = f"delete {out_dir} or pass the same config"
    if saved["net_config"] != wanted["net_config"]:
        raise CheckpointError(f"checkpoint in {out_dir} has net_config {saved['net_config']}, "
                              f"requested {wanted['net_config']}; {fix}.")
    a, b = saved["train_config"], wanted["train_config"]
    free = ("epochs", "checkpoint_every")
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in free)
    if differ:
        raise CheckpointError(
            f"checkpoint in {out_dir} differs in train_config {differ} (saved "
            f"{[a.get(k) for k in differ]}, requested {[b.get(k) for k in differ]}); {fix}.")
    if a.get("epochs") != b["epochs"] and config.lr_schedule != "constant":
        raise CheckpointError(f"checkpoint in {out_dir} was made for {a.get('epochs')} epochs and the "
                              f"{config.lr_schedule!r} schedule depends on it; {fix}.")
    if saved["data_hash"] != wanted["data_hash"]:
        raise CheckpointError(f"checkpoint in {out_dir} was trained on other data (hash mismatch); {fix}.")
    if saved["epoch"] > config.epochs:
        raise CheckpointError(f"checkpoint in {out_dir} is at epoch {saved['epoch']}, beyond the "
                              f"requested {config.epochs} epochs; {fix} with epochs >= {saved['epoch']}.")


def _resume(state: TrainState, out_dir: Path, info: dict, config: TrainConfig, evals: set[int],
            callback: Callback | None) -> tuple[int, list[float], list[dict[str, Any]]]:
    """Load ``out_dir``'s checkpoint into ``state``; returns (epoch, loss history, evaluations) to
    continue from, or a fresh start when the checkpoint lacks evaluations the callback asks for."""
    ckpt = load_checkpoint(out_dir)
    _check_resumable(ckpt.info, info, config, out_dir)
    saved = ckpt.info.get("evaluations", [])
    lost = sorted(e for e in evals if e <= ckpt.info["epoch"]) if callback is not None else []
    lost = [e for e in lost if e not in {r.get("epoch") for r in saved if isinstance(r, dict)}]
    if lost:
        import warnings

        warnings.warn(f"checkpoint in {out_dir} lacks the evaluations at epochs {lost}; training again "
                      "from the start so that the history is complete", RuntimeWarning, stacklevel=3)
        return 0, [], []
    state.net.load_state_dict(ckpt.net)
    state.ema.load_state_dict(ckpt.ema)
    restore_optimizer(state.optimizer, ckpt.optimizer_state)
    state.step = ckpt.info["step"]
    return ckpt.info["epoch"], list(ckpt.info["history"]), [r for r in saved if r.get("epoch") in evals]


def _train_epoch(state: TrainState, data: Tensor, config: TrainConfig, epoch: int, total_steps: int,
                 progress: Callable[[int, int, float], None] | None, out_dir: Path) -> float:
    """The steps of one epoch; returns its mean loss, or raises NonFiniteError (nothing saved)."""
    first, steps = state.step, config.steps_per_epoch(data.shape[0])
    losses = torch.empty(steps, device=data.device)
    for i in range(steps):
        losses[i] = train_step(state, data, config, total_steps)
        if progress is not None:
            progress(state.step, total_steps, float(losses[i]))
    finite = torch.isfinite(losses)
    weights_ok = all(bool(torch.isfinite(p).all()) for p in state.params)
    if not (finite.all() and weights_ok):
        bad = first + int((~finite).nonzero()[0, 0]) if not finite.all() else state.step - 1
        what = "loss" if not finite.all() else "weights"
        raise NonFiniteError(
            f"non-finite {what} at step {bad} (0-based, epoch {epoch}); training stopped "
            f"and the last good checkpoint in {out_dir} was kept. "
            f"Lower lr, add warmup_images or set grad_clip.")
    return float(losses.mean())


def train(
    net: EDMPrecond,
    data: Tensor,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    callback: Callback | None = None,
    epochs_to_eval: Iterable[int] = (),
    progress: Callable[[int, int, float], None] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``net`` on ``data: (N, *shape)`` (on data's device), in place; returns its EMA.

    ``net``: a network of :func:`pfdist.nets.build_network` with precond ``edm`` (its ``config``
    goes into the checkpoints); its weights are the initial ones, which pfdist's protocols draw
    with ``build_network(net_config, seed=config.init_seed)``.
    Checkpoints go to ``out_dir`` every ``checkpoint_every`` epochs and at the end; with
    ``resume`` an existing checkpoint of the same configs and data is continued (bit-identical
    to an uninterrupted run), with ``resume=False`` it is overwritten. ``callback(epoch,
    ema_denoiser, stats)`` runs after each epoch in ``epochs_to_eval`` (0 = before training;
    epochs already done by a resumed checkpoint are skipped); it must not modify the denoiser.
    ``progress(step, total_steps, loss)`` runs after every step. A non-finite loss or weight
    stops training with NonFiniteError; the last good checkpoint stays in ``out_dir``.
    """
    if not isinstance(config, TrainConfig):
        raise PFDistError(f"config must be a TrainConfig, got {type(config).__name__}.")
    net = _check_net(net)
    data, out_dir, evals = _check_data(data, net.config), Path(out_dir), {int(e) for e in epochs_to_eval}
    if any(not 0 <= e <= config.epochs for e in evals):
        raise PFDistError(f"epochs_to_eval must lie in [0, {config.epochs}]; got {sorted(evals)}.")
    steps_per_epoch = config.steps_per_epoch(data.shape[0])
    total_steps, epoch_images = config.epochs * steps_per_epoch, steps_per_epoch * config.batch_size
    info = {"net_config": net.config, "train_config": config.to_dict(), "data_hash": content_hash(data),
            "data_shape": list(data.shape), "steps_per_epoch": steps_per_epoch}
    state = make_state(net, config, data.shape[0], data.device)
    start, history, evaluations = 0, [], []
    if resume and has_checkpoint(out_dir):
        start, history, evaluations = _resume(state, out_dir, info, config, evals, callback)

    def evaluate(epoch: int) -> None:
        stats = {"epoch": epoch, "step": state.step, "images": state.step * config.batch_size,
                 "loss": history[epoch - 1] if epoch else math.nan}
        evaluations.append({**(callback(epoch, state.ema, stats) or {}), "epoch": epoch})

    if callback is not None and start == 0 and 0 in evals:
        evaluate(0)
    for epoch in range(start + 1, config.epochs + 1):
        history.append(_train_epoch(state, data, config, epoch, total_steps, progress, out_dir))
        if callback is not None and epoch in evals:  # before the checkpoint, which then holds it
            evaluate(epoch)
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            save_checkpoint(out_dir, net=state.net, ema=state.ema, optimizer=state.optimizer,
                            info={**info, "epoch": epoch, "step": state.step, "history": history,
                                  "evaluations": evaluations})
            write_metrics(out_dir, history, evaluations, epoch_images)
    if start == config.epochs or config.epochs == 0:
        write_metrics(out_dir, history, evaluations, epoch_images)
    return TrainResult(state.ema, history, evaluations)
