"""Maps from noise to data as values: the PF-ODE map of a denoiser, or any generator.

PFD compares two maps Phi_p, Phi_q on the same x_T (docs/method.md, §1-2). A map need not be
an ODE: ``generator(fn)`` wraps any ``x_T -> x_0`` callable (a one- or few-step distilled
student, a consistency model, a closed form such as ``Gaussian.flow_map``), so a student can
be compared with its teacher's 35-NFE ODE map. Precomputed outputs
(:class:`pfdist.FlowOutputs`) are the third kind.

A map's input is x_T ~ N(0, T^2 I) with T its noise level ``sigma_max``: for an ODE map the top
of its grid, for a generator the level it declares. Both maps of a comparison must use one T.
A rectified-flow model's ODE map starts at pure noise eps = x_T / T (t = 1), so it sees the
same noise as an EDM-type map on the same x_T (docs/method.md, §1).

A latent model's map ends in its decoder (``decoder=``): the output is ``decoder(x_0)``, so the
distance, descriptors, caches and copy detection see images. Such a map has a noise shape (of
x_T, ``noise_shape``) and a data shape (of its output, ``shape``), which differ.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash, fingerprint
from pfdist.ode import Denoiser, data_shape
from pfdist.settings import SIGMA_LIMIT, FlowSettings
from pfdist.solvers import get_solver


def _model_number(model: Any, name: str, default: float) -> float:
    value = getattr(model, name, None)
    if value is None:
        return default
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PFDistError(f"the model's {name} is a {type(value).__name__}; it must be a number.") from None
    if math.isnan(value) or value < 0:
        raise PFDistError(f"the model's {name} must be a non-negative number (got {value}).")
    return value


def sigma_range(model: Any) -> tuple[float, float]:
    """The model's declared ``(sigma_min, sigma_max)``, default ``(0, inf)`` (any noise level)."""
    lo, hi = _model_number(model, "sigma_min", 0.0), _model_number(model, "sigma_max", math.inf)
    if not lo < hi:
        raise PFDistError(f"the model declares sigma_min={lo} >= sigma_max={hi}.")
    return lo, hi


def label_dim(model: Any) -> int:
    """Number of classes of a class-conditional model (EDM's ``label_dim``); 0 if unconditional."""
    value = getattr(model, "label_dim", 0) or 0
    checks.integer("the model's label_dim", value, lo=0)
    return int(value)


def conditioning(dim: int, class_labels: int | None) -> str | None:
    """The identity of a map's labels: None (unconditional), drawn per seed, or one fixed class."""
    if dim == 0:
        if class_labels is not None:
            raise PFDistError(f"class_labels={class_labels!r} was given but the model is not class-conditional "
                              "(it declares no label_dim > 0).")
        return None
    if class_labels is None:
        return f"seeded/{dim}"
    checks.integer("class_labels", class_labels, lo=0, hi=dim - 1, fix=f"a class index of the model's {dim} classes")
    return f"class={int(class_labels)}/{dim}"


def _pure_noise(denoiser: Any, sigma_range: tuple[float, float], asked: bool | None) -> bool:
    """Whether an ODE map of ``denoiser`` starts at pure noise (see :class:`ODEMap`)."""
    able = getattr(denoiser, "pure_noise", False) is True and sigma_range[1] == math.inf
    if asked is None:
        return able
    if not isinstance(asked, bool):
        raise PFDistError(f"pure_noise must be True, False or None (got {asked!r}).")
    if asked and not able:
        raise PFDistError("pure_noise=True needs a model trained up to pure noise (it declares pure_noise = True "
                          "and sigma_max = inf: a rectified-flow model from pfdist.from_diffusers).")
    return asked


def _decoder(decoder: Any) -> Callable[[Tensor], Tensor] | None:
    if decoder is not None and (isinstance(decoder, (ODEMap, GeneratorMap)) or not callable(decoder)):
        raise PFDistError(f"decoder must be a callable latents -> images (e.g. pfdist.load_edm_decoder(...)); "
                          f"got a {type(decoder).__name__}.")
    return decoder


def decoded_shape(decoder: Any, noise_shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The data shape a decoder makes of latents of ``noise_shape``, when it says (``output_shape``)."""
    output_shape = getattr(decoder, "output_shape", None)
    if noise_shape is None or not callable(output_shape):
        return None
    shape = tuple(int(n) for n in output_shape(noise_shape))
    if len(shape) != 3 or not 1 <= shape[0] <= 4:
        raise PFDistError(f"the decoder makes samples of shape {list(shape)} from latents {list(noise_shape)}; a "
                          "decoder must make images (C, H, W) with 1 to 4 channels.")
    return shape


def decode(decoder: Callable[[Tensor], Tensor], x_0: Tensor, name: str) -> Tensor:
    """``decoder(x_0)`` checked to be an image batch ``(batch, C, H, W)``, C in 1..4, in x_0's dtype."""
    images = decoder(x_0)
    if (not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] != x_0.shape[0]
            or not 1 <= images.shape[1] <= 4 or not images.is_floating_point()):
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise PFDistError(f"the decoder of model {name} returned {got} for latents {tuple(x_0.shape)}; a decoder must "
                          "return an image batch (batch, C, H, W) of floats with 1 to 4 channels.")
    if images.device != x_0.device:
        raise PFDistError(f"the decoder of model {name} returned images on {images.device} for latents on "
                          f"{x_0.device}; put the decoder on the model's device.")
    return images.to(x_0.dtype)


