"""Diffusion distillation: a few-step student fitted to its teacher's map on N pairs.

``distill(teacher, method=..., steps=..., num_pairs=N)`` draws the N pairs
``(x_T^i, Phi_teacher(x_T^i))`` on the seeds of training set ``dataset`` (``dataset_seeds``: set 0
is seeds 0..N-1, disjoint from the evaluation seeds 100 000+ and the test seeds 200 000+), trains
a student (:mod:`pfdist.protocol.few_step`) and returns its map, a ``generator`` with
``nfe = steps``. The N teacher outputs are the student's training set, so E_mem is the PFD to the
empirical flow of those outputs (``EmpiricalDenoiser(distill_pairs(...)[1])``), as for a student
trained on teacher samples.

- ``"regression"``: MSE between the student's ``steps``-step map at x_T^i and the teacher's
  output y^i, trained end to end through all its steps (Luhman & Luhman 2021).
- ``"consistency"``: consistency distillation (Song et al. 2023, Algorithm 2, L2 metric): on
  the teacher's grid sigma_0 > ... > sigma_{K-1} = sigma_min with the student's levels merged in
  (so the levels it is applied at are trained, a segment's ends included), x = y + sigma_n z for a training
  output y, one Heun step of the teacher's PF-ODE to sigma' = max(sigma_{n+1}, s), s the lower
  end of sigma_n's segment (``multistep="segments"``, Heek et al. 2024: the next student level
  below sigma_n, or sigma_min; the other choices train one segment, s = sigma_min), and the loss
  ``|f_theta(x, sigma_n; s) - f_target(x_hat, sigma'; s)|^2`` (at sigma' = s the target is x_hat
  itself: a step that reaches the segment's end is the teacher's own); the target is an EMA of theta with
  decay ``TARGET_DECAY`` (0.95, their CIFAR-10 value), kept as the checkpoint's ``ema``; the
  student is theta. The train config's EMA settings apply to the other methods only.
- ``"progressive"`` (Salimans & Ho 2022, in sigma with x-prediction): from the largest
  ``steps * 2^R`` <= the teacher's grid, R rounds each halve the steps on nested levels (every
  other level of the previous round's). In a round, x = y + sigma_j z at an even level j; two DDIM
  steps of the previous sampler (round 1: the teacher's denoiser) go to sigma_{j+2}; the student
  D_theta(x, sigma_j) is fitted to the denoised value whose single DDIM step lands there. Each
  round starts from the previous student's weights and trains with ``train``; its checkpoints
  go to ``out_dir/round-<r>``.

Randomness of step s (batch, noise levels, noise) is a pure function of (seed, s), as in
:mod:`pfdist.training.trainer`; checkpoints use its format, so a killed run resumes bit-exactly.
The student is saved as ``out_dir/student.safetensors`` with its JSON (``load_distilled``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import CheckpointError, NonFiniteError, PFDistError
from pfdist.hashing import content_hash, fingerprint
from pfdist.maps import GeneratorMap, ODEMap, generator, ode_map
from pfdist.nets import EDMPrecond, NetSpec
from pfdist.noise import noise
from pfdist.protocol.data import dataset_seeds
from pfdist.protocol.few_step import METHODS, MULTISTEP, FewStepStudent, consistency_function, student_sigmas
from pfdist.settings import FlowSettings
from pfdist.training import (DataOrder, TrainConfig, derive_seed, ema_beta, has_checkpoint, learning_rate,
                             load_checkpoint, load_denoiser, make_optimizer, save_checkpoint, save_denoiser)
from pfdist.training.checkpoint import restore_optimizer

TARGET_DECAY = 0.95
STUDENT_NET = {"arch": "mlp", "width": 128, "depth": 2}  # the student network when ``net`` names no arch
STUDENT_FILE = "student.safetensors"


@dataclasses.dataclass(frozen=True)
class _Plan:
    teacher: ODEMap | GeneratorMap
    flow: FlowSettings  # the teacher's grid (a generator's: EDM's levels on its sigma_max)
    shape: tuple[int, ...]
    net: NetSpec  # the student's network
    config: TrainConfig


def _plan(teacher: Any, method: Any, steps: Any, num_pairs: Any, net: dict | None, train: Any, seed: Any) -> _Plan:
    """Every check, before any teacher call or training (one PFDistError naming what to change)."""
    if method not in METHODS:
        raise PFDistError(f"unknown distillation method {method!r}; choose one of {list(METHODS)}.")
    if isinstance(teacher, GeneratorMap) and method != "regression":
        raise PFDistError(f"{method} distillation needs the teacher's PF-ODE between noise levels; the teacher is "
                          "a generator (a map with no ODE). Pass a denoiser or pfdist.ode_map(denoiser, flow).")
    if not isinstance(teacher, (ODEMap, GeneratorMap)):
        teacher = ode_map(teacher)  # refuses what is not a denoiser
    if teacher.decoder is not None or teacher.label_dim:
        raise PFDistError("distillation supports unconditional teachers without a decoder; this teacher has "
                          f"{'a decoder' if teacher.decoder is not None else 'class labels'}.")
    if isinstance(teacher, ODEMap):
        flow = teacher.flow.clamped(*teacher.sigma_range)
        grid = flow.steps
    else:
        flow, grid = FlowSettings(sigma_max=teacher.sigma_max), max(1, int(teacher.nfe))
    checks.integer("steps", steps, lo=1, hi=grid, fix=f"the teacher's grid has {grid} steps")
    if method == "progressive":
        _rounds(int(steps), grid)
    checks.integer("num_pairs", num_pairs, lo=1)
    dataset_seeds(int(num_pairs))  # refuses N beyond the seed stream
    checks.integer("seed", seed, lo=0)
    if not isinstance(train, TrainConfig):
        raise PFDistError(f"train must be a pfdist.TrainConfig (got {type(train).__name__}).")
    shape = teacher.noise_shape or (tuple(net["shape"]) if isinstance(net, dict) and "shape" in net else None)
    if shape is None:
        raise PFDistError("the teacher does not say its data shape; give net={'arch': ..., 'shape': [...]}.")
    if net is not None and not isinstance(net, dict):
        raise PFDistError(f"net must be a network config dict (got {type(net).__name__}).")
    default = STUDENT_NET if not net or "arch" not in net else {}
    spec = NetSpec({**default, "shape": list(shape), **(net or {})})
    net_config = spec.config
    if spec.shape != tuple(shape) or net_config["precond"] != "edm" or net_config.get("label_dim"):
        raise PFDistError(f"the student network must be unconditional with precond 'edm' and shape {list(shape)} "
                          f"(the teacher's); got {net_config}.")
    return _Plan(teacher, flow, tuple(shape), spec, dataclasses.replace(train, seed=int(seed)))


def check_distill(teacher: Any, *, method: str, steps: int, num_pairs: int, net: dict | None = None,
                  train: TrainConfig = TrainConfig(), seed: int = 0) -> None:
    """Refuse now what :func:`distill` with these settings would refuse; runs nothing, writes nothing."""
    _plan(teacher, method, steps, num_pairs, net, train, seed)


def distill_pairs(teacher: Any, num_pairs: int, *, dataset: int = 0, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """The N training pairs ``(x_T, Phi_teacher(x_T))``, each ``(N, *shape)`` float32 on the CPU.

    x_T is the noise of seeds ``dataset_seeds(N, dataset)`` at the teacher's T; the outputs are
    the student's training set (the points of its empirical flow, for E_mem).
    """
    plan = _plan(teacher, "regression", 1, num_pairs, None, TrainConfig(), 0)
    x_T = noise(dataset_seeds(int(num_pairs), dataset), plan.shape, plan.flow.sigma_max)
    flow = plan.flow if isinstance(plan.teacher, ODEMap) else None
    with torch.no_grad():
        y = torch.cat([plan.teacher.run(x, None, flow, name="teacher")[0].float().cpu()
                       for x in x_T.split(batch_size)])
    if not torch.isfinite(y).all():
        raise PFDistError("the teacher's outputs contain NaN or Inf; check the teacher.")
    return x_T, y


def _heun_step(denoiser: Callable, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One Heun step of the PF-ODE dx/dsigma = (x - D(x, sigma)) / sigma; sigma: (batch, 1, ...)."""
    d = (x - denoiser(x, sigma.reshape(-1))) / sigma
    x_euler = x + (sigma_next - sigma) * d
    d_next = (x_euler - denoiser(x_euler, sigma_next.reshape(-1))) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


