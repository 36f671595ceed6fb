"""Probability-flow ODE solvers: stateless functions ``solver(denoiser, x, sigmas) -> x``.

``sigmas`` is a decreasing grid ending in 0 (see :class:`pfdist.FlowSettings`). Every
solver ends with the step sigma_min -> 0, which for the PF-ODE is ``x <- D(x; sigma_min)``.
``callback(i, x)`` (optional) is called after step i; no progress bars live here.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from pfdist.errors import PFDistError
from pfdist.ode import Denoiser, velocity


def _sigma(s: Tensor, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), float(s), dtype=x.dtype, device=x.device)


def euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, callback=None) -> Tensor:
    """Explicit Euler in sigma (1 NFE per step)."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = velocity(x, denoiser(x, _sigma(s, x)), float(s))
        x = x + (s_next - s).item() * d
        if callback is not None:
            callback(i, x)
    return x


def heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, callback=None) -> Tensor:
    """EDM Algorithm 1, deterministic (2 NFE per step, 1 for the last step to sigma = 0)."""
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        # Euler step.
        d = velocity(x, denoiser(x, _sigma(s, x)), s)
        x_next = x + (s_next - s) * d
        # 2nd-order correction.
        if s_next != 0:
            d_next = velocity(x_next, denoiser(x_next, _sigma(s_next, x)), s_next)
            x_next = x + (s_next - s) * (0.5 * d + 0.5 * d_next)
        x = x_next
        if callback is not None:
            callback(i, x)
    return x


def dpmpp_2m(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, callback=None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep in data prediction (1 NFE per step).

    Exact for the linear part in t = -log(sigma); second order from the previous denoised.
    """
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, _sigma(s, x))
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            if old_denoised is None:
                d = denoised
            else:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s_next / s) * x - math.expm1(-h) * d
            old_denoised, h_last = denoised, h
        if callback is not None:
            callback(i, x)
    return x


def reference(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    callback=None,
) -> Tensor:
    """Accurate adaptive dopri5 (torchdiffeq) in t = log(sigma), for convergence checks.

    Integrates dx/dt = x - D(x; e^t) from sigmas[0] to the last nonzero sigma in float64, then
    takes the same final step to 0 as every other solver.
    """
    from torchdiffeq import odeint

    nonzero = sigmas[sigmas > 0]
    s_hi, s_lo = float(nonzero[0]), float(nonzero[-1])
    dtype = x.dtype

    def f(t: Tensor, y: Tensor) -> Tensor:
        sigma = _sigma(torch.exp(t), y)
        return y - denoiser(y.to(dtype), sigma.to(dtype)).to(y.dtype)

    t = torch.tensor([math.log(s_hi), math.log(s_lo)], dtype=torch.float64, device=x.device)
    y = odeint(f, x.double(), t, rtol=rtol, atol=atol, method="dopri5")[-1].to(dtype)
    if sigmas[-1] == 0:
        y = denoiser(y, _sigma(s_lo, y))
    if callback is not None:
        callback(len(sigmas) - 2, y)
    return y


SOLVERS: dict[str, Callable[..., Tensor]] = {
    "heun": heun,
    "euler": euler,
    "dpmpp_2m": dpmpp_2m,
    "reference": reference,
}


def get_solver(name: str) -> Callable[..., Tensor]:
    try:
        return SOLVERS[name]
    except KeyError:
        raise PFDistError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}.") from None


def nfe(solver: str, steps: int) -> int | None:
    """Denoiser evaluations per sample for a fixed-grid solver (None for the adaptive one)."""
    get_solver(solver)
    return {"heun": 2 * steps - 1, "euler": steps, "dpmpp_2m": steps}.get(solver)

