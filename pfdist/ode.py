"""The probability-flow ODE in EDM's variance-exploding form (sigma(t) = t), and its seam.

A denoiser is any callable ``D(x, sigma) -> denoised`` with ``x: (batch, *shape)`` and
``sigma`` a float, a 0-d or a ``(batch,)`` tensor (:class:`Denoiser`). Score, velocity and the
data-shape look-up are written once here.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """``D(x, sigma) -> x0_hat`` (EDM's ``Precond.forward``): the one contract of every model.

    ``x: (batch, *shape)``; ``sigma``: float, 0-d or ``(batch,)`` tensor; returns a tensor shaped,
    typed and placed like ``x``. Optional attributes, read where they matter (no base class):

    - ``shape`` (or ``config["shape"]``): the data shape, see :func:`data_shape`;
    - ``sigma_min`` / ``sigma_max``: the noise range the model was trained on; ODE grids are
      clamped to it, as EDM's sampler clamps to ``net.sigma_min`` / ``net.sigma_max``;
    - ``label_dim`` > 0: class-conditional, called as ``D(x, sigma, class_labels)`` with
      one-hot ``class_labels: (batch, label_dim)`` (EDM's convention);
    - ``fingerprint() -> str``: a content hash, so its outputs can be cached.
    - ``pure_noise = True``: trained up to pure noise (a rectified flow at t = 1, ``sigma_max`` =
      inf); ``D(eps, inf)`` is then defined as lim D(sigma eps, sigma), reading x as the unit
      noise eps, and ODE maps start there with eps = x_T / T (:class:`pfdist.ODEMap`).
    """

    def __call__(self, x: Tensor, sigma: Tensor | float, /) -> Tensor: ...


def data_shape(model: Any) -> tuple[int, ...] | None:
    """The shape of one sample a model, map or distribution works on, when it says (else None).

    Read from ``model.shape`` (a sequence of ints; a tensor's own shape does not count), else
    from ``model.config["shape"]`` (networks built from JSON configs).
    """
    if isinstance(model, Tensor):
        return None
    shape = getattr(model, "shape", None)
    if shape is None and isinstance(getattr(model, "config", None), dict):
        shape = model.config.get("shape")
    return tuple(int(s) for s in shape) if shape is not None else None


def expand_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast ``sigma`` (float, scalar or ``(batch,)``) to ``(batch, 1, ..., 1)`` matching ``x``."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def score(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    """Score of p_sigma: (D(x; sigma) - x) / sigma^2 (Tweedie)."""
    return (denoised - x) / expand_sigma(sigma, x) ** 2


def velocity(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    """PF-ODE velocity dx/dsigma = (x - D(x; sigma)) / sigma (EDM eq. 4 with sigma(t) = t)."""
    return (x - denoised) / expand_sigma(sigma, x)