def _with_decoder(fp: str | None, decoder: Any, *parts: Any) -> str | None:
    """A map's fingerprint: its parts, and its decoder's identity when it has one (None if opaque)."""
    if fp is None:
        return None
    if decoder is None:
        return content_hash(*parts)
    fp_decoder = fingerprint(decoder)
    return None if fp_decoder is None else content_hash(*parts, ["decoder", fp_decoder])


class _Checked:
    """Counts denoiser evaluations and checks each output's shape, dtype and device."""

    def __init__(self, fn: Callable, name: str, labels: Tensor | None = None):
        self.fn, self.name, self.labels, self.calls = fn, name, labels, 0

    def __call__(self, x: Tensor, *args: Any) -> Tensor:
        self.calls += 1
        out = self.fn(x, *args) if self.labels is None else self.fn(x, *args, self.labels)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise PFDistError(
                f"model {self.name} returned {got} for input of shape {tuple(x.shape)}; "
                "a denoiser (or generator) must return a tensor shaped like its input x."
            )
        if out.dtype != x.dtype or out.device != x.device:
            raise PFDistError(
                f"model {self.name} returned {out.dtype} on {out.device} for {x.dtype} input on "
                f"{x.device}; move the model to that device and dtype, or pass device=/dtype= to match it."
            )
        return out


class ODEMap:
    """Phi(x_T): the PF-ODE of ``denoiser`` solved with ``flow`` from T = flow.sigma_max to 0.

    The grid is clamped to the model's declared ``sigma_min`` / ``sigma_max`` (EDM's sampler
    clamps to ``net.sigma_min`` / ``net.sigma_max``); compared with another ODE map, both run
    on the intersection of the two models' ranges. A class-conditional denoiser (``label_dim``
    > 0) gets one-hot labels: drawn from each seed (``class_labels=None``, the same label for
    both maps of a comparison, whatever the batch) or one fixed class ``class_labels=c``.

    A model trained up to pure noise (a rectified flow at t = 1: ``pure_noise = True``,
    ``sigma_max`` = inf) starts there: its input is eps = x_T / T, and one Euler step in the
    flow's variables from t = 1 to t = T / (1 + T) gives x(T) = x_T + D(eps, inf), then the grid
    runs as for any model (docs/method.md, §1). ``pure_noise=False`` starts at
    x(T) = x_T instead, as EDM's sampler does; the default is True where the model allows it.
    """

    kind = "ode"

    def __init__(self, denoiser: Denoiser, flow: FlowSettings | None = None, *, class_labels: int | None = None,
                 pure_noise: bool | None = None, decoder: Callable[[Tensor], Tensor] | None = None):
        if isinstance(denoiser, (ODEMap, GeneratorMap)) or not callable(denoiser):
            raise PFDistError(f"ode_map needs a denoiser D(x, sigma); got a {type(denoiser).__name__}.")
        self.denoiser = denoiser
        self.decoder = _decoder(decoder)
        self.flow = FlowSettings.of(flow)
        self.sigma_range = sigma_range(denoiser)
        self.label_dim = label_dim(denoiser)
        self.class_labels = class_labels
        self.conditioning = conditioning(self.label_dim, class_labels)
        self.flow.clamped(*self.sigma_range)  # refuse a grid outside the model's range now
        self.pure_noise = _pure_noise(denoiser, self.sigma_range, pure_noise)

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        """The shape of one x_T (the denoiser's data shape)."""
        return data_shape(self.denoiser)

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of one output: the decoder's images for a latent model, else ``noise_shape``."""
        return self.noise_shape if self.decoder is None else decoded_shape(self.decoder, self.noise_shape)

    @property
    def sigma_max(self) -> float:
        """T of this map's x_T on its own (clamped to the model's range)."""
        return self.flow.clamped(*self.sigma_range).sigma_max

    def fingerprint(self) -> str | None:
        fp = fingerprint(self.denoiser)
        grid = self.flow.clamped(*self.sigma_range)
        start = ["pure_noise"] if self.pure_noise else []  # absent for maps that start at x_T, as before
        return _with_decoder(fp, self.decoder, "ode_map/v1", fp, grid.to_dict(), self.conditioning, *start)

    def run(self, x_T: Tensor, labels: Tensor | None, flow: FlowSettings, *, name: str) -> tuple[Tensor, int]:
        """Phi(x_T) on ``flow``'s grid (the grid of the comparison), decoded, and the denoiser calls."""
        counted, x = _Checked(self.denoiser, name, labels if self.label_dim else None), x_T
        sigmas = flow.sigmas()
        if self.pure_noise:
            # Euler step from t = 1 (sigma = inf) to sigma = T in the flow's variables: x(T) = T eps + D(eps, inf).
            inf = torch.full((len(x_T),), math.inf, dtype=x_T.dtype, device=x_T.device)
            x = x_T + counted(x_T / float(sigmas[0]), inf)
        x_0 = get_solver(flow.solver)(counted, x, sigmas)
        return (x_0 if self.decoder is None else decode(self.decoder, x_0, name)), counted.calls

    def __repr__(self) -> str:
        decoder = "" if self.decoder is None else f", decoder={self.decoder!r}"
        return f"ode_map({self.denoiser!r}, flow={self.flow}{decoder})"


