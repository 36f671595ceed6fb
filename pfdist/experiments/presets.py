"""Named presets. Sizing notes (measured, 2 CPU cores) are in docs/tuning.md."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pfdist.errors import PFDistError
from pfdist.experiments.config import Preset
from pfdist.experiments.studies import BiasVarianceStudy, Dynamics, Scaling, Student
from pfdist.experiments.studies.distill import Distill, StepsSweep
from pfdist.experiments.digits_presets import digits, digits_distill, digits_full
from pfdist.experiments.spaces import SPACES
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig
from pfdist.training.recipes import BATCH, EPOCH_IMAGES, QUICK_STUDENT, constant, onecycle  # noqa: F401

# A mixture of 4 rank-4 Gaussians in 16 dimensions with N(0, 1.5^2) means and a 0.22 noise floor:
# exact denoiser, cheap flows, and a clear memorization -> generalization change for MLP students.
MIXTURE_TEACHER = {"type": "low_rank_mixture", "shape": [16], "num_components": 4, "rank": 4, "scale": 1.0,
                   "mean_scale": 1.5, "noise_std": 0.22, "seed": 0}


def mlp(width: int, depth: int = 3) -> Student:
    return Student(f"mlp-w{width}", {"arch": "mlp", "width": width, "depth": depth, "sigma_data": 1.0})


def quick() -> Preset:
    return Preset(
        name="quick",
        teacher=MIXTURE_TEACHER,
        eval=EvalConfig(num_samples=1000, test_samples=2000, loss_repeats=2),
        scaling=Scaling(tuple(2**k for k in range(1, 13)), (mlp(32), mlp(64), mlp(128)), QUICK_STUDENT),
        dynamics=Dynamics((2**2, 2**5, 2**12), mlp(128), constant(80), (0, 2, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80)),
        bias_variance=BiasVarianceStudy((2**4, 2**7, 2**10), (mlp(32), mlp(64), mlp(128)), QUICK_STUDENT, k=4,
                                        seeds="per_student"),
        workers=2,
        notes="<= 15 minutes on 2 CPU cores: MtoG on three MLP sizes in two spaces; small dynamics and bias-variance runs.",
        descriptors=SPACES,
    )


def quick_distill() -> Preset:
    """Minutes on 2 CPU cores: 1- and 4-step regression students of two MLP sizes, distilled from the
    mixture teacher's map on N pairs, beside data-distilled students of the same sizes and N;
    E_gen against steps at N = 2^7."""
    sizes, ns = (mlp(32), mlp(128)), tuple(2**k for k in range(1, 12, 2))
    return Preset(
        name="quick-distill",
        teacher=MIXTURE_TEACHER,
        eval=EvalConfig(num_samples=1000, test_samples=2000, loss_repeats=2),
        scaling=Scaling(ns, sizes, QUICK_STUDENT),
        distill=Distill(ns, sizes, QUICK_STUDENT, steps=(1, 4), method="regression", sweep=StepsSweep(2**7, (1, 2, 4, 8))),
        workers=2,
        notes="Minutes on 2 CPU cores: distilled few-step MLP students of the mixture teacher beside data-distilled ones.",
        descriptors=SPACES,
    )


def full() -> Preset:
    sizes = (mlp(32), mlp(64), mlp(128), mlp(256))
    return Preset(
        name="full",
        teacher=MIXTURE_TEACHER,
        eval=EvalConfig(num_samples=2000, test_samples=4000, loss_repeats=2),
        scaling=Scaling(tuple(2**k for k in range(1, 15)), sizes, onecycle(100)),
        dynamics=Dynamics((2**2, 2**5, 2**13), mlp(128), constant(400),
                          (0, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 100, 128, 160, 200, 250, 300, 350, 400)),
        bias_variance=BiasVarianceStudy((2**2, 2**5, 2**8, 2**11, 2**14), sizes, onecycle(100), k=4),
        workers=2,
        notes="<= 2 hours on 2 CPU cores: all three findings on four MLP sizes.",
        descriptors=SPACES,
    )


# The paper's students U-Net-1..10: EDM's DDPM++ SongUNet (CIFAR-10 configuration) at ten widths.
# Parameters at 3x32x32: 16: 0.88 M, 24: 1.97 M, 32: 3.50 M, 48: 7.86 M, 64: 13.96 M, 72: 17.66 M,
# 80: 21.79 M, 96: 31.37 M, 112: 42.68 M, 128: 55.73 M (EDM's own network).
PAPER_WIDTHS = (16, 24, 32, 48, 64, 72, 80, 96, 112, 128)


def ddpmpp(model_channels: int) -> Student:
    return Student(f"ddpmpp-{model_channels}", {
        "arch": "songunet", "model_channels": model_channels, "channel_mult": [2, 2, 2], "num_blocks": 4,
        "attn_resolutions": [16], "dropout": 0.13, "precond": "edm", "sigma_data": 0.5})


def paper(teacher: str = "teacher.safetensors", sscd: str | None = None) -> Preset:
    """The paper's setting (docs/method.md, §4): an image teacher (e.g. EDM's CIFAR-10 network converted with
    ``pfdist convert``), DDPM++ students of 0.88 M to 55.7 M parameters, N = 2^6..2^16, Heun 18
    steps, 10 000 evaluation seeds. For GPUs. With ``sscd`` (the path of a trusted SSCD TorchScript
    or .pt2 file: code) SSCD is the primary space, as in the paper; otherwise the kernel descriptor."""
    sizes = tuple(ddpmpp(c) for c in PAPER_WIDTHS)
    train = TrainConfig(batch_size=128, lr=1e-3, lr_schedule="constant", warmup_images=1_000_000, epochs=400,
                        epoch_images=50_000, ema_halflife_images=500_000, checkpoint_every=10)
    return Preset(
        name="paper",
        teacher=teacher,
        eval=EvalConfig(num_samples=10_000, test_samples=10_000, batch_size=500),
        scaling=Scaling(tuple(2**k for k in range(6, 17)), sizes, train),
        dynamics=Dynamics((2**6, 2**12, 2**16), ddpmpp(128), train, tuple(range(0, 401, 20))),
        bias_variance=BiasVarianceStudy((2**6, 2**10, 2**14, 2**16), sizes, train, k=4),
        workers=1,
        notes="GPU scale; an 'epoch' is 50 000 images (one CIFAR-10 pass).",
        descriptors=(({"type": "sscd", "path": sscd},) if sscd else ()) + SPACES,
    )


PRESETS = {"quick": quick, "full": full, "paper": paper, "digits": digits, "digits-full": digits_full,
           "digits-distill": digits_distill, "quick-distill": quick_distill}


def _merge(base: Any, changes: Any, where: str) -> Any:
    if not isinstance(changes, dict) or not isinstance(base, dict):
        return changes
    unknown = sorted(set(changes) - set(base))
    if unknown:
        raise PFDistError(f"preset overrides: unknown keys {unknown} in {where or 'the preset'}; valid: {sorted(base)}.")
    return {**base, **{k: _merge(base[k], v, f"{where}.{k}".lstrip(".")) for k, v in changes.items()}}


def override(preset: Preset, changes: dict) -> Preset:
    """``preset`` with some fields changed: nested objects merge key by key, lists and values replace,
    null removes a study. E.g. ``{"eval": {"num_samples": 64}, "dynamics": None}``."""
    base = preset.to_dict()
    if isinstance(base.get("eval"), dict):  # fields left out of the dict when off (error_estimate, ...) may be set too
        base["eval"] = {**EvalConfig().to_dict(full=True), **base["eval"]}
    try:
        return Preset.from_dict(_merge(base, changes, ""))
    except (TypeError, KeyError, AttributeError) as e:
        raise PFDistError(f"preset overrides do not make a valid preset ({e}).") from None


def get_preset(name: str, **kwargs) -> Preset:
    try:
        make = PRESETS[name]
    except KeyError:
        raise PFDistError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} or give a .json file.") from None
    return make(**kwargs)


def load_preset(spec: str | os.PathLike) -> Preset:
    """A named preset, or a JSON file in the form of ``Preset.to_dict()`` (missing keys take their
    defaults; the name defaults to the file's stem). A relative teacher path is relative to the
    working directory, as ``--teacher`` is."""
    if str(spec) in PRESETS:
        return get_preset(str(spec))
    path = Path(spec)
    if path.is_dir():
        raise PFDistError(f"preset {path} is a directory; give a preset name ({', '.join(sorted(PRESETS))}) "
                          "or a .json file.")
    if path.suffix != ".json" and not path.is_file():
        return get_preset(str(spec))  # refused with the list of names
    try:
        d = json.loads(path.read_text())
    except OSError as e:
        raise PFDistError(f"cannot read preset file {path}: {e.strerror or e}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PFDistError(f"preset file {path} is not valid JSON ({e}).") from None
    if isinstance(d, dict):
        d.setdefault("name", path.stem)
    return Preset.from_dict(d)
