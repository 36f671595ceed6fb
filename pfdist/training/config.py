"""How a student is trained: the frozen training config (validated when built), its seeds,
learning-rate schedule and EMA decay."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from pfdist import checks
from pfdist.accel import Accel, config_accel
from pfdist.errors import PFDistError

SCHEDULES = ("constant", "onecycle", "cosine")
EPOCH_IMAGES = 12_800  # one epoch, in training images, unless epoch_images says otherwise
INIT, ORDER, NOISE, DROPOUT = "init", "order", "noise", "dropout"  # the names seeds are derived under


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (blake2b, independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; JSON round-trippable with :meth:`to_dict` / :meth:`from_dict`.

    Learning rate: linear warmup over ``warmup_images`` then ``constant``, ``cosine`` (to 0 at
    the last step) or ``onecycle`` (linear to 0). EMA as in EDM: half-life
    ``min(ema_halflife_images, images_seen * ema_rampup_ratio)`` images, so
    ``beta = 0.5 ** (batch_size / halflife)``; ``ema_halflife_images=None`` disables it.
    """

    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    warmup_images: int = 0
    epochs: int = 100
    epoch_images: int | None = EPOCH_IMAGES
    ema_halflife_images: float | None = 500_000
    ema_rampup_ratio: float | None = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float | None = None
    checkpoint_every: int = 10
    P_mean: float = -1.2
    P_std: float = 1.2
    autocast: str | None = None  # how the network runs (pfdist.accel.Accel); the loss stays float32
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise PFDistError(f"TrainConfig: {what}.")

        for name, lo in (("seed", 0), ("batch_size", 1), ("warmup_images", 0), ("epochs", 0), ("checkpoint_every", 1)):
            checks.integer(f"TrainConfig.{name}", getattr(self, name), lo=lo)
        checks.real("TrainConfig.lr", self.lr, positive=True)
        need(self.lr_schedule in SCHEDULES,
             f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.epoch_images is not None:
            checks.integer("TrainConfig.epoch_images", self.epoch_images, lo=1, fix="or null: one pass over the data")
            checks.size("TrainConfig epochs x epoch_images", self.epochs * self.epoch_images, checks.MAX_TRAIN_IMAGES,
                        "every image is a training step's sample, so such a run cannot finish", lo=0)
        for name in ("ema_halflife_images", "ema_rampup_ratio", "grad_clip"):
            if getattr(self, name) is not None:
                checks.real(f"TrainConfig.{name}", getattr(self, name), positive=True, fix="or null for none")
        betas = self.adam_betas
        need(isinstance(betas, (list, tuple)) and len(betas) == 2,
             f"adam_betas must be two numbers in [0, 1), got {betas!r}")
        for i, b in enumerate(betas):
            if checks.real(f"TrainConfig.adam_betas[{i}]", b, lo=0) >= 1:
                raise PFDistError(f"TrainConfig.adam_betas[{i}] must be < 1, got {b!r}.")
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in betas))
        checks.real("TrainConfig.adam_eps", self.adam_eps, positive=True)
        checks.real("TrainConfig.P_mean", self.P_mean)
        checks.real("TrainConfig.P_std", self.P_std, positive=True)
        self.accel  # validates autocast, channels_last, compile

    @property
    def accel(self) -> Accel:
        return config_accel(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        for name, default in Accel().to_dict().items():  # absent when off: the keys of float32 runs stay
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise PFDistError(f"unknown TrainConfig keys {unknown}; valid: {valid}.")
        return cls(**d)

    @property
    def init_seed(self) -> int:
        """The seed of a network's initial weights, ``hash(seed, "init")``: pfdist's protocols build
        the network to train with ``build_network(config, seed=train_config.init_seed)``."""
        return derive_seed(self.seed, INIT)

    def steps_per_epoch(self, n: int) -> int:
        """ceil(epoch_images / batch_size), with epoch_images = N when it is None."""
        return -(-(self.epoch_images or n) // self.batch_size)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate of step ``step`` (0-based) of ``total_steps``."""
    images = (step + 1) * config.batch_size
    warm = min(1.0, images / config.warmup_images) if config.warmup_images else 1.0
    if config.lr_schedule == "constant":
        return config.lr * warm
    decay_images = max(total_steps * config.batch_size - config.warmup_images, 1)
    p = min(max((step * config.batch_size - config.warmup_images) / decay_images, 0.0), 1.0)
    factor = 0.5 * (1 + math.cos(math.pi * p)) if config.lr_schedule == "cosine" else 1 - p
    return config.lr * warm * factor


def ema_beta(config: TrainConfig, step: int) -> float:
    """EMA decay after step ``step`` (EDM training_loop.py: half-life in images, with ramp-up)."""
    if config.ema_halflife_images is None:
        return 0.0
    halflife = config.ema_halflife_images
    if config.ema_rampup_ratio is not None:
        halflife = min(halflife, step * config.batch_size * config.ema_rampup_ratio)
    return 0.5 ** (config.batch_size / max(halflife, 1e-8))
