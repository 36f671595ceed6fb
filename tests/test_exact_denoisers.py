"""Mixture and empirical denoisers against Monte Carlo and their limits."""

import pytest
import torch

import pfdist


def _mc_posterior_mean(dist, x, sigma, n=400_000, seed=0):
    """E[y | y + sigma n = x] by self-normalised importance sampling with y ~ p."""
    y = dist.sample(n, generator=torch.Generator().manual_seed(seed)).double()
    logw = -((x.double()[:, None, :] - y[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(logw, dim=1)
    return w @ y


@pytest.mark.parametrize("sigma", [0.7, 2.0])
def test_mixture_denoiser_matches_monte_carlo(mixture, sigma):
    g = torch.Generator().manual_seed(5)
    x = mixture.sample(6, generator=g) + sigma * torch.randn(6, 6, generator=g)
    expected = _mc_posterior_mean(mixture, x, sigma)
    torch.testing.assert_close(mixture.denoise(x.double(), sigma), expected, atol=0.06, rtol=0)


def test_full_covariance_mixture_matches_monte_carlo():
    g = torch.Generator().manual_seed(2)
    A = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    mix = pfdist.GaussianMixture([0.3, 0.7], torch.randn(2, 3, generator=g, dtype=torch.float64) * 2, A @ A.transpose(1, 2))
    x = mix.sample(5, generator=g) + torch.randn(5, 3, generator=g)
    torch.testing.assert_close(mix.denoise(x.double(), 1.0), _mc_posterior_mean(mix, x, 1.0), atol=0.05, rtol=0)


def test_single_component_mixture_is_the_gaussian(gaussians):
    gauss = gaussians[1]
    mix = pfdist.GaussianMixture([1.0], gauss.mean[None], gauss.cov[None])
    x = torch.randn(8, 4, dtype=torch.float64)
    for sigma in (0.002, 0.5, 80.0):
        torch.testing.assert_close(mix.denoise(x, sigma), gauss.denoise(x, sigma))


@pytest.mark.parametrize("sigma", [0.002, 80.0])
def test_low_rank_image_mixture_is_stable_in_float32(sigma):
    mix = pfdist.random_low_rank_mixture((3, 8, 8), 5, 4, scale=2.0, seed=1)
    x = mix.sample(16, generator=torch.Generator().manual_seed(0)) + sigma * torch.randn(16, 3, 8, 8)
    out = mix.denoise(x, sigma)
    assert out.dtype == torch.float32 and out.shape == x.shape and torch.isfinite(out).all()
    if sigma == 0.002:  # points near the support are (almost) fixed points
        torch.testing.assert_close(out, x, atol=0.02, rtol=0)
    else:  # far noise: close to the mixture mean (0), much smaller than x
        assert out.norm() < 0.2 * x.norm()


def test_sigma_broadcasting(mixture):
    x = torch.randn(5, 6)
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0, 80.0])
    per_row = torch.stack([mixture.denoise(x[i : i + 1], float(s))[0] for i, s in enumerate(sig)])
    torch.testing.assert_close(mixture.denoise(x, sig), per_row)


def test_empirical_limits():
    data = torch.randn(50, 3, 4, 4)
    emp = pfdist.EmpiricalDenoiser(data, chunk_size=7)
    x = data[:10] + 0.05 * torch.randn(10, 3, 4, 4)
    torch.testing.assert_close(emp.denoise(x, 0.002), data[:10])  # sigma -> 0: nearest point
    far = torch.randn(10, 3, 4, 4)
    torch.testing.assert_close(emp.denoise(far, 1e4), data.mean(0).expand_as(far), atol=1e-4, rtol=0)


def test_empirical_chunking_is_exact():
    data = torch.randn(300, 8, dtype=torch.float64)
    x = torch.randn(20, 8, dtype=torch.float64)
    for sigma in (0.3, 1.0, 5.0):
        full = pfdist.EmpiricalDenoiser(data, chunk_size=10_000).denoise(x, sigma)
        w = torch.softmax(-torch.cdist(x, data) ** 2 / (2 * sigma**2), dim=1)
        torch.testing.assert_close(full, w @ data)
        torch.testing.assert_close(pfdist.EmpiricalDenoiser(data, chunk_size=17).denoise(x, sigma), w @ data)


def test_empirical_flow_lands_on_training_points():
    data = torch.randn(16, 3, 4, 4)
    emp = pfdist.EmpiricalDenoiser(data)
    out = pfdist.flow_map(emp, pfdist.noise(range(40), (3, 4, 4)))
    dist, _ = pfdist.nearest_neighbors(out, data, k=1)
    assert dist.max() < 1e-3


def test_nearest_neighbors_matches_brute_force():
    data, x = torch.randn(100, 5), torch.randn(7, 5)
    d, i = pfdist.nearest_neighbors(x, data, k=2, chunk_size=9)
    full = torch.cdist(x.double(), data.double())
    dd, ii = full.topk(2, largest=False)
    torch.testing.assert_close(d, dd)
    assert torch.equal(i, ii)
