"""Training recipes of the vector presets, and the one ``pfdist student`` uses by default.

Defined here, below the presets and the command line, so both read the same objects (the CLI's
help quotes them) without the command line importing the experiments layer.
"""

from __future__ import annotations

from pfdist.training.config import TrainConfig

BATCH = 256
EPOCH_IMAGES = 50 * BATCH  # an "epoch" is 12 800 images (50 steps) whatever N is


def onecycle(epochs: int, lr: float = 2e-3, *, batch: int = BATCH, epoch_images: int = EPOCH_IMAGES,
             checkpoint_every: int = 20) -> TrainConfig:
    """Short runs that finish trained: one-cycle lr, EMA half-life 5% of training."""
    return TrainConfig(batch_size=batch, lr=lr, lr_schedule="onecycle", epochs=epochs, epoch_images=epoch_images,
                       ema_halflife_images=0.05 * epochs * epoch_images, ema_rampup_ratio=None,
                       checkpoint_every=checkpoint_every)


def constant(epochs: int, lr: float = 1e-3, *, batch: int = BATCH, epoch_images: int = EPOCH_IMAGES,
             warmup_steps: int = 200, ema_halflife_epochs: float = 4, checkpoint_every: int = 20) -> TrainConfig:
    """Long runs for training dynamics: constant lr after a short warm-up, EMA half-life 4 epochs."""
    return TrainConfig(batch_size=batch, lr=lr, lr_schedule="constant", warmup_images=warmup_steps * batch,
                       epochs=epochs, epoch_images=epoch_images, ema_halflife_images=ema_halflife_epochs * epoch_images,
                       ema_rampup_ratio=None, checkpoint_every=checkpoint_every)


# The quick preset's scaling and bias-variance students; unset `pfdist student --train` fields.
QUICK_STUDENT = onecycle(50)
