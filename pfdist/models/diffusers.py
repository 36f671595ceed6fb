"""diffusers models as denoisers: a network and its scheduler become ``D(x, sigma[, class_labels])``.

Networks: ``UNet2DModel``, ``UNet2DConditionModel`` (Stable Diffusion 1.x/2.x layout),
``DiTTransformer2DModel`` / ``Transformer2DModel`` (class-conditional DiT) and
``SD3Transformer2DModel``. Conditioning (a prompt's embeddings, a fixed class) is passed as
tensors named as the network's own forward arguments, batch 1, shared by every seed
(:mod:`pfdist.models.diffusers_conditioning`).

DDPM family (DDPMScheduler, DDIMScheduler, PNDMScheduler, ...). The forward process
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, divided by sqrt(abar_t), is EDM's variance-exploding
x = x_0 + sigma eps with sigma_t = sqrt((1 - abar_t) / abar_t) (EDM Table 1, VP). At noise level
sigma the network sees x_t = x / sqrt(1 + sigma^2) at the timestep t(sigma) that interpolates
log sigma_t linearly over the training timesteps (fractional timesteps, which the networks accept),
and its output becomes the denoised x_0:

    epsilon:       D = x - sigma eps
    v_prediction:  D = (x_t - sigma v) / sqrt(1 + sigma^2)
    sample:        D = output

A learned-variance output (2C channels, DiT and improved DDPM) is cut to its first C channels.

EDM-style schedulers (EDMEulerScheduler, EDMDPMSolverMultistepScheduler) use EDM's own
preconditioning (EDM eq. 7): D = c_skip x + c_out F(c_in x, c_noise) with c_noise = log(sigma) / 4,
and c_out negated for v_prediction, as the scheduler does.

Flow matching (FlowMatchEulerDiscreteScheduler, any ``FlowMatch*`` scheduler; rectified flow):
x_t = (1 - t) x_0 + t eps and the network predicts v = eps - x_0 at timestep t * num_train_timesteps
(whatever the scheduler's shift, which only moves its sampling grid). Dividing by 1 - t gives EDM's
form with sigma = t / (1 - t), x = x_t / (1 - t), and

    flow:          D = x_t - t v,  x_t = x / (1 + sigma),  t = sigma / (1 + sigma).

t = 1 (pure noise) is sigma = inf, where D(x, inf) reads x as the unit noise eps (the limit of
D(sigma eps, sigma)); such a model declares ``pure_noise = True`` and its ODE maps start exactly
at t = 1 (docs/method.md, §1).

The denoiser never clips or thresholds (``clip_sample``, ``thresholding``): those are sampler
heuristics that would change the probability-flow map. ``sigma_min`` / ``sigma_max`` are the range
the model was trained on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.models.diffusers_conditioning import check_conditioning
from pfdist.nets.precond import precond_coefficients
from pfdist.ode import expand_sigma

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
FLOW_ONLY = ("SD3Transformer2DModel", "FluxTransformer2DModel")  # trained with flow matching only
INSTALL = "install diffusers with `pip install pfdist[diffusers]`"


def _config(obj: Any) -> dict:
    config = getattr(obj, "config", None)
    if config is None:
        raise PFDistError(f"{type(obj).__name__} has no diffusers config; pass a diffusers model and scheduler.")
    return dict(config)


class DiffusersDenoiser(nn.Module):
    """``D(x, sigma, class_labels=None)`` around a diffusers network; build it with :func:`from_diffusers`.

    ``x: (batch, C, H, W)``; ``sigma``: float or ``(batch,)``; ``class_labels``: ``(batch, label_dim)``
    one-hot rows (EDM's convention) or ``(batch,)`` integer classes, only when ``label_dim > 0``.
    Fixed conditioning tensors (batch 1) are buffers named ``conditioning_<argument>``.
    """

    def __init__(self, network: nn.Module, *, kind: str, prediction_type: str, train_sigmas: Tensor | None,
                 sigma_data: float, sigma_min: float, sigma_max: float, label_dim: int,
                 shape: tuple[int, ...], fractional_timesteps: bool = True, num_train_timesteps: int = 1000,
                 conditioning: dict[str, Tensor] | None = None):
        super().__init__()
        self.network = network
        self.kind, self.prediction_type = kind, prediction_type
        self.sigma_data, self.sigma_min, self.sigma_max = float(sigma_data), float(sigma_min), float(sigma_max)
        self.label_dim, self.shape = int(label_dim), tuple(shape)
        self.fractional_timesteps = bool(fractional_timesteps)
        self.num_train_timesteps = int(num_train_timesteps)
        log_sigmas = torch.empty(0) if train_sigmas is None else train_sigmas.double().log()
        self.register_buffer("log_sigmas", log_sigmas)  # log sigma_t, t = 0 .. T-1 (increasing)
        self.pure_noise = kind == "flow" and self.sigma_max == math.inf  # D(x, inf) defined, x read as eps
        self.conditioning = tuple(sorted(conditioning or {}))
        for name in self.conditioning:
            self.register_buffer(f"conditioning_{name}", conditioning[name])

    def timestep(self, sigma: Tensor) -> Tensor:
        """The network's timestep at ``sigma: (batch,)``.

        DDPM family: linear interpolation of log sigma_t over the training timesteps, clamped to
        [0, T-1]. Flow matching: t * num_train_timesteps with t = sigma / (1 + sigma).
        """
        if self.kind == "flow":
            t = torch.where(torch.isinf(sigma), 1.0, sigma / (1 + sigma)) * self.num_train_timesteps
        else:
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
                raise PFDistError("this diffusers model takes no class_labels (it is unconditional, or its class "
                                  "was fixed with from_diffusers(..., class_labels=...)).")
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
        kwargs = {}
        for name in self.conditioning:  # batch 1, broadcast over x's batch
            value = getattr(self, f"conditioning_{name}")
            value = value.to(x.dtype) if value.is_floating_point() else value
            kwargs[name] = value.expand(x.shape[0], *value.shape[1:])
        if labels is not None:
            kwargs["class_labels"] = labels
        out = self.network(x, timestep=t, **kwargs)
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
        if self.kind == "flow":
            # Rectified flow: x_t = x / (1 + sigma) at t = sigma / (1 + sigma); D = x_t - t v. At sigma = inf
            # (t = 1) x is read as the unit noise eps = lim x / sigma, so x_t = x (the pure_noise convention).
            pure = torch.isinf(sigma)
            t = torch.where(pure, torch.ones_like(sigma), sigma / (1 + sigma))
            x_t = torch.where(pure, x, x / (1 + sigma))
            return x_t - t * self._network(x_t, self.timestep(sigma.reshape(-1)), labels)
        # VP: x_t = sqrt(abar) x with abar = 1 / (1 + sigma^2).
        scale = (1 + sigma**2).sqrt()
        x_t = x / scale
        out = self._network(x_t, self.timestep(sigma.reshape(-1)), labels)
        if self.prediction_type == "epsilon":
            return x - sigma * out
        if self.prediction_type == "v_prediction":
            return (x_t - sigma * out) / scale
        return out

    def fingerprint(self) -> str:
        """A content hash for caching: the network's class, config and weights, the diffusers version,
        this adapter's settings and its conditioning tensors (forward hooks or swapped attention
        processors are not seen)."""
        try:
            import diffusers

            version = diffusers.__version__
        except ImportError:  # a network that only looks like a diffusers one
            version = None
        return content_hash("diffusers/v1", type(self.network).__qualname__, version, _config(self.network),
                            self.extra_repr(), dict(self.state_dict()))

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, prediction_type={self.prediction_type!r}, sigma_min={self.sigma_min:.4g}, "
                f"sigma_max={self.sigma_max:.4g}, label_dim={self.label_dim}, shape={self.shape}, "
                f"conditioning={self.conditioning}")


def _model_shape(model: nn.Module) -> tuple[int, ...]:
    cfg = _config(model)
    size = cfg.get("sample_size")
    if size is None or "in_channels" not in cfg:
        raise PFDistError(f"{type(model).__name__} does not record in_channels and sample_size in its config; "
                          "set them (sample_size is the latent or image size the network was trained at).")
    h, w = (size, size) if isinstance(size, int) else size
    return int(cfg["in_channels"]), int(h), int(w)


def _label_dim(model: nn.Module, cfg: dict) -> int:
    """Classes of a class-conditional network, from its config (0 if it takes none)."""
    if cfg.get("class_embed_type") is not None:
        raise PFDistError(f"{type(model).__name__} class_embed_type={cfg['class_embed_type']!r} takes labels of "
                          "unknown range; pass label_dim= explicitly.")
    if cfg.get("norm_type") == "ada_norm_zero" and cfg.get("num_embeds_ada_norm"):  # DiT's class embedding
        return int(cfg["num_embeds_ada_norm"])
    return int(cfg.get("num_class_embeds") or 0)


def is_flow_matching(scheduler: Any) -> bool:
    """Whether ``scheduler`` samples a flow-matching (rectified-flow) model: diffusers' ``FlowMatch*`` classes."""
    return type(scheduler).__name__.startswith("FlowMatch")


