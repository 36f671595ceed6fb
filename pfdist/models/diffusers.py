"""diffusers models as denoisers: a ``UNet2DModel`` and its scheduler become ``D(x, sigma[, class_labels])``.

DDPM family (DDPMScheduler, DDIMScheduler, PNDMScheduler, ...). The forward process
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, divided by sqrt(abar_t), is EDM's variance-exploding
x = x_0 + sigma eps with sigma_t = sqrt((1 - abar_t) / abar_t) (EDM Table 1, VP). At noise level
sigma the network sees x_t = x / sqrt(1 + sigma^2) at the timestep t(sigma) that interpolates
log sigma_t linearly over the training timesteps (fractional timesteps, which UNet2DModel accepts),
and its output becomes the denoised x_0:

    epsilon:       D = x - sigma eps
    v_prediction:  D = (x_t - sigma v) / sqrt(1 + sigma^2)
    sample:        D = output

EDM-style schedulers (EDMEulerScheduler, EDMDPMSolverMultistepScheduler) use EDM's own
preconditioning (EDM eq. 7): D = c_skip x + c_out F(c_in x, c_noise) with c_noise = log(sigma) / 4,
and c_out negated for v_prediction, as the scheduler does.

The denoiser never clips or thresholds (``clip_sample``, ``thresholding``): those are sampler
heuristics that would change the probability-flow map. ``sigma_min`` / ``sigma_max`` are the range
the model was trained on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pfdist.errors import PFDistError
from pfdist.nets.precond import precond_coefficients
from pfdist.ode import expand_sigma

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
INSTALL = "install diffusers with `pip install pfdist[diffusers]`"


def _config(obj: Any) -> dict:
    config = getattr(obj, "config", None)
    if config is None:
        raise PFDistError(f"{type(obj).__name__} has no diffusers config; pass a diffusers model and scheduler.")
    return dict(config)


class DiffusersDenoiser(nn.Module):
    """``D(x, sigma, class_labels=None)`` around a diffusers UNet; build it with :func:`from_diffusers`.

    ``x: (batch, C, H, W)``; ``sigma``: float or ``(batch,)``; ``class_labels``: ``(batch, label_dim)``
    one-hot rows (EDM's convention) or ``(batch,)`` integer classes, only when ``label_dim > 0``.
    """

    def __init__(self, unet: nn.Module, *, kind: str, prediction_type: str, train_sigmas: Tensor | None,
                 sigma_data: float, sigma_min: float, sigma_max: float, label_dim: int,
                 shape: tuple[int, ...], fractional_timesteps: bool = True):
        super().__init__()
        self.unet = unet
        self.kind, self.prediction_type = kind, prediction_type
        self.sigma_data, self.sigma_min, self.sigma_max = float(sigma_data), float(sigma_min), float(sigma_max)
        self.label_dim, self.shape = int(label_dim), tuple(shape)
        self.fractional_timesteps = bool(fractional_timesteps)
        log_sigmas = torch.empty(0) if train_sigmas is None else train_sigmas.double().log()
        self.register_buffer("log_sigmas", log_sigmas)  # log sigma_t, t = 0 .. T-1 (increasing)

    def timestep(self, sigma: Tensor) -> Tensor:
        """t(sigma): linear interpolation of log sigma_t over the training timesteps, clamped to [0, T-1]."""
        log_sigmas = self.log_sigmas.to(sigma.dtype)
        log_sigma = sigma.log()
        hi = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, len(log_sigmas) - 1)
        lo = hi - 1
        w = ((log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])).clamp(0, 1)
        t = lo.to(sigma.dtype) + w
        return t if self.fractional_timesteps else t.round()

    def _labels(self, class_labels: Tensor | None, x: Tensor) -> Tensor | None:
        if self.label_dim == 0:
            if class_labels is not None:
                raise PFDistError("this diffusers model is unconditional; do not pass class_labels.")
            return None
        if class_labels is None:
            raise PFDistError(f"this diffusers model is class-conditional (label_dim={self.label_dim}); "
                              "pass class_labels, one-hot (batch, label_dim) or integer (batch,).")
        if class_labels.ndim == 2 and class_labels.shape == (x.shape[0], self.label_dim):
            if not torch.compiler.is_compiling():
                rows = class_labels.to(torch.float64)
                if not (((rows == 0) | (rows == 1)).all() and (rows.sum(1) == 1).all()):
                    raise PFDistError("class_labels rows must be one-hot; diffusers class embeddings take one class each.")
            return class_labels.argmax(1)
        if class_labels.ndim == 1 and class_labels.shape[0] == x.shape[0] and not class_labels.is_floating_point():
            return class_labels
        raise PFDistError(f"class_labels must be one-hot ({x.shape[0]}, {self.label_dim}) or integer ({x.shape[0]},); "
                          f"got {class_labels.dtype} of shape {tuple(class_labels.shape)}.")

    def _network(self, x: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
        out = self.unet(x, t, class_labels=labels) if labels is not None else self.unet(x, t)
        out = out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
        if out.shape[1] == 2 * x.shape[1]:  # learned variance: the first half is the prediction
            out = out[:, : x.shape[1]]
        return out

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        if x.ndim < 2:
            raise PFDistError(f"x must be (batch, *shape); got shape {tuple(x.shape)}.")
        sigma = expand_sigma(sigma, x).expand(x.shape[0], *([1] * (x.ndim - 1)))
        labels = self._labels(class_labels, x)
        if self.kind == "edm":
            # EDM eq. 7 with the scheduler's sign convention for v_prediction.
            c_skip, c_out, c_in, c_noise = precond_coefficients(sigma, self.sigma_data)
            out = self._network(c_in * x, c_noise.reshape(-1), labels)
            return c_skip * x + (-c_out if self.prediction_type == "v_prediction" else c_out) * out
        # VP: x_t = sqrt(abar) x with abar = 1 / (1 + sigma^2).
        scale = (1 + sigma**2).sqrt()
        x_t = x / scale
        out = self._network(x_t, self.timestep(sigma.reshape(-1)), labels)
        if self.prediction_type == "epsilon":
            return x - sigma * out
        if self.prediction_type == "v_prediction":
            return (x_t - sigma * out) / scale
        return out

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, prediction_type={self.prediction_type!r}, sigma_min={self.sigma_min:.4g}, "
                f"sigma_max={self.sigma_max:.4g}, label_dim={self.label_dim}, shape={self.shape}")


def _unet_shape(unet: nn.Module) -> tuple[int, ...]:
    cfg = _config(unet)
    size = cfg.get("sample_size")
    if size is None or "in_channels" not in cfg:
        raise PFDistError(f"{type(unet).__name__} does not record in_channels and sample_size; use a UNet2DModel.")
    h, w = (size, size) if isinstance(size, int) else size
    return int(cfg["in_channels"]), int(h), int(w)


def from_diffusers(unet: nn.Module, scheduler: Any, *, label_dim: int | None = None,
                   fractional_timesteps: bool = True) -> DiffusersDenoiser:
    """A denoiser from a diffusers ``UNet2DModel`` and the scheduler it was trained with.

    ``scheduler``: a DDPM-family scheduler (it has ``alphas_cumprod``: DDPMScheduler, DDIMScheduler,
    ...; linear, scaled_linear, squaredcos_cap_v2 or any other beta schedule) or an EDM-style one
    (EDMEulerScheduler, EDMDPMSolverMultistepScheduler). ``label_dim``: number of classes of a
    class-conditional UNet (default: its ``num_class_embeds``; 0 for unconditional).
    ``fractional_timesteps=False`` rounds t(sigma) to the nearest training timestep, for networks
    that only accept integers. The returned module is in eval mode with gradients off.
    """
    unet_cfg, cfg = _config(unet), _config(scheduler)
    if unet_cfg.get("time_embedding_type") == "fourier":
        raise PFDistError("UNet2DModel with fourier time embedding is a score-SDE (VE) model; "
                          "only DDPM-family and EDM-style schedulers are supported.")
    prediction_type = cfg.get("prediction_type", "epsilon")
    if label_dim is None:
        label_dim = unet_cfg.get("num_class_embeds") or 0
        if unet_cfg.get("class_embed_type") is not None:
            raise PFDistError(f"UNet class_embed_type={unet_cfg['class_embed_type']!r} takes labels of unknown range; "
                              "pass label_dim= explicitly.")
    elif label_dim and unet_cfg.get("num_class_embeds") is None and unet_cfg.get("class_embed_type") is None:
        raise PFDistError(f"label_dim={label_dim!r} was given but this UNet is unconditional (no num_class_embeds "
                          "or class_embed_type); leave label_dim out.")
    common = dict(label_dim=label_dim, shape=_unet_shape(unet), fractional_timesteps=fractional_timesteps)
    if "sigma_data" in cfg and "sigma_min" in cfg and "sigma_max" in cfg:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise PFDistError(f"EDM-style schedulers predict 'epsilon' or 'v_prediction', not {prediction_type!r}.")
        den = DiffusersDenoiser(unet, kind="edm", prediction_type=prediction_type, train_sigmas=None,
                                sigma_data=cfg["sigma_data"], sigma_min=cfg["sigma_min"],
                                sigma_max=cfg["sigma_max"], **common)
    else:
        abar = getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(abar, Tensor):
            raise PFDistError(f"{type(scheduler).__name__} is neither a DDPM-family scheduler (alphas_cumprod) "
                              "nor an EDM-style one (sigma_data); use e.g. DDPMScheduler or EDMEulerScheduler.")
        if prediction_type not in PREDICTION_TYPES:
            raise PFDistError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}.")
        abar = abar.double()
        abar = abar[abar > 0]  # a zero-terminal-SNR schedule's last step has sigma = inf
        if len(abar) < 2 or not bool((abar[1:] < abar[:-1]).all()):
            raise PFDistError("the scheduler's alphas_cumprod must decrease over at least two timesteps.")
        sigmas = ((1 - abar) / abar).sqrt()
        den = DiffusersDenoiser(unet, kind="vp", prediction_type=prediction_type, train_sigmas=sigmas,
                                sigma_data=1.0, sigma_min=float(sigmas[0]), sigma_max=float(sigmas[-1]), **common)
    return den.eval().requires_grad_(False)


def is_diffusers_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a diffusers ``save_pretrained`` directory (a pipeline or a UNet + scheduler)."""
    path = Path(path)
    return path.is_dir() and ((path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file()
                              or (path / "scheduler_config.json").is_file())


def _class_from_config(path: Path, base: str) -> type:
    import diffusers

    try:
        name = json.loads(path.read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PFDistError(f"{path} is not a diffusers config with a _class_name ({e}).") from None
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, getattr(diffusers, base))):
        raise PFDistError(f"{path} names {name!r}, which is not a diffusers {base}.")
    return cls


def load_diffusers(path: str | os.PathLike, *, fractional_timesteps: bool = True) -> DiffusersDenoiser:
    """A denoiser from a diffusers directory, reading weights with safetensors only (no pickle).

    Layouts: a pipeline's ``save_pretrained`` directory (``unet/`` and ``scheduler/``), or a
    UNet2DModel directory (``config.json``, ``diffusion_pytorch_model.safetensors``) with
    ``scheduler_config.json`` beside them. Nothing is downloaded.
    """
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise PFDistError(f"{path} is a diffusers model; {INSTALL}.") from None
    path = Path(path)
    if (path / "unet" / "config.json").is_file():
        unet_dir, unet_sub, sched_dir = path, "unet", path / "scheduler"
    else:
        unet_dir, unet_sub, sched_dir = path, None, path
    if not (sched_dir / "scheduler_config.json").is_file():
        raise PFDistError(f"{path} has no scheduler config ({sched_dir / 'scheduler_config.json'}); "
                          "save the scheduler with the model (scheduler.save_pretrained).")
    unet_cls = _class_from_config(unet_dir / (unet_sub or "") / "config.json", "ModelMixin")
    if unet_cls.__name__ != "UNet2DModel":
        raise PFDistError(f"{path} holds a {unet_cls.__name__}; pfdist adapts UNet2DModel networks.")
    sched_cls = _class_from_config(sched_dir / "scheduler_config.json", "SchedulerMixin")
    try:
        unet = unet_cls.from_pretrained(unet_dir, subfolder=unet_sub, use_safetensors=True, local_files_only=True)
        scheduler = sched_cls.from_pretrained(sched_dir)
    except (OSError, ValueError, EnvironmentError) as e:
        raise PFDistError(f"cannot load the diffusers model in {path} with safetensors weights ({e}).") from None
    except RuntimeError as e:  # torch's load_state_dict: the weights do not fit the network the config builds
        first = " ".join(str(e).split())[:200]
        raise PFDistError(f"the weights in {path} do not fit the network its config.json describes ({first}); "
                          "save the model again with save_pretrained.") from None
    return from_diffusers(unet, scheduler, fractional_timesteps=fractional_timesteps)
