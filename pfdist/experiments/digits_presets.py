"""The image setting at CPU scale: the shipped digits teacher and EDM U-Net students on 1x8x8.

Teacher: ``pfdist:digits-unet`` (a SongUNet trained on all 1 797 scikit-learn digits by
``pfdist teacher digits``). Students: EDM-preconditioned DDPM++ SongUNets with channel_mult
[1, 2] and 2 blocks at several widths, plus an MLP family as an architecture control. Real vs
synthetic compares students trained on N real digits with students trained on N teacher
samples. Sizing notes are in docs/digits.md; ``digits-distill``'s in docs/distillation.md.
"""

from __future__ import annotations

from pfdist.experiments.config import Preset
from pfdist.experiments.studies import BiasVarianceStudy, Dynamics, Metrics, RealVsSynthetic, Scaling, Student
from pfdist.experiments.studies.distill import Distill, Epochs, Spread, StepsSweep
from pfdist.experiments.spaces import SPACES
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig, recipes

TEACHER = "pfdist:digits-unet"
SIGMA_DATA = 0.75  # pixel standard deviation of the digits in [-1, 1]
BATCH = 128
EPOCH_IMAGES = 100 * BATCH  # an "epoch" is 12 800 images (100 steps) whatever N is


def unet(model_channels: int) -> Student:
    """DDPM++ SongUNet on 1x8x8: levels 8x8 and 4x4 (channel_mult [1, 2]), 2 blocks, no attention."""
    return Student(f"unet-{model_channels}", {
        "arch": "songunet", "model_channels": model_channels, "channel_mult": [1, 2], "num_blocks": 2,
        "attn_resolutions": [], "dropout": 0.0, "precond": "edm", "sigma_data": SIGMA_DATA})


def mlp(width: int) -> Student:
    return Student(f"mlp-w{width}", {"arch": "mlp", "width": width, "depth": 3, "sigma_data": SIGMA_DATA})


def onecycle(epochs: int, lr: float = 2e-3) -> TrainConfig:
    """Runs that finish trained: one-cycle lr, EMA half-life 5% of training."""
    return recipes.onecycle(epochs, lr, batch=BATCH, epoch_images=EPOCH_IMAGES, checkpoint_every=5)


def constant(epochs: int, lr: float = 1e-3) -> TrainConfig:
    """Training dynamics: constant lr after a 100-step warm-up, EMA half-life half an epoch."""
    return recipes.constant(epochs, lr, batch=BATCH, epoch_images=EPOCH_IMAGES, warmup_steps=100,
                            ema_halflife_epochs=0.5, checkpoint_every=5)


def digits(teacher: str = TEACHER) -> Preset:
    """1 hour on 2 CPU cores (59 min 50 s measured, 6 843 CPU-seconds; docs/digits.md): a one-octave N grid over the U-Nets' transitions, bias-variance with
    per-student seeds and K = 4 at three N, the paper's baselines on the scaling students."""
    unets = (unet(4), unet(8), unet(12), unet(24))  # 16 k .. 554 k parameters (34x)
    train = onecycle(10)
    return Preset(
        name="digits",
        teacher=teacher,
        eval=EvalConfig(num_samples=500, test_samples=1000, loss_repeats=2, batch_size=500),
        scaling=Scaling(tuple(2**k for k in range(4, 13)), (*unets, mlp(256)), train),
        dynamics=Dynamics((2**6, 2**12), unet(8), constant(16), (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16),
                          seeds=(0, 1, 2)),
        bias_variance=BiasVarianceStudy((2**5, 2**8, 2**11), (unet(4), unet(12)), train, k=4, seeds="per_student"),
        real_vs_synthetic=RealVsSynthetic((2**4, 2**6, 2**8), (unet(8),), train, "digits"),
        metrics=Metrics(),
        workers=2,
        notes="<= 2 hours on 2 CPU cores: U-Net students on the digits teacher, a subset of digits-full.",
        descriptors=SPACES,
    )


def digits_full(teacher: str = TEACHER) -> Preset:
    """The complete grid of the digits setting, for a GPU or a night of CPU."""
    unets = tuple(unet(c) for c in (4, 8, 12, 16, 24, 32))  # 16 k .. 0.98 M parameters (61x)
    train = onecycle(40)
    return Preset(
        name="digits-full",
        teacher=teacher,
        eval=EvalConfig(num_samples=2000, test_samples=2000, loss_repeats=2, batch_size=500),
        scaling=Scaling(tuple(2**k for k in range(3, 15)), (*unets, mlp(128), mlp(256), mlp(512)), train),
        dynamics=Dynamics((2**6, 2**10, 2**14), unet(16), constant(100),
                          (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 72, 80, 90, 100),
                          seeds=(0, 1, 2, 3, 4)),
        bias_variance=BiasVarianceStudy((2**5, 2**9, 2**14), unets, train, k=4, seeds="per_student"),
        real_vs_synthetic=RealVsSynthetic(tuple(2**k for k in range(3, 11)), (unet(8), unet(24)), train, "digits"),
        workers=2,
        notes="The full digits grid: six U-Net widths and three MLPs, N = 2^3..2^14.",
        descriptors=SPACES,
    )


def digits_distill(teacher: str = TEACHER) -> Preset:
    """<= 1 hour on 2 CPU cores (about 48 min estimated from measured per-student costs, docs/distillation.md):
    1- and 4-step regression students of two U-Net sizes beside data-distilled students of the same
    sizes and N; E_gen against steps at N = 2^9; bias-variance at N = 2^11; dynamics of a 1-step
    student at three N."""
    unets, train = (unet(4), unet(8)), onecycle(10)
    ns = tuple(2**k for k in range(3, 12, 2))
    return Preset(
        name="digits-distill",
        teacher=teacher,
        eval=EvalConfig(num_samples=500, test_samples=1000, loss_repeats=2, batch_size=500),
        scaling=Scaling(ns, unets, train),
        distill=Distill(ns, unets, train, steps=(1, 4), method="regression", sweep=StepsSweep(2**9, (1, 2, 4, 8)),
                        bias_variance=Spread(2**11, k=3, steps=1),
                        dynamics=Epochs((2**5, 2**7, 2**9), unet(4), constant(10), (0, 1, 2, 3, 4, 6, 8, 10), steps=1)),
        workers=2,
        notes="<= 1 hour on 2 CPU cores: distilled few-step U-Net students of the digits teacher beside data-distilled "
              "ones.",
        descriptors=SPACES,
    )
