"""Few-step students: a network applied on a coarse sigma grid, as a map x_T -> x_0.

``"regression"`` (Luhman & Luhman 2021; few steps as a DDIM/Euler sampler): the student is a
denoiser ``D_theta(x, sigma)`` (EDM preconditioning) and its map runs ``steps`` Euler steps of
its own PF-ODE on the levels ``sigmas[0] = T > ... > sigmas[steps-1]`` then to 0,
``x <- D + (sigma_next / sigma) (x - D)``; the last step returns ``D_theta(x, sigmas[-1])``. With
one step the map is ``D_theta(x_T, T)``.

``"progressive"`` (Salimans & Ho 2022) makes the same kind of student as regression (a denoiser
run as an Euler/DDIM sampler on its levels).

``"consistency"`` (Song et al. 2023): the student is a consistency function
``f_theta(x, sigma) = c_skip x + c_out F_theta(c_in(sigma) x, c_noise(sigma))`` with
``c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)`` and
``c_out = (sigma - sigma_min) sigma_data / sqrt(sigma^2 + sigma_data^2)``, so
``f(x, sigma_min) = x`` exactly (their Appendix C): a clean estimate. To a floor ``s`` above
sigma_min, ``f_theta(x, sigma; s) = f + r (x - f)`` with ``r = (s - sigma_min) / (sigma - sigma_min)``:
the DDIM step from sigma to s with that estimate (Heek et al. 2024's parametrization), so
``f(x, s; s) = x`` and ``f(x, sigma; sigma_min) = f_theta(x, sigma)``. ``multistep`` says how a
student with several levels goes from one to the next:

- ``"segments"`` (default; multistep consistency models, Heek et al. 2024): the levels cut
  ``[sigma_min, T]`` into ``steps`` segments, level i's boundary ``s_i`` being the next level
  (sigma_min after the last), and ``f(., sigma; s_i)`` maps a point at ``sigma`` in segment i to
  the teacher's trajectory at ``s_i``. The map is ``x <- f(x, sigma_i; s_i)`` for each level: a
  deterministic chain along x_T's own trajectory, so with the exact f it *is* the teacher's map
  (to sigma_min). Training uses each level's own segment (:mod:`pfdist.protocol.distill`). With
  one step this is Song et al.'s consistency function.
- ``"ddim"`` and ``"fresh"``: Song et al.'s multistep sampling (their Algorithm 1) with one
  consistency function to sigma_min: ``x_0 <- f(x_T, T)``, then for each further level
  ``x <- x_0 + sqrt(sigma^2 - sigma_min^2) z``, ``x_0 <- f(x, sigma)``. ``"ddim"``:
  ``z = (x_T - f(x_T, T)) / T``, the noise the first step implies (DDIM's eta = 0 step, Song et
  al. 2021), so x stays near, not on, x_T's trajectory (on an axis of variance lambda, for T much
  above sigma, the step to sigma scales the output by about
  ``(sqrt(lambda) + sigma) / sqrt(lambda + sigma^2)``). ``"fresh"``: ``z ~ N(0, I)`` from a generator
  seeded by a hash of the bytes of that sample's x_T (float32) and i, as Algorithm 1 draws it,
  whatever the batch: right in distribution, far from Phi_teacher(x_T) pointwise (each step to
  sigma adds ``lambda sigma^2 / (lambda + sigma^2)`` to the squared error on such an axis).

Student levels: the first ``steps`` levels of EDM's rho-grid with ``steps + 1`` levels on the
teacher's ``[sigma_min, sigma_max]`` (2 steps on EDM's defaults: 80, 2.52).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from pfdist.nets import EDMPrecond
from pfdist.ode import expand_sigma
from pfdist.schedules import edm_sigmas
from pfdist.training import derive_seed

METHODS = ("regression", "consistency", "progressive")
MULTISTEP = ("segments", "ddim", "fresh")


def student_sigmas(steps: int, *, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """The ``steps`` noise levels a few-step student is applied at, from ``sigma_max`` down."""
    return [float(s) for s in edm_sigmas(steps + 1, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)[:steps]]


def consistency_function(net: EDMPrecond, x: Tensor, sigma: Tensor, sigma_min: float,
                         floor: Tensor | float | None = None) -> Tensor:
    """f(x, sigma; floor) with the boundary condition f(x, floor; floor) = x (module doc).

    x: (batch, *shape); sigma: (batch,) >= floor; floor: a number or (batch,), sigma_min if None.
    """
    s = expand_sigma(sigma, x).expand(x.shape[0], *([1] * (x.ndim - 1)))
    sd = net.sigma_data
    c_skip = sd**2 / ((s - sigma_min) ** 2 + sd**2)
    c_out = (s - sigma_min) * sd / (s**2 + sd**2).sqrt()
    c_in = 1 / (s**2 + sd**2).sqrt()
    c_noise = s.log().reshape(-1) / 4
    clean = c_skip * x + c_out * net.model(c_in * x, c_noise)
    if floor is None:
        return clean
    # A DDIM step from sigma to the floor with the clean estimate (in sigma - sigma_min, so that a
    # floor of sigma_min gives the clean estimate itself and sigma = floor gives x).
    b = expand_sigma(floor, x).expand_as(s)
    ratio = torch.where(s > b, (b - sigma_min) / (s - sigma_min).clamp_min(1e-30), torch.ones_like(s))
    return clean + ratio * (x - clean)


def renoise(x_T: Tensor, step: int) -> Tensor:
    """z ~ N(0, I) shaped like x_T, a pure function of each row's bytes and ``step`` (module doc)."""
    out = torch.empty(x_T.shape, dtype=torch.float32)
    rows = x_T.detach().to("cpu", torch.float32).contiguous()
    g = torch.Generator()
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(row.numpy().tobytes(), digest_size=16).hexdigest()
        g.manual_seed(derive_seed("renoise", digest, step))
        torch.randn(row.shape, generator=g, out=out[i])
    return out.to(device=x_T.device, dtype=x_T.dtype)


