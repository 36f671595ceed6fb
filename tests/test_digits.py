"""The digits data, their PPCA mixture, and the packaged digits teacher."""

import sys

import numpy as np
import pytest
import torch

import pfdist
from pfdist.data import load_digit_labels, ppca
from pfdist.specs import build_distribution

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def test_load_digits_is_sklearn_data_scaled_to_unit_range():
    x = pfdist.load_digits()
    ref = sklearn_datasets.load_digits().data  # 0..16
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    np.testing.assert_array_equal(((x.reshape(1797, 64) + 1) * 8).numpy(), ref)
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(load_digit_labels(), torch.as_tensor(sklearn_datasets.load_digits().target))


def test_missing_sklearn_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(pfdist.PFDistError, match=r"pip install pfdist\[digits\]"):
        pfdist.load_digits()


def test_ppca_keeps_the_top_variances_and_the_total_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    mean, factors, floor = ppca(x, 4)
    S = torch.cov(x.T, correction=0)
    fitted = factors @ factors.T + floor * torch.eye(12, dtype=torch.float64)
    lam, U = torch.linalg.eigh(S)
    top = U[:, -4:]
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(fitted @ top, top * lam[-4:])  # top eigenpairs kept exactly
    torch.testing.assert_close(torch.trace(fitted), torch.trace(S))  # discarded variance -> floor
    torch.testing.assert_close(floor, lam[:-4].mean())
    with pytest.raises(pfdist.PFDistError, match="rank"):
        ppca(x, 12)


def test_digits_mixture_matches_class_statistics_and_total_variance():
    gm = pfdist.digits_mixture(rank=6)
    x = pfdist.load_digits().reshape(1797, 64).double()
    labels = load_digit_labels()
    assert isinstance(gm, pfdist.GaussianMixture) and gm.shape == (1, 8, 8) and gm.num_components == 10
    counts = torch.bincount(labels).double()
    torch.testing.assert_close(gm.log_weights.exp(), counts / counts.sum())
    for k in (0, 7):
        torch.testing.assert_close(gm.means[k], x[labels == k].mean(0))
    # Monte Carlo oracle: PPCA keeps each class's trace, so E||x - mean||^2 equals the data's.
    s = gm.sample(40_000, generator=torch.Generator().manual_seed(1)).reshape(-1, 64).double()
    sq = ((s - x.mean(0)) ** 2).sum(1)
    target = ((x - x.mean(0)) ** 2).sum(1).mean()
    assert abs(sq.mean() - target) < 4 * sq.std() / 40_000**0.5
    assert build_distribution({"type": "digits_mixture", "rank": 6}).fingerprint() == gm.fingerprint()


def test_unknown_packaged_model_is_one_clear_error():
    from pfdist.specs import load_spec

    with pytest.raises(pfdist.PFDistError, match="pfdist:digits-unet"):
        load_spec("pfdist:nope")
