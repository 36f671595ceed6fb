"""Solvers and PFD against the Gaussian's closed forms; convergence orders."""

import math

import numpy as np
import pytest
import torch

import pfdist


def test_edm_sigmas_match_edm_grid():
    s = pfdist.FlowSettings().sigmas()  # EDM's defaults: 18 steps from 80 to 0.002, rho 7
    assert s.shape == (19,) and s[-1] == 0
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002)
    assert (s[:-1] > s[1:]).all()
    # EDM's formula (Karras et al. 2022, eq. 5), written out independently
    i = np.arange(18)
    edm = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s[:-1].numpy(), edm, rtol=1e-12)
    assert torch.equal(s, pfdist.edm_sigmas(18, sigma_min=0.002, sigma_max=80.0, rho=7.0))


@pytest.mark.parametrize("solver,nfe", [("heun", 35), ("euler", 18), ("dpmpp_2m", 18), ("dpmpp_3m", 18), ("unipc", 18)])
def test_nfe_counts(gaussians, solver, nfe):
    r = pfdist.pfd(gaussians[0], gaussians[1], num_samples=4, solver=solver)
    assert r.nfe == nfe


def _exact_with_final_step(g, x_T, sigma_min=0.002):
    """The exact flow to sigma_min followed by every solver's last step x <- D(x; sigma_min)."""
    return g.denoise(g.flow(x_T, 80.0, sigma_min), sigma_min)


def test_reference_solver_matches_closed_form(gaussians):
    g = gaussians[0]
    x_T = pfdist.noise(range(64), (4,), dtype=torch.float64)
    out = pfdist.flow_map(g, x_T, solver="reference")
    torch.testing.assert_close(out, _exact_with_final_step(g, x_T), atol=1e-5, rtol=0)
    # and that is within sigma_min^2 of the closed-form map to sigma = 0
    torch.testing.assert_close(out, g.flow_map(x_T), atol=1e-4, rtol=0)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2), ("dpmpp_3m", 3), ("unipc", 4)])
def test_convergence_order(gaussians, solver, order):
    g = gaussians[1]
    x_T = pfdist.noise(range(32), (4,), dtype=torch.float64)
    exact = _exact_with_final_step(g, x_T)
    steps = [32, 64, 128, 256]
    errors = [(pfdist.flow_map(g, x_T, steps=n, solver=solver) - exact).abs().max().item() for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, (errors, slope)
    assert pfdist.solvers.order(solver) == order  # the order the error estimate's Richardson step uses


def test_pfd_matches_closed_form_between_gaussians(gaussians):
    a, b = gaussians
    exact = pfdist.gaussian_pfd(a, b)
    r = pfdist.pfd(a, b, num_samples=4000, steps=256, dtype=torch.float64, batch_size=1000)
    # Monte Carlo error dominates (Heun-256 error is ~1e-4 here): 4 standard errors.
    assert abs(r.value - exact) < 4 * r.stderr + 1e-3, (r, exact)
    assert r.ci[0] < r.value < r.ci[1]


def test_pfd_is_at_least_w2_between_gaussians(gaussians):
    """Shared noise is a coupling, so PFD >= W2 (closed form between Gaussians)."""
    a, b = gaussians
    from scipy.linalg import sqrtm

    Sa, Sb = a.cov.numpy(), b.cov.numpy()
    root = np.real(sqrtm(Sa))
    cross = np.real(sqrtm(root @ Sb @ root))
    w2 = math.sqrt(((a.mean - b.mean) ** 2).sum().item() + np.trace(Sa + Sb - 2 * cross))
    assert pfdist.gaussian_pfd(a, b) >= w2 - 1e-9


def test_gaussian_sample_moments(gaussians):
    g = gaussians[0]
    y = g.sample(200_000, generator=torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(y.mean(0), g.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), g.cov, atol=0.03, rtol=0)