class FewStepStudent(nn.Module):
    """The map x_T -> x_0 of a distilled student (module doc); ``nfe`` = ``len(sigmas)``.

    x_T: (batch, *shape) at noise level ``sigmas[0]``. Returns (batch, *shape).
    """

    def __init__(self, net: EDMPrecond, method: str, sigmas: list[float], sigma_min: float,
                 multistep: str = "segments"):
        super().__init__()
        assert method in METHODS and len(sigmas) >= 1 and multistep in MULTISTEP
        self.net, self.method, self.sigmas, self.sigma_min = net, method, list(sigmas), float(sigma_min)
        self.multistep = multistep
        self.shape = tuple(net.config["shape"])
        # Where each level's function maps to: the next level (segments) or sigma_min (one segment).
        segments = method == "consistency" and multistep == "segments"
        self.ends = (self.sigmas[1:] if segments else []) + [self.sigma_min]

    def floors(self, sigma: Tensor) -> Tensor:
        """For each sigma in ``(sigma_min, sigmas[0]]``: the end of its segment, the largest of
        ``ends`` below it (module doc). sigma: (batch,); returns (batch,) of sigma's dtype."""
        ends = torch.tensor(self.ends, dtype=sigma.dtype, device=sigma.device)
        below = ends[None, :] < sigma[:, None] * (1 - 1e-9)
        return torch.where(below, ends[None, :], ends.new_tensor(self.sigma_min)).amax(dim=1)

    @property
    def nfe(self) -> int:
        return len(self.sigmas)

    def forward(self, x_T: Tensor) -> Tensor:
        if self.method == "consistency":
            return self._consistency(x_T)
        x = x_T
        for i, sigma in enumerate(self.sigmas):
            # Euler step of the student's PF-ODE from sigma to the next level (0 after the last).
            denoised = self.net(x, sigma)
            ratio = self.sigmas[i + 1] / sigma if i + 1 < len(self.sigmas) else 0.0
            x = denoised + ratio * (x - denoised)
        return x

    def _consistency(self, x_T: Tensor) -> Tensor:
        full = lambda s: torch.full((x_T.shape[0],), s, dtype=x_T.dtype, device=x_T.device)  # noqa: E731
        if self.multistep == "segments":
            x = x_T
            for sigma, floor in zip(self.sigmas, self.ends):  # along x_T's trajectory
                x = consistency_function(self.net, x, full(sigma), self.sigma_min, floor)
            return x
        x_0 = consistency_function(self.net, x_T, full(self.sigmas[0]), self.sigma_min)
        z_ddim = (x_T - x_0) / self.sigmas[0]
        for i, sigma in enumerate(self.sigmas[1:], start=1):
            # Re-noise to sigma, then map back to the boundary (Song et al. 2023, Algorithm 1).
            z = z_ddim if self.multistep == "ddim" else renoise(x_T, i)
            x = x_0 + (sigma**2 - self.sigma_min**2) ** 0.5 * z
            x_0 = consistency_function(self.net, x, full(sigma), self.sigma_min)
        return x_0

    def extra_repr(self) -> str:
        return f"method={self.method!r}, multistep={self.multistep!r}, sigmas={[round(s, 4) for s in self.sigmas]}"