class GeneratorMap:
    """Any callable ``fn(x_T) -> x_0`` (``fn(x_T, class_labels)`` if ``label_dim`` > 0) as a map.

    ``sigma_max``: the T its input is drawn at, x_T ~ N(0, T^2 I). ``nfe``: network evaluations
    per sample it makes (reported, not counted). ``fingerprint``: a string naming its content,
    for caching; by default a module's or a bound method's object is hashed, else it is not cached.
    ``shape``: the shape of one x_T (and of ``fn``'s output); ``decoder``: latents -> images, so
    that the map's output is ``decoder(fn(x_T))``.
    """

    kind = "generator"

    def __init__(self, fn: Callable[[Tensor], Tensor], *, sigma_max: float = FlowSettings.sigma_max, nfe: float = 1,
                 shape: tuple[int, ...] | None = None, label_dim: int = 0, class_labels: int | None = None,
                 fingerprint: str | None = None, decoder: Callable[[Tensor], Tensor] | None = None):
        if isinstance(fn, (ODEMap, GeneratorMap)) or not callable(fn):
            raise PFDistError(f"generator needs a callable x_T -> x_0; got a {type(fn).__name__}.")
        self.fn = fn
        self.decoder = _decoder(decoder)
        self.sigma_max = checks.real("sigma_max", sigma_max, positive=True, hi=SIGMA_LIMIT,
                                     fix="noise that large overflows float32")
        self.nfe = checks.real("nfe", nfe, lo=0)
        self._shape = None if shape is None else checks.shape("shape", shape)  # (2.7,) and (0,) are refused
        self.label_dim = label_dim if label_dim else 0
        checks.integer("label_dim", self.label_dim, lo=0)
        self.class_labels = class_labels
        self.conditioning = conditioning(self.label_dim, class_labels)
        self._fingerprint = fingerprint

    @property
    def noise_shape(self) -> tuple[int, ...] | None:
        return self._shape or data_shape(getattr(self.fn, "__self__", None)) or data_shape(self.fn)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.noise_shape if self.decoder is None else decoded_shape(self.decoder, self.noise_shape)

    def fingerprint(self) -> str | None:
        fp = self._fingerprint or fingerprint(self.fn)
        return _with_decoder(fp, self.decoder, "generator/v1", fp, repr(self.sigma_max), self.conditioning)

    def run(self, x_T: Tensor, labels: Tensor | None, flow: None = None, *, name: str) -> tuple[Tensor, int]:
        x_0 = _Checked(self.fn, name, labels if self.label_dim else None)(x_T)
        return (x_0 if self.decoder is None else decode(self.decoder, x_0, name)), 0

    def __repr__(self) -> str:
        return f"generator({self.fn!r}, sigma_max={self.sigma_max})"


def ode_map(denoiser: Denoiser, flow: FlowSettings | None = None, *, class_labels: int | None = None,
            pure_noise: bool | None = None, decoder: Callable[[Tensor], Tensor] | None = None) -> ODEMap:
    """The PF-ODE map of ``denoiser`` under ``flow`` (default: EDM's Heun, 18 steps), its output
    ``decoder(x_0)`` when a decoder is given (a latent model); see :class:`ODEMap`."""
    return ODEMap(denoiser, flow, class_labels=class_labels, pure_noise=pure_noise, decoder=decoder)


def generator(fn: Callable[[Tensor], Tensor], **options: Any) -> GeneratorMap:
    """Any x_T -> x_0 callable as a map; options as :class:`GeneratorMap` (sigma_max, nfe, decoder, ...)."""
    return GeneratorMap(fn, **options)


def flow_map(
    denoiser: Denoiser,
    x_T: Tensor,
    *,
    flow: FlowSettings | None = None,
    steps: int | None = None,
    solver: str | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
) -> Tensor:
    """Push ``x_T: (batch, *shape)`` (already scaled by sigma_max) through the PF-ODE to sigma = 0.

    ``flow`` (default EDM's) with any of the keyword fields replaced. Runs exactly that grid: no
    clamping to the model's range, no labels and no start from pure noise (use :func:`ode_map`
    with :func:`pfdist.pfd` or :func:`pfdist.flow_outputs` for those).
    """
    flow = FlowSettings.of(flow, steps=steps, solver=solver, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    return get_solver(flow.solver)(denoiser, x_T, flow.sigmas())
