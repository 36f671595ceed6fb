import pytest
import torch

import pfdist


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run faster (and less noisily on a shared machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gaussians():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    B = torch.randn(4, 2, generator=g, dtype=torch.float64)
    a = pfdist.Gaussian(torch.randn(4, generator=g, dtype=torch.float64), A @ A.T / 4 + 0.1 * torch.eye(4, dtype=torch.float64))
    b = pfdist.Gaussian(torch.zeros(4, dtype=torch.float64), B @ B.T)  # singular, rank 2
    return a, b


@pytest.fixture
def mixture():
    return pfdist.random_low_rank_mixture(6, 3, 2, scale=1.5, mean_scale=2.0, noise_std=0.1, seed=3)
