"""Training denoisers: EDM loss, a resumable trainer, and safetensors checkpoints."""

from pfdist.training.checkpoint import (
    Checkpoint,
    has_checkpoint,
    load_checkpoint,
    load_denoiser,
    save_checkpoint,
    save_denoiser,
)
from pfdist.training.loss import edm_loss
from pfdist.training.config import TrainConfig, derive_seed, ema_beta, learning_rate
from pfdist.training.trainer import (
    DataOrder,
    TrainResult,
    TrainState,
    make_optimizer,
    make_state,
    train,
    train_step,
)

__all__ = [
    "Checkpoint",
    "DataOrder",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "derive_seed",
    "edm_loss",
    "ema_beta",
    "has_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "load_denoiser",
    "make_optimizer",
    "make_state",
    "save_checkpoint",
    "save_denoiser",
    "train",
    "train_step",
]
