"""Guided denoisers: classifier-free guidance and autoguidance as one denoiser.

EDM2's guided denoiser (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of
Itself", eq. 1): ``D_w(x; sigma) = guide(x; sigma) + w (net(x; sigma) - guide(x; sigma))``, i.e.
``guide(x).lerp(net(x), w)``. Classifier-free guidance takes the unconditional model (or the same
model with the null condition) as ``guide``; autoguidance a smaller or earlier model. The result
is a plain denoiser: any solver, map, cache and distance takes it unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash, fingerprint
from pfdist.maps import label_dim, sigma_range
from pfdist.ode import Denoiser, data_shape


class Guided(nn.Module):
    """``guide(x, sigma).lerp(net(x, sigma), weight)``; build it with :func:`guided`.

    Attributes read by maps: ``sigma_min`` / ``sigma_max`` (the intersection of the two models'
    ranges), ``label_dim`` (the net's; the guide gets the labels only when it is conditional
    itself), ``shape`` and ``data_space`` (common to both), ``fingerprint()`` (both models' and
    the weight, so guided outputs are cached apart from either model's). A module when the
    models are (``.to(device)`` moves both; ``pfd`` finds their device).
    """

    def __init__(self, net: Denoiser, guide: Denoiser, weight: float, *, shape: tuple[int, ...] | None,
                 data_space: str | None):
        super().__init__()
        self.net, self.guide, self.weight = net, guide, weight
        lo_n, hi_n = sigma_range(net)
        lo_g, hi_g = sigma_range(guide)
        self.sigma_min, self.sigma_max = max(lo_n, lo_g), min(hi_n, hi_g)
        self.label_dim = label_dim(net)
        self._guide_labels = label_dim(guide) > 0
        self.shape, self.data_space = shape, data_space
        # Both trained up to pure noise (rectified flows): D(eps, inf) is their lerp too, so maps start at t = 1.
        self.pure_noise = all(getattr(m, "pure_noise", False) is True for m in (net, guide))

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, **conditioning: Any) -> Tensor:
        """x: (batch, *shape); sigma: float or (batch,); class_labels: (batch, label_dim) one-hot."""
        labels = () if class_labels is None else (class_labels,)
        denoised = self.net(x, sigma, *labels, **conditioning)
        unguided = self.guide(x, sigma, *(labels if self._guide_labels else ()), **conditioning)
        return unguided.lerp(denoised, self.weight)

    def fingerprint(self) -> str | None:
        fp_net, fp_guide = fingerprint(self.net), fingerprint(self.guide)
        if fp_net is None or fp_guide is None:
            return None
        return content_hash("guided/v1", fp_net, fp_guide, repr(self.weight))

    def __repr__(self) -> str:
        return f"guided({self.net!r}, {self.guide!r}, weight={self.weight})"


def _data_space(model: Any) -> str | None:
    space = getattr(model, "data_space", None)
    return None if space is None else str(space)


def guided(net: Denoiser, guide: Denoiser, weight: float) -> Denoiser:
    """The guided denoiser ``guide(x, sigma).lerp(net(x, sigma), weight)`` (EDM2's ``guidance=w``).

    ``weight`` 1 returns ``net`` itself; 0 gives the guide's denoiser. Both models must work on
    the same data (shape, ``data_space`` such as a VAE's latents) and, when both are
    class-conditional, on the same labels; an unconditional guide of a conditional net is
    classifier-free guidance. Further keyword arguments of a call go to both models.
    """
    for name, model in (("net", net), ("guide", guide)):
        if not callable(model) or getattr(model, "kind", None) in ("ode", "generator"):
            raise PFDistError(f"guided: {name} must be a denoiser D(x, sigma); got a {type(model).__name__}.")
    checks.real("guided: weight", weight, fix="EDM2's guidance w, e.g. 1.4")
    shape_n, shape_g = data_shape(net), data_shape(guide)
    if shape_n is not None and shape_g is not None and shape_n != shape_g:
        raise PFDistError(f"guided: net works on samples of shape {list(shape_n)} but guide on {list(shape_g)}; "
                          "guidance needs two models of the same data.")
    space_n, space_g = _data_space(net), _data_space(guide)
    if space_n is not None and space_g is not None and space_n != space_g:
        raise PFDistError(f"guided: net works in data space {space_n!r} but guide in {space_g!r} (different "
                          "encoders or VAEs); guidance needs two models of the same data space.")
    dim_n, dim_g = label_dim(net), label_dim(guide)
    if dim_g and dim_g != dim_n:
        raise PFDistError(f"guided: guide has label_dim={dim_g} but net has label_dim={dim_n}; a conditional "
                          "guide needs the net's labels (use an unconditional guide for classifier-free guidance).")
    lo_n, hi_n = sigma_range(net)
    lo_g, hi_g = sigma_range(guide)
    if not max(lo_n, lo_g) < min(hi_n, hi_g):
        raise PFDistError(f"guided: the noise ranges of net [{lo_n}, {hi_n}] and guide [{lo_g}, {hi_g}] do not overlap.")
    if weight == 1:
        return net
    return Guided(net, guide, float(weight), shape=shape_n or shape_g, data_space=space_n or space_g)
