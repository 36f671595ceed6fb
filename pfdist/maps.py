"""Maps from noise to data as values: the PF-ODE map of a denoiser, or any generator.

PFD compares two maps Phi_p, Phi_q on the same x_T (docs/method.md, §1-2). A map need not be
an ODE: ``generator(fn)`` wraps any ``x_T -> x_0`` callable (a one- or few-step distilled
student, a consistency model, a closed form such as ``Gaussian.flow_map``), so a student can
be compared with its teacher's 35-NFE ODE map. Precomputed outputs
(:class:`pfdist.FlowOutputs`) are the third kind.

A map's input is x_T ~ N(0, T^2 I) with T its noise level ``sigma_max``: for an ODE map the top
of its grid, for a generator the level it declares. Both maps of a comparison must use one T.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

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
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise PFDistError(f"the model's label_dim must be a non-negative integer (got {value!r}).")
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
    if isinstance(class_labels, bool) or not isinstance(class_labels, numbers.Integral) or not 0 <= class_labels < dim:
        raise PFDistError(f"class_labels must be a class index in 0..{dim - 1} (got {class_labels!r}).")
    return f"class={int(class_labels)}/{dim}"


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
    """

    kind = "ode"

    def __init__(self, denoiser: Denoiser, flow: FlowSettings | None = None, *, class_labels: int | None = None):
        if isinstance(denoiser, (ODEMap, GeneratorMap)) or not callable(denoiser):
            raise PFDistError(f"ode_map needs a denoiser D(x, sigma); got a {type(denoiser).__name__}.")
        self.denoiser = denoiser
        self.flow = FlowSettings.of(flow)
        self.sigma_range = sigma_range(denoiser)
        self.label_dim = label_dim(denoiser)
        self.class_labels = class_labels
        self.conditioning = conditioning(self.label_dim, class_labels)
        self.flow.clamped(*self.sigma_range)  # refuse a grid outside the model's range now

    @property
    def shape(self) -> tuple[int, ...] | None:
        return data_shape(self.denoiser)

    @property
    def sigma_max(self) -> float:
        """T of this map's x_T on its own (clamped to the model's range)."""
        return self.flow.clamped(*self.sigma_range).sigma_max

    def fingerprint(self) -> str | None:
        fp = fingerprint(self.denoiser)
        grid = self.flow.clamped(*self.sigma_range)
        return None if fp is None else content_hash("ode_map/v1", fp, grid.to_dict(), self.conditioning)

    def run(self, x_T: Tensor, labels: Tensor | None, flow: FlowSettings, *, name: str) -> tuple[Tensor, int]:
        """x_0 = Phi(x_T) on ``flow``'s grid (the grid of the comparison), and the denoiser calls."""
        counted = _Checked(self.denoiser, name, labels if self.label_dim else None)
        return get_solver(flow.solver)(counted, x_T, flow.sigmas()), counted.calls

    def __repr__(self) -> str:
        return f"ode_map({self.denoiser!r}, flow={self.flow})"


class GeneratorMap:
    """Any callable ``fn(x_T) -> x_0`` (``fn(x_T, class_labels)`` if ``label_dim`` > 0) as a map.

    ``sigma_max``: the T its input is drawn at, x_T ~ N(0, T^2 I). ``nfe``: network evaluations
    per sample it makes (reported, not counted). ``fingerprint``: a string naming its content,
    for caching; by default a module's or a bound method's object is hashed, else it is not cached.
    """

    kind = "generator"

    def __init__(self, fn: Callable[[Tensor], Tensor], *, sigma_max: float = FlowSettings.sigma_max, nfe: float = 1,
                 shape: tuple[int, ...] | None = None, label_dim: int = 0, class_labels: int | None = None,
                 fingerprint: str | None = None):
        if isinstance(fn, (ODEMap, GeneratorMap)) or not callable(fn):
            raise PFDistError(f"generator needs a callable x_T -> x_0; got a {type(fn).__name__}.")
        self.fn = fn
        if isinstance(sigma_max, bool) or not isinstance(sigma_max, numbers.Real) or not 0 < sigma_max <= SIGMA_LIMIT:
            raise PFDistError(f"sigma_max must be a positive number <= {SIGMA_LIMIT:g} (got {sigma_max!r}).")
        self.sigma_max = float(sigma_max)
        if isinstance(nfe, bool) or not isinstance(nfe, numbers.Real) or not nfe >= 0:
            raise PFDistError(f"nfe must be a non-negative number (got {nfe!r}).")
        self.nfe = float(nfe)
        self._shape = None if shape is None else checks.shape("shape", shape)
        self.label_dim = label_dim if label_dim else 0
        if isinstance(self.label_dim, bool) or not isinstance(self.label_dim, int) or self.label_dim < 0:
            raise PFDistError(f"label_dim must be a non-negative integer (got {label_dim!r}).")
        self.class_labels = class_labels
        self.conditioning = conditioning(self.label_dim, class_labels)
        self._fingerprint = fingerprint

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self._shape or data_shape(getattr(self.fn, "__self__", None)) or data_shape(self.fn)

    def fingerprint(self) -> str | None:
        fp = self._fingerprint or fingerprint(self.fn)
        return None if fp is None else content_hash("generator/v1", fp, repr(self.sigma_max), self.conditioning)

    def run(self, x_T: Tensor, labels: Tensor | None, flow: None = None, *, name: str) -> tuple[Tensor, int]:
        return _Checked(self.fn, name, labels if self.label_dim else None)(x_T), 0

    def __repr__(self) -> str:
        return f"generator({self.fn!r}, sigma_max={self.sigma_max})"


def ode_map(denoiser: Denoiser, flow: FlowSettings | None = None, *, class_labels: int | None = None) -> ODEMap:
    """The PF-ODE map of ``denoiser`` under ``flow`` (default: EDM's Heun, 18 steps); see :class:`ODEMap`."""
    return ODEMap(denoiser, flow, class_labels=class_labels)


def generator(fn: Callable[[Tensor], Tensor], **options: Any) -> GeneratorMap:
    """Any x_T -> x_0 callable as a map; options as :class:`GeneratorMap` (sigma_max, nfe, ...)."""
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
    clamping to the model's range and no labels (use :func:`ode_map` with :func:`pfdist.pfd` or
    :func:`pfdist.flow_outputs` for those).
    """
    flow = FlowSettings.of(flow, steps=steps, solver=solver, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    return get_solver(flow.solver)(denoiser, x_T, flow.sigmas())
