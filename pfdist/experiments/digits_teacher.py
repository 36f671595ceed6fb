"""The digits teacher: a U-Net trained on all 1 797 scikit-learn digits, shipped with pfdist.

``pfdist teacher digits`` runs :func:`train_digits_teacher` with the defaults below and
writes the weights and config that ship as ``pfdist:digits-unet``. Training is a pure function
of (net config, train config, data) — the trainer's randomness is keyed by the seed — so the
same command on the same torch build and thread count reproduces the weights bit for bit.

The teacher must generalize, not copy its training set: the report gives the share of its
samples whose nearest digit is closer than 1/3 of the second nearest (the copy share of the
protocol) next to the same share for the exact empirical flow of the digits (an ideal
copier, near 1), and a sample grid.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from pfdist.data import load_digits
from pfdist.data.digits import DIGITS_TEACHER
from pfdist.denoisers import EmpiricalDenoiser, nearest_neighbors
from pfdist.flows import FlowSettings, flow_outputs
from pfdist.hashing import content_hash
from pfdist.metric import pfd
from pfdist.nets import build_network, count_parameters
from pfdist.protocol.data import EVAL_SEED
from pfdist.protocol.evaluate import memorization_ratio
from pfdist.training import TrainConfig, save_denoiser, train

DIGITS_TEACHER_NET = {"arch": "songunet", "shape": [1, 8, 8], "model_channels": 8, "channel_mult": [1, 2],
                      "num_blocks": 2, "attn_resolutions": [], "dropout": 0.1, "sigma_data": 0.75}
EPOCH_IMAGES = 1797 * 8  # eight passes over the digits per reported epoch
DIGITS_TEACHER_TRAIN = TrainConfig(seed=0, batch_size=128, lr=2e-3, lr_schedule="onecycle", warmup_images=25_600,
                                   epochs=16, epoch_images=EPOCH_IMAGES, ema_halflife_images=50_000,
                                   ema_rampup_ratio=0.05, checkpoint_every=5)
COMMAND = "pfdist teacher digits"


def teacher_report(teacher: Callable, data: torch.Tensor, *, num_samples: int = 1000,
                   batch_size: int = 250) -> dict[str, Any]:
    """Copy share and PFD to the empirical flow of ``data`` for ``teacher``, with the ideal copier's
    values as reference, on evaluation seeds ``EVAL_SEED + (0..num_samples-1)``."""
    shape = tuple(data.shape[1:])
    kwargs = dict(shape=shape, num_samples=num_samples, seed=EVAL_SEED, flow=FlowSettings(),
                  batch_size=batch_size)
    copier = EmpiricalDenoiser(data)
    samples = flow_outputs(teacher, **kwargs)
    copies = flow_outputs(copier, **kwargs)
    nn_sample = nearest_neighbors(samples.values, data, k=1)[0][:, 0]
    nn_data = nearest_neighbors(data, data, k=2)[0][:, 1]  # leave-one-out
    e_mem = pfd(samples, copies, shape=shape, num_samples=num_samples, seed=EVAL_SEED, batch_size=batch_size)
    return {
        "num_samples": num_samples,
        "copy_share": memorization_ratio(samples.values, data),
        "ideal_copier_copy_share": memorization_ratio(copies.values, data),
        "e_mem": e_mem.to_dict(),
        "median_nn_distance": float(nn_sample.median()),
        "median_nn_distance_within_data": float(nn_data.median()),
        "grid": samples.values[:64],
    }


def train_digits_teacher(
    path: str | os.PathLike = DIGITS_TEACHER,
    *,
    net_config: dict = DIGITS_TEACHER_NET,
    train_config: TrainConfig = DIGITS_TEACHER_TRAIN,
    num_samples: int = 1000,
    work_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train the digits teacher and write ``path`` (.safetensors), its .json and a sample grid .png.

    ``work_dir`` keeps the training checkpoint (a rerun resumes from it); by default a
    temporary directory. Returns the report (also stored in the JSON's ``info``).
    """
    from pfdist.plots import plot_sample_grid

    path = Path(path)
    data = load_digits()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() if work_dir is None else contextlib.nullcontext(work_dir) as wd:
        result = train(build_network(net_config, seed=train_config.init_seed), data, train_config, wd, progress=progress)
    train_s = time.perf_counter() - t0
    teacher = result.denoiser.eval().requires_grad_(False)
    report = teacher_report(teacher, data, num_samples=num_samples)
    grid = report.pop("grid")
    report.update({
        "command": COMMAND, "data": "sklearn.datasets.load_digits, x / 8 - 1", "data_hash": content_hash(data),
        "params": count_parameters(teacher), "train_config": train_config.to_dict(),
        "final_epoch_train_loss": result.history[-1] if result.history else None,
        "train_s": train_s, "torch": torch.__version__, "threads": torch.get_num_threads(),
    })
    save_denoiser(path, teacher, info=report)
    plot_sample_grid(grid.numpy(), path.with_suffix(".png"))
    return report

