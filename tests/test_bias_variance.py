"""Bias-variance estimators against a Gaussian case with closed-form bias and variance.

Teacher N(mu, Sigma). Student k is the Gaussian N(mu_k, S) whose mean is fitted to its own N
teacher samples (mu_k ~ N(mu, Sigma / N)) and whose covariance S is misspecified. Closed-form maps
Phi_q(x) = mu_q + C_q (x - mu_q), C_q = q_cov^(1/2) (q_cov + T^2 I)^(-1/2), give

    m(x) = E_D Phi_k(x) = Phi_{N(mu, S)}(x)          bias^2 = mean_x |m(x) - Phi_teacher(x)|^2
    Phi_k(x) - m(x) = (I - C_S)(mu_k - mu)            var = tr((I - C_S) Sigma (I - C_S)^T) / N.
"""

import math

import pytest
import torch

import pfdist
from pfdist.protocol import decompose, student_train_config

T = 80.0


def _sqrtm(a):
    lam, q = torch.linalg.eigh(a)
    return q @ torch.diag(lam.clamp_min(0).sqrt()) @ q.T


@pytest.fixture(scope="module")
def replications():
    d, n, k, m, reps = 3, 4, 3, 64, 1000
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    sigma = torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    s_cov = 1.6 * sigma  # misspecified: a bias of the size of the variance
    teacher = pfdist.Gaussian(mu, sigma)
    x_T = pfdist.noise(range(100_000, 100_000 + m), (d,), T).double()
    t_out = teacher.flow_map(x_T, T)
    mean_map = pfdist.Gaussian(mu, s_cov).flow_map(x_T, T)
    c_s = _sqrtm(s_cov) @ torch.linalg.inv(_sqrtm(s_cov + T**2 * torch.eye(d, dtype=torch.float64)))
    a = torch.eye(d, dtype=torch.float64) - c_s
    truth = {"bias_sq": float(((mean_map - t_out) ** 2).sum(1).mean()), "var": float(torch.trace(a @ sigma @ a.T) / n)}
    chol = torch.linalg.cholesky(sigma)
    results = []
    for _ in range(reps):
        fitted = [mu + chol @ torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(n) for _ in range(k)]
        students = [f + (x_T - f) @ c_s.T for f in fitted]  # the closed-form map, batched over replications
        if not results:
            torch.testing.assert_close(students[0], pfdist.Gaussian(fitted[0], s_cov).flow_map(x_T, T))
        results.append(decompose(t_out, students))
    return truth, results, k


def _mean_and_se(values):
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


def test_unbiased_estimates_match_the_closed_form(replications):
    truth, results, k = replications
    var_u, se_var = _mean_and_se([r.e_var_unbiased for r in results])
    bias_u, se_bias = _mean_and_se([r.e_bias_sq_unbiased for r in results])
    assert abs(var_u - truth["var"]) < 4 * se_var
    assert abs(bias_u - truth["bias_sq"]) < 4 * se_bias


def test_plug_in_estimates_have_the_derived_bias(replications):
    truth, results, k = replications
    var_p, se_var = _mean_and_se([r.e_var for r in results])
    bias_p, se_bias = _mean_and_se([r.e_bias**2 for r in results])
    assert abs(var_p - (k - 1) / k * truth["var"]) < 4 * se_var  # E[plug-in var] = (K-1)/K Var
    assert abs(var_p - truth["var"]) > 4 * se_var  # ... which is detectably low
    assert abs(bias_p - (truth["bias_sq"] + truth["var"] / k)) < 4 * se_bias  # E[plug-in bias^2] = Bias^2 + Var/K
    assert abs(bias_p - truth["bias_sq"]) > 4 * se_bias


def test_both_decompositions_satisfy_the_identity(replications):
    _, results, _ = replications
    for r in results[:50]:
        assert r.e_bias**2 + r.e_var == pytest.approx(r.mean_e_gen_sq, rel=1e-12)
        assert r.e_bias_sq_unbiased + r.e_var_unbiased == pytest.approx(r.mean_e_gen_sq, rel=1e-12)
        assert r.to_dict()["e_bias_unbiased"] == pytest.approx(math.sqrt(max(r.e_bias_sq_unbiased, 0)))


def test_identical_students_have_zero_variance():
    t = torch.randn(10, 3, dtype=torch.float64)
    s = t + 1.0
    r = decompose(t, [s, s.clone()])
    assert r.e_var == 0 and r.e_var_unbiased == 0 and r.e_bias_sq_unbiased == pytest.approx(3.0)


def test_student_seeds_shared_or_per_student():
    train = pfdist.TrainConfig(seed=7)
    assert all(student_train_config(train, i, "shared") is train for i in range(3))
    own = [student_train_config(train, i, "per_student").seed for i in range(4)]
    assert own[0] == 7 and len(set(own)) == 4
    with pytest.raises(pfdist.PFDistError, match="seeds must be one of"):
        student_train_config(train, 1, "each")