def _ddim_step(denoiser: Callable, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One Euler (DDIM) step of the PF-ODE from sigma to sigma_next; sigma: (batch, 1, ...)."""
    denoised = denoiser(x, sigma.reshape(-1))
    return denoised + sigma_next / sigma * (x - denoised)


def _progressive_loss(student: FewStepStudent, teacher: Any, grid: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
    """Salimans & Ho (2022), Algorithm 2 in sigma: one student step matches two teacher steps.

    ``grid``: the teacher's levels of this round, 0 last, an even number of steps.
    """
    j = 2 * torch.randint(0, (len(grid) - 1) // 2, (len(y),), generator=g)
    z = torch.randn(y.shape, generator=g).to(y)
    view = (-1,) + (1,) * (y.ndim - 1)
    sigma, sigma_mid, sigma_next = (grid[j + k].to(y).reshape(view) for k in range(3))
    x = y + sigma * z
    with torch.no_grad():
        x_next = _ddim_step(teacher, _ddim_step(teacher, x, sigma, sigma_mid), sigma_mid, sigma_next)
        wanted = (x_next - sigma_next / sigma * x) / (1 - sigma_next / sigma)  # the D that lands there in one step
    return (student.net(x, sigma.reshape(-1)) - wanted).square().flatten(1).mean(1).mean()


def _loss(method: str, student: FewStepStudent, target: EDMPrecond, teacher: Any, grid: Tensor,
          x_T: Tensor, y: Tensor, g: torch.Generator) -> Tensor:
    """The batch's mean loss (module doc); ``grid``: the teacher's levels (consistency: sigma_min last;
    progressive: this round's, 0 last)."""
    if method == "regression":
        return (student(x_T) - y).square().flatten(1).mean(1).mean()
    if method == "progressive":
        return _progressive_loss(student, teacher, grid, y, g)
    n = torch.randint(0, len(grid) - 1, (len(y),), generator=g)
    z = torch.randn(y.shape, generator=g).to(y)
    view = (-1,) + (1,) * (y.ndim - 1)
    floor = student.floors(grid[n])
    sigma, sigma_next = grid[n].to(y).reshape(view), torch.maximum(grid[n + 1], floor).to(y).reshape(view)
    floor = floor.to(y)
    x = y + sigma * z
    with torch.no_grad():
        x_hat = _heun_step(teacher, x, sigma, sigma_next)
        wanted = consistency_function(target, x_hat, sigma_next.reshape(-1), student.sigma_min, floor)
    guess = consistency_function(student.net, x, sigma.reshape(-1), student.sigma_min, floor)
    return (guess - wanted).square().flatten(1).mean(1).mean()


def _step(student: FewStepStudent, target: EDMPrecond, optimizer: torch.optim.Optimizer, plan: _Plan,
          pairs: tuple[Tensor, Tensor], order: DataOrder, step: int, per_epoch: int, teacher: Any,
          grid: Tensor) -> Tensor:
    """Training step ``step``: loss on its batch, Adam, then the EMA (regression) or target (consistency)."""
    config, method = plan.config, student.method
    idx = order.indices(step, config.batch_size)
    g = torch.Generator().manual_seed(derive_seed(config.seed, "noise", step))
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step, config.epochs * per_epoch)
    loss = _loss(method, student, target, teacher, grid, pairs[0][idx], pairs[1][idx], g)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = list(student.net.parameters())
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    beta = TARGET_DECAY if method == "consistency" else ema_beta(config, step)
    with torch.no_grad():
        for t, p in zip(target.parameters(), params):
            t.lerp_(p, 1.0 - beta)
    return loss.detach()


def _resume(out_dir: Path, key: dict, config: TrainConfig, parts: tuple) -> tuple[int, int, list[float]]:
    """(step, epoch, history) of the checkpoint in ``out_dir`` loaded into ``parts``; (0, 0, []) if none."""
    if not has_checkpoint(out_dir):
        return 0, 0, []
    ckpt = load_checkpoint(out_dir)
    fix = f"delete {out_dir} or distill with the same settings"
    saved = ckpt.info.get("distill")
    if isinstance(saved, dict) and "init" in key and {**saved, "init": key["init"]} == key and saved != key:
        return 0, 0, []  # a progressive round made from another previous round (other epochs): start it again
    if saved != key:
        raise CheckpointError(f"the checkpoint in {out_dir} is of another distillation (teacher, method, steps, "
                              f"pairs, network or training settings differ); {fix}.")
    if ckpt.info["epoch"] > config.epochs:
        raise CheckpointError(f"the checkpoint in {out_dir} is at epoch {ckpt.info['epoch']}, beyond the requested "
                              f"{config.epochs}; {fix} with epochs >= {ckpt.info['epoch']}.")
    net, target, optimizer = parts
    net.load_state_dict(ckpt.net)
    target.load_state_dict(ckpt.ema)
    restore_optimizer(optimizer, ckpt.optimizer_state)
    return ckpt.info["step"], ckpt.info["epoch"], list(ckpt.info["history"])


def _grid(flow: FlowSettings, levels: list[float]) -> Tensor:
    """The teacher's levels (sigma_min last) with the student's merged in, descending: consistency
    training then steps onto every level the student is applied at (a segment's ends included)."""
    grid = flow.sigmas()[:-1]
    merged = torch.cat([grid, torch.tensor(levels, dtype=grid.dtype)]).unique()  # ascending, no repeats
    keep = torch.cat([merged[:-1][merged[1:] - merged[:-1] > 1e-9 * merged[1:]], merged[-1:]])  # close twins once
    return keep.flip(0)


def _rounds(steps: int, grid: int) -> int:
    """Rounds of halving from the largest ``steps * 2^R`` <= the teacher's grid down to ``steps``."""
    rounds = (grid // steps).bit_length() - 1
    if rounds < 1:
        raise PFDistError(f"progressive distillation halves the steps from the teacher's grid ({grid} steps), so "
                          f"steps must be at most {grid // 2} (got {steps}); use a finer teacher grid.")
    return rounds


def _fit(plan: _Plan, method: str, levels: list[float], pairs: tuple[Tensor, Tensor], key: dict, out: Path | None,
         teacher: Any, grid: Tensor, init: EDMPrecond | None = None, multistep: str = "segments",
         progress: Callable[[int, int, float], None] | None = None) -> tuple[EDMPrecond, list[float]]:
    """Train one student (resuming from ``out``'s checkpoint); returns its final network and loss history.
    ``progress(step, total, loss)`` is called after each training step."""
    config, n = plan.config, len(pairs[0])
    model = plan.net.build(seed=config.init_seed).train()
    if init is not None:  # a progressive round starts from the previous round's student
        model.load_state_dict(init.state_dict())
    target = copy.deepcopy(model).eval().requires_grad_(False)
    student = FewStepStudent(model, method, levels, plan.flow.sigma_min, multistep)
    optimizer, order = make_optimizer(model, config), DataOrder(config.seed, n)
    step, start, history = (0, 0, []) if out is None else _resume(out, key, config, (model, target, optimizer))
    per_epoch, params = config.steps_per_epoch(n), list(model.parameters())
    for epoch in range(start + 1, config.epochs + 1):
        losses = torch.empty(per_epoch)
        for i in range(per_epoch):
            losses[i] = _step(student, target, optimizer, plan, pairs, order, step, per_epoch, teacher, grid)
            step += 1
            if progress is not None:
                progress(step, config.epochs * per_epoch, float(losses[i]))
        if not (torch.isfinite(losses).all() and all(bool(torch.isfinite(p).all()) for p in params)):
            raise NonFiniteError(f"non-finite loss or weights in epoch {epoch}; distillation stopped (the last good "
                                 "checkpoint is kept). Lower lr or set grad_clip.")
        history.append(float(losses.mean()))
        if out is not None and (epoch % config.checkpoint_every == 0 or epoch == config.epochs):
            save_checkpoint(out, net=model, ema=target, optimizer=optimizer,
                            info={"distill": key, "net_config": plan.net.config, "train_config": config.to_dict(),
                                  "data_hash": key["pairs"], "epoch": epoch, "step": step, "history": history})
    return (model if method == "consistency" else target).eval().requires_grad_(False), history


def distill(teacher: Any, *, method: str, steps: int, num_pairs: int, net: dict | None = None,
            train: TrainConfig = TrainConfig(), seed: int = 0, dataset: int = 0, multistep: str = "segments",
            out_dir: str | os.PathLike | None = None,
            progress: Callable[[int, int, float], None] | None = None) -> GeneratorMap:
    """A ``steps``-step student of ``teacher`` distilled on ``num_pairs`` pairs (module doc).

    teacher: a denoiser (its PF-ODE map on EDM's grid), ``pfdist.ode_map(denoiser, flow)``, or a
    ``pfdist.generator`` (regression only; the other methods need the teacher's denoiser).
    ``net``: the student's network config (default an MLP, width 128, depth 2, on the teacher's
    shape); ``train``: optimisation settings (for each progressive round), whose seed is replaced
    by ``seed``; ``dataset``: which training set's seeds (``dataset_seeds``); ``multistep``: how a
    consistency student with several steps goes from level to level (``"segments"``, ``"ddim"`` or
    ``"fresh"``: :mod:`pfdist.protocol.few_step`; the other methods take only the default). With ``out_dir``
    checkpoints go there and a run of the same settings resumes from them; the student is saved
    as ``out_dir/student.safetensors``. ``progress(step, total, loss)`` is called after each
    training step (progressive: steps counted over all rounds). Returns ``generator(student, nfe=steps, sigma_max=T)``.
    """
    plan = _plan(teacher, method, steps, num_pairs, net, train, seed)
    if multistep not in MULTISTEP:
        raise PFDistError(f"multistep must be one of {list(MULTISTEP)} (got {multistep!r}); see "
                          "pfdist.protocol.few_step.")
    if method != "consistency" and multistep != "segments":
        raise PFDistError(f"multistep={multistep!r} applies to consistency distillation only; leave it unset for "
                          f"{method}.")
    dataset_seeds(int(num_pairs), dataset)  # refuses a bad dataset index before the teacher runs
    config, n = plan.config, int(num_pairs)
    x_T, y = distill_pairs(plan.teacher, n, dataset=dataset)
    flow, pairs = plan.flow, (x_T, y)
    free = {k: v for k, v in config.to_dict().items() if k not in ("epochs", "checkpoint_every")}
    key = {"method": method, "steps": int(steps), "num_pairs": n, "dataset": dataset, "net_config": plan.net.config,
           "train_config": free, "teacher": fingerprint(plan.teacher), "pairs": content_hash(x_T, y)}
    if method == "consistency" and int(steps) > 1:
        key["multistep"] = multistep  # segments train differently from one segment
    out = None if out_dir is None else Path(out_dir)
    denoiser = getattr(plan.teacher, "denoiser", None)
    if method != "progressive":
        levels = student_sigmas(int(steps), sigma_min=flow.sigma_min, sigma_max=flow.sigma_max, rho=flow.rho)
        final, history = _fit(plan, method, levels, pairs, key, out, denoiser, _grid(flow, levels), progress=progress,
                              multistep=multistep)
    else:
        rounds = _rounds(int(steps), flow.steps)
        base = student_sigmas(int(steps) << rounds, sigma_min=flow.sigma_min, sigma_max=flow.sigma_max,
                              rho=flow.rho) + [0.0]
        final = None
        for r in range(1, rounds + 1):  # round r: steps * 2^(R-r+1) steps -> half as many
            levels = base[:: 1 << r][:-1]
            init = None if final is None else content_hash(*final.state_dict().values())
            tick = None if progress is None else _round_progress(progress, r, rounds)
            final, history = _fit(plan, method, levels, pairs, {**key, "round": r, "init": init},
                                  None if out is None else out / f"round-{r}", denoiser if final is None else final,
                                  torch.tensor(base[:: 1 << (r - 1)], dtype=torch.float64), init=final, progress=tick)
    meta = {"method": method, "multistep": multistep, "sigmas": levels, "sigma_min": plan.flow.sigma_min, "num_pairs": n,
            "dataset": dataset, "seed": config.seed, "history": history, "teacher": key["teacher"]}
    if out is not None:
        save_denoiser(out / STUDENT_FILE, final, info={"distill": meta})
    return _as_map(FewStepStudent(final, method, levels, plan.flow.sigma_min, multistep))


def _round_progress(progress: Callable[[int, int, float], None], r: int, rounds: int) -> Callable:
    """Round ``r``'s steps as steps of all ``rounds`` (each round trains the same number of steps)."""
    return lambda step, total, loss: progress((r - 1) * total + step, rounds * total, loss)


def _as_map(student: FewStepStudent) -> GeneratorMap:
    return generator(student, sigma_max=student.sigmas[0], nfe=student.nfe, shape=student.shape)


def load_distilled(path: str | os.PathLike, *, device: torch.device | str | None = None) -> GeneratorMap:
    """The map of a student saved by :func:`distill` (``out_dir/student.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        path = path / STUDENT_FILE
    net = load_denoiser(path, device=device, fix=f"distill the student again or check the path {path}")
    record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    info = record.get("info")
    meta = info.get("distill") if isinstance(info, dict) else None
    if isinstance(meta, dict) and "multistep" not in meta and "renoise" in meta:
        meta = {**meta, "multistep": meta["renoise"]}  # pfdist <= 0.1's record: one segment, re-noised as named
    ok = (isinstance(meta, dict) and meta.get("method") in METHODS and meta.get("multistep") in MULTISTEP
          and isinstance(meta.get("sigmas"), list) and len(meta["sigmas"]) >= 1)
    numbers_ok = ok and all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
                            for s in meta["sigmas"] + [meta.get("sigma_min")])
    if not numbers_ok:
        raise CheckpointError(f"{path} is not a distilled student (its JSON has no valid 'distill' record); load it "
                              "with pfdist.load_denoiser, or distill it again.")
    return _as_map(FewStepStudent(net, meta["method"], meta["sigmas"], meta["sigma_min"], meta["multistep"]))
