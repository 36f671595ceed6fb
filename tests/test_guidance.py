"""Guided denoisers: the closed form for Gaussians, ranges, labels, fingerprints, refusals."""

import math

import pytest
import torch

import pfdist
from pfdist.errors import PFDistError

F64 = dict(dtype=torch.float64)


def _pair():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov = A @ A.T / 4 + 0.1 * torch.eye(4, dtype=torch.float64)
    mu_net, mu_guide = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    return cov, mu_net, mu_guide


def test_guided_gaussians_with_one_covariance_are_the_gaussian_of_the_extrapolated_mean():
    """D is affine in the mean when the covariance is shared: guide + w (net - guide) is the
    denoiser (and so the flow map) of N(mu_g + w (mu_n - mu_g), Sigma)."""
    cov, mu_n, mu_g = _pair()
    w = 1.7
    d = pfdist.guided(pfdist.Gaussian(mu_n, cov), pfdist.Gaussian(mu_g, cov), w)
    exact = pfdist.Gaussian(mu_g + w * (mu_n - mu_g), cov)
    x = 3 * torch.randn(5, 4, **F64)
    for sigma in (0.01, 1.0, 30.0):
        assert torch.allclose(d(x, sigma), exact(x, sigma), atol=1e-12)
    flow = pfdist.FlowSettings(steps=8)
    r = pfdist.pfd(pfdist.ode_map(exact, flow), pfdist.ode_map(d, flow), shape=(4,), num_samples=16, **F64)
    assert r.value < 1e-10  # float64 round-off of the eigen-decompositions, over 15 evaluations


def test_weight_one_is_the_net_and_fingerprints_tell_weights_and_models_apart():
    cov, mu_n, mu_g = _pair()
    net, guide = pfdist.Gaussian(mu_n, cov), pfdist.Gaussian(mu_g, cov)
    assert pfdist.guided(net, guide, 1) is net
    fps = {pfdist.guided(net, guide, w).fingerprint() for w in (0.5, 1.4, 2.0)}
    fps.add(pfdist.guided(guide, net, 1.4).fingerprint())
    fps |= {net.fingerprint(), guide.fingerprint()}
    assert len(fps) == 6 and None not in fps
    assert pfdist.guided(net, guide, 1.4).fingerprint() == pfdist.guided(net, guide, 1.4).fingerprint()
    assert pfdist.guided(net, lambda x, s: x, 1.4).fingerprint() is None  # an opaque guide is not cached


class _Toy(torch.nn.Module):
    """A conditional or unconditional toy denoiser with a declared range."""

    def __init__(self, label_dim=0, sigma_min=0.0, sigma_max=math.inf, shape=(2,), data_space=None):
        super().__init__()
        self.label_dim, self.sigma_min, self.sigma_max, self.shape = label_dim, sigma_min, sigma_max, shape
        self.data_space = data_space
        self.bias = torch.nn.Parameter(torch.randn(max(label_dim, 1), shape[0], dtype=torch.float64))

    def forward(self, x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
        if self.label_dim:
            assert class_labels is not None and class_labels.shape == (x.shape[0], self.label_dim)
            return x / (1 + sigma**2) + class_labels.to(x.dtype) @ self.bias
        assert class_labels is None
        return x / (1 + sigma**2) + self.bias[0]


def test_cfg_passes_labels_to_the_conditional_net_only_and_ranges_intersect():
    net, guide = _Toy(label_dim=3, sigma_min=0.01, sigma_max=50), _Toy(sigma_min=0.002, sigma_max=80)
    d = pfdist.guided(net, guide, 1.4)
    assert (d.sigma_min, d.sigma_max, d.label_dim, d.shape) == (0.01, 50, 3, (2,))
    x, labels = torch.randn(4, 2, **F64), torch.eye(3, **F64)[[0, 1, 2, 0]]
    with torch.no_grad():
        assert torch.allclose(d(x, 0.5, labels), guide(x, 0.5) + 1.4 * (net(x, 0.5, labels) - guide(x, 0.5)))
        r = pfdist.pfd(pfdist.ode_map(d), pfdist.ode_map(net), num_samples=4, **F64)
    assert r.flow_a["sigma_max"] == 50 and r.value > 0
    auto = pfdist.guided(net, _Toy(label_dim=3), 2.0)  # autoguidance: both conditional
    with torch.no_grad():
        assert torch.allclose(auto(x, 0.5, labels), auto.guide(x, 0.5, labels).lerp(net(x, 0.5, labels), 2.0))


@pytest.mark.parametrize("net, guide, weight, match", [
    (_Toy(shape=(2,)), _Toy(shape=(3,)), 1.4, "shape"),
    (_Toy(label_dim=3), _Toy(label_dim=5), 1.4, "label_dim"),
    (_Toy(), _Toy(label_dim=5), 1.4, "label_dim"),
    (_Toy(data_space="latent:a"), _Toy(data_space="rgb"), 1.4, "data space"),
    (_Toy(sigma_max=1.0), _Toy(sigma_min=2.0), 1.4, "overlap"),
    (_Toy(), _Toy(), math.nan, "weight"),
    (_Toy(), _Toy(), True, "weight"),
    (_Toy(), pfdist.generator(lambda x: x), 1.4, "guide"),
])
def test_guidance_between_different_models_is_refused(net, guide, weight, match):
    with pytest.raises(PFDistError, match=match):
        pfdist.guided(net, guide, weight)
