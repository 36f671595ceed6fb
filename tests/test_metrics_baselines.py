"""The baselines beside PFD (pfdist.metrics) against closed forms and plain references."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pfdist
from pfdist.metrics import generalization_score, reproducibility_score

F64 = torch.float64


def _gaussian(seed: int, d: int = 8) -> pfdist.Gaussian:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    return pfdist.Gaussian(0.5 * torch.randn(d, generator=g, dtype=F64), A @ A.T / d + 0.2 * torch.eye(d, dtype=F64))


def _draw(g: pfdist.Gaussian, n: int, seed: int) -> torch.Tensor:
    return g.sample(n, generator=torch.Generator().manual_seed(seed)).double()


# Fréchet distance


def test_frechet_distance_of_gaussian_samples_matches_the_closed_form():
    g1, g2 = _gaussian(1), _gaussian(2)
    exact = pfdist.gaussian_w2(g1, g2) ** 2  # FD reports the square, the population value is W2²
    for seed in range(3):
        fd = pfdist.frechet_distance(_draw(g1, 40_000, 10 + seed), _draw(g2, 40_000, 20 + seed))
        assert fd == pytest.approx(exact, rel=0.03)


def test_frechet_distance_agrees_with_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 5, generator=g, dtype=F64), 2 * torch.randn(60, 5, generator=g, dtype=F64) + 1
    S_a, S_b = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    root = scipy_linalg.sqrtm(S_a @ S_b)
    assert abs(root.imag).max() < 1e-8  # a well-conditioned case: sqrtm is real here
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + (S_a.trace() + S_b.trace() - 2 * root.real.trace())
    assert pfdist.frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)


def test_frechet_distance_with_fewer_samples_than_features_equals_the_covariance_formula():
    # The sample-space route (nuclear norm of A Bᵀ) against the d x d eigen-decomposition, written out here.
    g = torch.Generator().manual_seed(2)
    a = torch.randn(30, 80, generator=g, dtype=F64) * torch.linspace(0.1, 2, 80, dtype=F64)
    b = torch.randn(45, 80, generator=g, dtype=F64) + 0.2
    S_a, S_b = torch.cov(a.T), torch.cov(b.T)
    lam, Q = torch.linalg.eigh(S_a)
    root = (Q * lam.clamp_min(0).sqrt()) @ Q.T
    cross = torch.linalg.eigvalsh(root @ S_b @ root).clamp_min(0).sqrt().sum()
    reference = (((a.mean(0) - b.mean(0)) ** 2).sum() + S_a.trace() + S_b.trace() - 2 * cross).item()
    assert pfdist.frechet_distance(a, b) == pytest.approx(reference, rel=1e-7)
    assert pfdist.frechet_distance(b, a) == pytest.approx(reference, rel=1e-7)


def test_frechet_distance_is_zero_on_itself_symmetric_and_real_for_singular_fits():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(30, 2, 3, generator=g), torch.randn(40, 6, generator=g) + 0.3
    assert pfdist.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-10)
    assert pfdist.frechet_distance(a, b) == pytest.approx(pfdist.frechet_distance(b, a), rel=1e-9)
    few = torch.randn(4, 20, generator=g)  # 4 samples of 20 features: rank-3 covariance
    value = pfdist.frechet_distance(few, torch.randn(5, 20, generator=g))
    assert math.isfinite(value) and value > 0
    assert pfdist.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-10)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 12))
def test_frechet_distance_of_a_shifted_copy_is_the_squared_shift(seed, d, n):
    # Equal covariances cancel the trace term exactly: FD² = |c|², whatever n (even n < d) and d.
    g = torch.Generator().manual_seed(seed)
    a, c = torch.randn(n, d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    assert pfdist.frechet_distance(a, a + c) == pytest.approx((c**2).sum().item(), rel=1e-7, abs=1e-7)
    b = torch.randn(n + 1, d, generator=g, dtype=F64)
    assert pfdist.frechet_distance(a, b) == pytest.approx(pfdist.frechet_distance(b, a), rel=1e-6, abs=1e-9)
    assert pfdist.frechet_distance(a, b) >= 0


# KID


def _plain_unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD² written out pair by pair, with KID's kernel (x·y/d + 1)^3."""
    m, d = x.shape
    k = lambda u, v: (float(u @ v) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_with_one_subset_of_all_samples_is_the_plain_unbiased_mmd2():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(25, 2, 3, generator=g, dtype=F64), 1.3 * torch.randn(25, 6, generator=g, dtype=F64) + 0.2
    result = pfdist.kid(a, b, subsets=1, subset_size=25)
    reference = _plain_unbiased_mmd2(a.reshape(25, -1), b)
    assert result.mean == pytest.approx(reference, rel=1e-10)
    assert result.std == 0.0 and result.values.shape == (1,)


def test_kid_subsets_are_plain_estimates_on_the_drawn_rows_and_fixed_by_the_seed():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, 4, generator=g, dtype=F64), torch.randn(30, 4, generator=g, dtype=F64) + 0.5
    r = pfdist.kid(a, b, subsets=5, subset_size=12, seed=7)
    assert torch.equal(r.values, pfdist.kid(a, b, subsets=5, subset_size=12, seed=7).values)
    assert not torch.equal(r.values, pfdist.kid(a, b, subsets=5, subset_size=12, seed=8).values)
    assert r.mean == pytest.approx(r.values.mean().item()) and r.std == pytest.approx(r.values.std(unbiased=False).item())
    # The first subset, redrawn with the documented rule, is the plain estimator on those rows.
    gen = torch.Generator().manual_seed(7)
    ia, ib = torch.randperm(40, generator=gen)[:12], torch.randperm(30, generator=gen)[:12]
    assert r.values[0].item() == pytest.approx(_plain_unbiased_mmd2(a[ia], b[ib]), rel=1e-10)
    assert pfdist.kid(a, b).subset_size == 30  # default: min(1000, n_a, n_b)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(400, 3, generator=g, dtype=F64), torch.randn(400, 3, generator=g, dtype=F64)
    same = pfdist.kid(a, b, subsets=20, subset_size=200)
    shifted = pfdist.kid(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * max(same.std, abs(same.mean))


# Memorization ratio and the RP / GL scores


def test_memorization_ratio_counts_planted_copies_and_not_fresh_samples():
    g = torch.Generator().manual_seed(5)
    train = torch.randn(200, 16, generator=g, dtype=F64)
    exact = train[:20].clone()
    near = train[20:40] + 1e-3 * torch.randn(20, 16, generator=g, dtype=F64)
    fresh = torch.randn(40, 16, generator=g, dtype=F64)
    result = pfdist.memorization_ratio(torch.cat([exact, near, fresh]), train)
    assert result.ratio == 0.5
    assert result.memorized[:40].all() and not result.memorized[40:].any()
    assert (result.distance_ratio[:20] == 0).all() and result.threshold == pytest.approx(1 / 3)
    # A sample halfway between two training points has ratio 1; at 1/4 of the way, 1/3.
    pair = torch.zeros(2, 16, dtype=F64)
    pair[1, 0] = 4.0
    probe = torch.zeros(2, 16, dtype=F64)
    probe[0, 0], probe[1, 0] = 2.0, 0.9
    r = pfdist.memorization_ratio(probe, pair)
    torch.testing.assert_close(r.distance_ratio, torch.tensor([1.0, 0.9 / 3.1], dtype=F64))
    assert r.memorized.tolist() == [False, True] and r.ratio == 0.5
    assert pfdist.memorization_ratio(probe, pair, threshold=0.2).ratio == 0.0


def test_reproducibility_score_counts_pairs_above_the_cosine_threshold():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(10, 8, generator=g, dtype=F64)
    a = a / a.norm(dim=1, keepdim=True)
    other = torch.randn(10, 8, generator=g, dtype=F64)
    other = other - (other * a).sum(1, keepdim=True) * a
    other = other / other.norm(dim=1, keepdim=True)  # orthogonal to a, row by row
    cos = torch.linspace(-0.9, 0.95, 10, dtype=F64)[:, None]
    b = 3.0 * (cos * a + (1 - cos**2).sqrt() * other)  # cosine with a exactly cos; the scale is ignored
    expected = (cos > 0.6).double().mean().item()
    assert reproducibility_score(a, b) == pytest.approx(expected) and 0 < expected < 1
    assert reproducibility_score(a, a) == 1.0


def test_generalization_score_matches_a_brute_force_cosine_search():
    g = torch.Generator().manual_seed(7)
    train = torch.randn(50, 32, generator=g, dtype=F64)
    samples = torch.cat([2.0 * train[:6], train[6:10] + 0.1 * torch.randn(4, 32, generator=g, dtype=F64),
                         torch.randn(30, 32, generator=g, dtype=F64)])
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    best = (unit(samples) @ unit(train).T).max(1).values
    for threshold in (0.3, 0.6, 0.9):
        expected = 1 - (best > threshold).double().mean().item()
        assert generalization_score(samples, train, threshold=threshold) == pytest.approx(expected)
    assert generalization_score(samples, train) == pytest.approx(1 - 10 / 40)  # the 10 planted copies


# Exact Gaussian W2 and KL


def test_gaussian_w2_known_cases():
    g1 = _gaussian(3)
    assert pfdist.gaussian_w2(g1, g1) == pytest.approx(0.0, abs=1e-6)
    one = lambda m, s: pfdist.Gaussian(torch.tensor([m], dtype=F64), torch.tensor([[s * s]], dtype=F64))  # noqa: E731
    assert pfdist.gaussian_w2(one(0.5, 2.0), one(-1.0, 0.5)) == pytest.approx(math.hypot(1.5, 1.5), rel=1e-12)
    # Commuting (diagonal) covariances: W2² = |dmu|² + sum (sqrt(a_i) - sqrt(b_i))².
    va, vb = torch.tensor([1.0, 4.0, 0.0], dtype=F64), torch.tensor([9.0, 1.0, 2.0], dtype=F64)
    ga, gb = pfdist.Gaussian(torch.zeros(3), torch.diag(va)), pfdist.Gaussian(torch.ones(3), torch.diag(vb))
    expected = 3 + ((va.sqrt() - vb.sqrt()) ** 2).sum().item()
    assert pfdist.gaussian_w2(ga, gb) ** 2 == pytest.approx(expected, rel=1e-12)
    assert pfdist.gaussian_w2(ga, gb) == pytest.approx(pfdist.gaussian_w2(gb, ga), rel=1e-12)


def test_gaussian_kl_known_cases_and_monte_carlo():
    g1, g2 = _gaussian(4, d=5), _gaussian(5, d=5)
    assert pfdist.gaussian_kl(g1, g1) == pytest.approx(0.0, abs=1e-10)
    one = lambda m, s: pfdist.Gaussian(torch.tensor([m], dtype=F64), torch.tensor([[s * s]], dtype=F64))  # noqa: E731
    m1, s1, m2, s2 = 0.3, 0.7, -1.0, 1.6
    expected = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert pfdist.gaussian_kl(one(m1, s1), one(m2, s2)) == pytest.approx(expected, rel=1e-12)
    # KL(g1 || g2) = E_{x ~ g1}[log p1(x) - log p2(x)], estimated on 200 000 draws.
    p1 = torch.distributions.MultivariateNormal(g1.mean, g1.cov)
    p2 = torch.distributions.MultivariateNormal(g2.mean, g2.cov)
    x = _draw(g1, 200_000, seed=9)
    log_ratio = p1.log_prob(x) - p2.log_prob(x)
    stderr = log_ratio.std().item() / math.sqrt(x.shape[0])
    assert abs(pfdist.gaussian_kl(g1, g2) - log_ratio.mean().item()) < 4 * stderr
    assert pfdist.gaussian_kl(g1, g2) != pytest.approx(pfdist.gaussian_kl(g2, g1), rel=1e-3)  # not symmetric


# Bad input


@pytest.mark.parametrize("call, match", [
    (lambda a, b: pfdist.frechet_distance(a[:1], b), "covariance needs at least 2"),
    (lambda a, b: pfdist.frechet_distance(a[0], b), r"shape \(n, \*shape\)"),
    (lambda a, b: pfdist.frechet_distance(a, b[:, :3]), "same number of features"),
    (lambda a, b: pfdist.frechet_distance(a.tolist(), b), "must be a tensor"),
    (lambda a, b: pfdist.frechet_distance(a, torch.full_like(b, float("nan"))), "NaN or Inf"),
    (lambda a, b: pfdist.kid(a, b, subset_size=11), "subset_size = 11 is more than"),
    (lambda a, b: pfdist.kid(a, b, subsets=0), "subsets must be an integer"),
    (lambda a, b: pfdist.kid(a, b, seed=-1), "seed must be an integer"),
    (lambda a, b: pfdist.memorization_ratio(a, b[:1]), "second-nearest"),
    (lambda a, b: pfdist.memorization_ratio(a, b, threshold=0.0), "strictly between 0 and 1"),
    (lambda a, b: pfdist.memorization_ratio(a, b, threshold=1.5), "strictly between 0 and 1"),
    (lambda a, b: pfdist.memorization_ratio(a, b, threshold=float("nan")), "finite number"),
    (lambda a, b: reproducibility_score(a, b[:5]), "same seeds"),
    (lambda a, b: reproducibility_score(a, torch.zeros_like(b)), "zero feature vector"),
    (lambda a, b: generalization_score(a, b, threshold=1.0), "strictly between -1 and 1"),
])
def test_bad_input_gets_one_clear_error(call, match):
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    with pytest.raises(pfdist.PFDistError, match=match):
        call(a, b)


def test_gaussian_metrics_refuse_what_they_cannot_measure(gaussians):
    full, singular = gaussians
    with pytest.raises(pfdist.PFDistError, match="singular covariance"):
        pfdist.gaussian_kl(full, singular)
    with pytest.raises(pfdist.PFDistError, match="same shape"):
        pfdist.gaussian_w2(full, _gaussian(0, d=3))
    with pytest.raises(pfdist.PFDistError, match="must be a pfdist.Gaussian"):
        pfdist.gaussian_w2(full, torch.zeros(4))
    assert pfdist.gaussian_w2(full, singular) > 0  # W2 is defined for singular covariances


def _pushforward(g: pfdist.Gaussian, T: float) -> pfdist.Gaussian:
    """The law of g.flow_map(x_T), x_T ~ N(0, T² I): N((I − A) mu, T² A²), A = Sigma^1/2 (Sigma + T² I)^-1/2."""
    A = (g.eigvecs * (g.eigvals / (g.eigvals + T**2)).sqrt()) @ g.eigvecs.T
    return pfdist.Gaussian(g.mean - A @ g.mean, T**2 * A @ A)


def test_gaussian_pfd_bounds_w2_of_the_maps_outputs_from_above(gaussians):
    # Shared noise couples the two maps' outputs, and W2 is the infimum over couplings. The maps
    # start from N(0, T² I), so their outputs follow the Gaussians only as T grows.
    full, singular = gaussians
    pairs = [(full, singular), (_gaussian(1), _gaussian(2)), (_gaussian(3, d=2), _gaussian(4, d=2))]
    for T in (1.0, 80.0):
        for g1, g2 in pairs:
            w2 = pfdist.gaussian_w2(_pushforward(g1, T), _pushforward(g2, T))
            assert pfdist.gaussian_pfd(g1, g2, sigma_max=T) >= w2 - 1e-9
    # Equality when both covariances are one multiple of I: the maps then differ by a constant.
    eye = torch.eye(3, dtype=F64)
    g1, g2 = pfdist.Gaussian(torch.zeros(3, dtype=F64), 2 * eye), pfdist.Gaussian(torch.ones(3, dtype=F64), 2 * eye)
    w2 = pfdist.gaussian_w2(_pushforward(g1, 80.0), _pushforward(g2, 80.0))
    assert pfdist.gaussian_pfd(g1, g2) == pytest.approx(w2, rel=1e-9)