def _flow_denoiser(model: nn.Module, scheduler: Any, prediction_type: str | None, **common: Any) -> DiffusersDenoiser:
    name, cfg = type(model).__name__, _config(model)
    if prediction_type not in (None, "flow"):
        raise PFDistError(f"{type(scheduler).__name__} is a flow-matching scheduler (the network predicts the "
                          f"velocity eps - x_0) but prediction_type={prediction_type!r} was given; a model that "
                          "predicts epsilon, v or x_0 needs its DDPM-family or EDM-style scheduler.")
    if cfg.get("out_channels") is not None and cfg.get("in_channels") is not None \
            and int(cfg["out_channels"]) == 2 * int(cfg["in_channels"]):
        raise PFDistError(f"{name} has a learned-variance output (out_channels = 2 x in_channels): it predicts "
                          f"epsilon, not a flow velocity; pair it with its DDPM-family scheduler, not "
                          f"{type(scheduler).__name__}.")
    steps = int(_config(scheduler).get("num_train_timesteps", 1000))
    t_min = float(getattr(scheduler, "sigma_min", 1 / steps) or 1 / steps)
    t_max = float(getattr(scheduler, "sigma_max", 1.0) or 1.0)
    if not 0 < t_min < t_max <= 1:
        raise PFDistError(f"{type(scheduler).__name__} has sigma_min={t_min}, sigma_max={t_max}; flow-matching "
                          "times must satisfy 0 < t_min < t_max <= 1.")
    sigma_max = math.inf if t_max >= 1 else t_max / (1 - t_max)
    return DiffusersDenoiser(model, kind="flow", prediction_type="flow", train_sigmas=None, sigma_data=1.0,
                             sigma_min=t_min / (1 - t_min), sigma_max=sigma_max, num_train_timesteps=steps, **common)


