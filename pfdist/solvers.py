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


def _exp_integrals(h: float, degree: int) -> list[float]:
    """I_m = int_0^h e^(u-h) u^m du for m = 0..degree (I_0 = 1 - e^-h, I_m = h^m - m I_(m-1))."""
    out = [-math.expm1(-h)]
    for m in range(1, degree + 1):
        out.append(h**m - m * out[-1])
    return out


def _exp_step(x: Tensor, s: float, s_next: float, nodes: list[tuple[float, Tensor]]) -> Tensor:
    """x(s_next) from x(s) for the PF-ODE in data prediction with D interpolated through ``nodes``.

    In lambda = -log(sigma) the ODE is exact up to one integral (DPM-Solver++, Lu et al. 2022):
    x(s_next) = (s_next/s) x + int_0^h e^(u-h) D(lambda + u) du, h = log(s / s_next). D is the
    polynomial through ``nodes`` = [(lambda_j, denoised_j)], integrated exactly term by term.
    """
    lam, h = -math.log(s), math.log(s / s_next)
    u = torch.tensor([lj - lam for lj, _ in nodes], dtype=torch.float64)
    k = len(nodes)
    vander = u[:, None] ** torch.arange(k, dtype=torch.float64)  # P(u_j) = sum_m c_m u_j^m = D_j
    weights = torch.linalg.solve(vander.T, torch.tensor(_exp_integrals(h, k - 1), dtype=torch.float64))
    x_next = (s_next / s) * x
    for w, (_, denoised) in zip(weights.tolist(), nodes):
        x_next = x_next + w * denoised
    return x_next


def _exp_multistep(denoiser: Denoiser, x: Tensor, sigmas: Tensor, order: int, corrector: bool, callback) -> Tensor:
    """Exponential Adams multistep in lambda = -log(sigma), 1 NFE per step.

    Predictor: the polynomial through the last ``order`` denoised values (Adams-Bashforth).
    Corrector (UniPC's idea, Zhao et al. 2023): once D is evaluated at the predicted point, the
    previous step is redone with that value as one more node (Adams-Moulton), and the next
    step starts from the corrected point, reusing the evaluation (no extra NFE).
    """
    history: list[tuple[float, Tensor]] = []  # (lambda_j, denoised_j), newest first
    x_prev, s_prev = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, _sigma(s, x))
        if corrector and x_prev is not None and s_next != 0:  # the last x is replaced by D below
            # Corrector.
            x = _exp_step(x_prev, s_prev, s, [(-math.log(s), denoised)] + history[: order])
        history = [(-math.log(s), denoised)] + history[: order - 1]
        if s_next == 0:
            x = denoised
        else:
            # Predictor.
            x_prev, s_prev = x, s
            x = _exp_step(x, s, s_next, history)
        if callback is not None:
            callback(i, x)
    return x


def dpmpp_3m(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, callback=None) -> Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022) in Adams form: the quadratic through the last three denoised
    values, integrated exactly (1 NFE per step).

    Third order; the first two steps use the one or two values available.
    """
    return _exp_multistep(denoiser, x, sigmas, 3, False, callback)


def unipc(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, callback=None) -> Tensor:
    """UniPC-style predictor-corrector (Zhao et al. 2023): 3M predictor, corrector through the new value.

    The corrector adds the fresh evaluation at the predicted point as a fourth node, raising
    the order to 4 at 1 NFE per step.
    """
    return _exp_multistep(denoiser, x, sigmas, 3, True, callback)


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
    "dpmpp_3m": dpmpp_3m,
    "unipc": unipc,
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
    return {"heun": 2 * steps - 1, "euler": steps, "dpmpp_2m": steps, "dpmpp_3m": steps, "unipc": steps}.get(solver)


ORDERS: dict[str, int] = {"euler": 1, "heun": 2, "dpmpp_2m": 2, "dpmpp_3m": 3, "unipc": 4}
"""Global convergence order p of each fixed-grid solver (error ~ steps^-p; tested on the Gaussian)."""


def order(solver: str) -> int | None:
    """The convergence order of a fixed-grid solver (None for the adaptive reference solver)."""
    get_solver(solver)
    return ORDERS.get(solver)