def from_diffusers(model: nn.Module, scheduler: Any, *, label_dim: int | None = None,
                   prediction_type: str | None = None, fractional_timesteps: bool = True,
                   **conditioning: Tensor) -> DiffusersDenoiser:
    """A denoiser from a diffusers network and the scheduler it was trained with.

    ``model``: ``UNet2DModel``, ``UNet2DConditionModel``, ``DiTTransformer2DModel`` /
    ``Transformer2DModel`` (DiT) or ``SD3Transformer2DModel``. ``scheduler``: a DDPM-family one (it
    has ``alphas_cumprod``: DDPMScheduler, DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, ...;
    any beta schedule), an EDM-style one (EDMEulerScheduler, EDMDPMSolverMultistepScheduler), or a
    flow-matching one (FlowMatchEulerDiscreteScheduler, ...; any shift).

    ``**conditioning``: tensors named as the network's forward arguments, each with batch 1 and
    shared by every seed: ``encoder_hidden_states=`` (1, tokens, features) for a text-conditioned
    UNet or transformer, ``pooled_projections=`` (1, features) for SD3, ``class_labels=`` (1,) an
    integer class that fixes the class (DiT's null class is ``label_dim``). Checked against the
    config here; nothing runs. ``label_dim``: classes of a class-conditional network (default: its
    config's ``num_class_embeds`` or DiT's ``num_embeds_ada_norm``); without a fixed
    ``class_labels`` the denoiser takes labels per sample, as EDM's networks do.
    ``prediction_type``: overrides the scheduler's ("epsilon", "v_prediction", "sample"; "flow"
    for flow matching). ``fractional_timesteps=False`` rounds the timestep to an integer, for
    networks that only accept integers. The returned module is in eval mode with gradients off.
    """
    name, model_cfg, cfg = type(model).__name__, _config(model), _config(scheduler)
    if model_cfg.get("time_embedding_type") == "fourier":
        raise PFDistError("UNet2DModel with fourier time embedding is a score-SDE (VE) model; "
                          "only DDPM-family, EDM-style and flow-matching schedulers are supported.")
    if label_dim is None:
        label_dim = _label_dim(model, model_cfg)
    conditioning = check_conditioning(model, conditioning, label_dim=label_dim)
    common = dict(label_dim=0 if "class_labels" in conditioning else label_dim, shape=_model_shape(model),
                  fractional_timesteps=fractional_timesteps, conditioning=conditioning)
    if is_flow_matching(scheduler):
        return _flow_denoiser(model, scheduler, prediction_type, **common).eval().requires_grad_(False)
    if name in FLOW_ONLY:
        raise PFDistError(f"{name} is a flow-matching model; pass its FlowMatchEulerDiscreteScheduler, "
                          f"not {type(scheduler).__name__}.")
    prediction_type = prediction_type or cfg.get("prediction_type", "epsilon")
    if "sigma_data" in cfg and "sigma_min" in cfg and "sigma_max" in cfg:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise PFDistError(f"EDM-style schedulers predict 'epsilon' or 'v_prediction', not {prediction_type!r}.")
        den = DiffusersDenoiser(model, kind="edm", prediction_type=prediction_type, train_sigmas=None,
                                sigma_data=cfg["sigma_data"], sigma_min=cfg["sigma_min"],
                                sigma_max=cfg["sigma_max"], **common)
    else:
        abar = getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(abar, Tensor):
            raise PFDistError(f"{type(scheduler).__name__} is neither a DDPM-family scheduler (alphas_cumprod), an "
                              "EDM-style one (sigma_data) nor a flow-matching one; use e.g. DDPMScheduler, "
                              "EDMEulerScheduler or FlowMatchEulerDiscreteScheduler.")
        if prediction_type not in PREDICTION_TYPES:
            raise PFDistError(f"prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}.")
        abar = abar.double()
        abar = abar[abar > 0]  # a zero-terminal-SNR schedule's last step has sigma = inf
        if len(abar) < 2 or not bool((abar[1:] < abar[:-1]).all()):
            raise PFDistError("the scheduler's alphas_cumprod must decrease over at least two timesteps.")
        sigmas = ((1 - abar) / abar).sqrt()
        den = DiffusersDenoiser(model, kind="vp", prediction_type=prediction_type, train_sigmas=sigmas,
                                sigma_data=1.0, sigma_min=float(sigmas[0]), sigma_max=float(sigmas[-1]), **common)
    return den.eval().requires_grad_(False)
