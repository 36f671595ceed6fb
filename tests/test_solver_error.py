"""Accuracy per NFE and the discretisation error bar of a PFD, against exact maps.

Oracles: the Gaussian's closed-form flow map and the adaptive dopri5 ``reference`` solver on a
Gaussian mixture (which agrees with the closed form to 1e-5, tests/test_gaussian_and_solvers.py).
"""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app

F64 = dict(dtype=torch.float64)


def moment_matched_gaussian(mix: pfdist.GaussianMixture) -> pfdist.Gaussian:
    """The Gaussian with the mixture's exact mean and covariance."""
    return pfdist.Gaussian(*mix.moments())


def test_mixture_moments_match_its_samples(mixture):
    mean, cov = mixture.moments()
    y = mixture.sample(200_000, generator=torch.Generator().manual_seed(1)).double()
    torch.testing.assert_close(y.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(y.T), cov, atol=0.06, rtol=0)


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return pfdist.squared_distances(a, b).mean().sqrt().item()


def exact_maps(pair, seeds: range, shape) -> list[torch.Tensor]:
    x_T = pfdist.noise(seeds, shape, 80.0, dtype=torch.float64)
    return x_T, [pfdist.flow_map(m, x_T, solver="reference") for m in pair]


def test_unipc_at_35_nfe_is_within_one_percent_of_the_pfd_on_the_mixture(mixture):
    """The benchmark's setting: each map's RMS error vs dopri5, relative to the exact maps' PFD."""
    pair = (mixture, moment_matched_gaussian(mixture))
    x_T, exact = exact_maps(pair, range(100_000, 100_256), (6,))
    pfd_exact = rms(*exact)
    errors = {}
    for solver, steps in (("unipc", 35), ("heun", 18)):
        errors[solver] = [rms(pfdist.flow_map(m, x_T, solver=solver, steps=steps), e) / pfd_exact
                          for m, e in zip(pair, exact)]
    assert max(errors["unipc"]) <= 0.01, errors
    assert pfdist.FlowSettings(solver="unipc", steps=35).nfe == 35
    assert min(errors["heun"]) > 2 * max(errors["unipc"]), errors  # EDM's default (35 NFE) is coarser


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_solver_error_is_within_a_factor_3_of_the_truth_on_a_mixture(mixture, solver):
    pair = (mixture, moment_matched_gaussian(mixture))
    r = pfdist.pfd(*pair, num_samples=128, solver=solver, steps=18, error_estimate=True, **F64)
    x_T, exact = exact_maps(pair, range(r.seed, r.seed + 128), (6,))
    truth = [rms(pfdist.flow_map(m, x_T, solver=solver, steps=18), e) for m, e in zip(pair, exact)]
    for est, true in zip((r.solver_error_a, r.solver_error_b), truth):
        assert 1 / 3 <= est / true <= 3, (est, true)
    assert r.solver_error == r.solver_error_a + r.solver_error_b
    assert abs(r.value - rms(*exact)) <= r.solver_error  # the bound it is documented to be


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_solver_error_is_within_a_factor_3_of_the_closed_form_on_a_gaussian(gaussians, solver):
    a, b = gaussians
    r = pfdist.pfd(a, b, num_samples=64, solver=solver, steps=18, error_estimate=True, **F64)
    x_T = pfdist.noise(range(r.seed, r.seed + 64), (4,), 80.0, dtype=torch.float64)
    for g, est in ((a, r.solver_error_a), (b, r.solver_error_b)):
        # the closed form to sigma_min, then every solver's last step x <- D(x; sigma_min)
        exact = g.denoise(g.flow(x_T, 80.0, 0.002), 0.002)
        true = rms(pfdist.flow_map(g, x_T, solver=solver, steps=18), exact)
        assert 1 / 3 <= est / true <= 3, (est, true)


def test_solver_error_does_not_depend_on_batch_size_or_on_seeds_past_the_estimate(mixture, gaussians):
    other = pfdist.random_low_rank_mixture(6, 2, 2, seed=9)
    base = pfdist.pfd(mixture, other, num_samples=200, steps=6, error_estimate=True, **F64)
    batched = pfdist.pfd(mixture, other, num_samples=200, steps=6, error_estimate=True, batch_size=7, **F64)
    longer = pfdist.pfd(mixture, other, num_samples=300, steps=6, error_estimate=True, batch_size=64, **F64)
    assert batched.solver_error_a == pytest.approx(base.solver_error_a, rel=1e-12)
    assert batched.solver_error_b == pytest.approx(base.solver_error_b, rel=1e-12)
    assert longer.solver_error_a == pytest.approx(base.solver_error_a, rel=1e-12)  # the same first 128 seeds
    shifted = pfdist.pfd(mixture, other, num_samples=200, seed=7, steps=6, error_estimate=True, **F64)
    assert shifted.solver_error_a != base.solver_error_a  # other seeds, another estimate
    # Asking for the estimate changes nothing else.
    plain = pfdist.pfd(mixture, other, num_samples=200, steps=6, **F64)
    assert plain.solver_error is None and plain.solver_error_a is None
    assert torch.equal(plain.per_sample, base.per_sample)


def test_solver_error_shrinks_at_the_solvers_order(gaussians):
    """Doubling the grid divides the estimate by about 2^p: it tracks the error, not the value."""
    a, b = gaussians
    for solver, p in (("heun", 2), ("unipc", 4)):
        e = [pfdist.pfd(a, b, num_samples=32, solver=solver, steps=n, error_estimate=True, **F64).solver_error_b
             for n in (64, 128)]
        assert math.log2(e[0] / e[1]) == pytest.approx(p, abs=0.3), (solver, e)


def test_a_generator_side_has_no_discretisation_error(gaussians):
    a, b = gaussians
    r = pfdist.pfd(a, pfdist.generator(b.flow_map, shape=(4,)), num_samples=16, steps=8, error_estimate=True, **F64)
    assert r.solver_error_b == 0.0 and r.solver_error_a > 0
    assert r.solver_error == r.solver_error_a
    assert r.to_dict()["solver_error"] == r.solver_error
    assert "solver error" in str(r)


def test_solver_error_refuses_what_it_cannot_estimate(gaussians):
    a, b = gaussians
    with pytest.raises(pfdist.PFDistError, match="fixed-grid"):
        pfdist.pfd(a, b, num_samples=4, solver="reference", error_estimate=True)
    outs = pfdist.flow_outputs(b, num_samples=8, flow=pfdist.FlowSettings(steps=4))
    with pytest.raises(pfdist.PFDistError, match="precomputed"):
        pfdist.pfd(a, outs, num_samples=8, error_estimate=True)
    with pytest.raises(pfdist.PFDistError, match="True or False"):
        pfdist.pfd(a, b, num_samples=4, error_estimate="yes")


def test_combine_keeps_the_estimate_of_the_first_seeds(gaussians):
    a, b = gaussians
    parts = [pfdist.pfd(a, b, num_samples=n, seed=s, steps=6, error_estimate=True, **F64)
             for s, n in ((100, 130), (230, 20))]
    whole = pfdist.pfd(a, b, num_samples=150, seed=100, steps=6, error_estimate=True, **F64)
    joined = pfdist.PFDResult.combine(parts[::-1])
    assert joined.solver_error_a == pytest.approx(whole.solver_error_a, rel=1e-12)
    assert joined.solver_error_b == pytest.approx(whole.solver_error_b, rel=1e-12)
    assert pfdist.PFDResult.combine([parts[0], pfdist.pfd(a, b, num_samples=20, seed=230, steps=6, **F64)]
                                    ).solver_error is None


@pytest.mark.parametrize("solver", ["dpmpp_3m", "unipc"])
def test_new_solvers_are_reached_through_flow_settings(gaussians, solver):
    a, _ = gaussians
    x_T = pfdist.noise(range(8), (4,), 80.0, dtype=torch.float64)
    flow = pfdist.FlowSettings(solver=solver, steps=12)
    direct = pfdist.solvers.SOLVERS[solver](a, x_T, flow.sigmas())
    assert torch.equal(pfdist.flow_map(a, x_T, flow=flow), direct)
    r = pfdist.pfd(a, pfdist.ode_map(a, flow), num_samples=8, solver=solver, steps=12, **F64)
    assert r.value == 0.0 and r.nfe == 12 and r.flow_a["solver"] == solver


def test_cli_distance_prints_and_writes_the_solver_error(tmp_path):
    spec_a = {"type": "low_rank_mixture", "shape": [5], "num_components": 2, "rank": 2, "seed": 0}
    spec_b = {"type": "gaussian", "mean": [0.0] * 5, "cov": torch.eye(5).tolist()}
    (tmp_path / "a.json").write_text(json.dumps(spec_a))
    (tmp_path / "b.json").write_text(json.dumps(spec_b))
    out = tmp_path / "r.json"
    args = ["distance", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-n", "20", "--steps", "6", "-o", str(out)]
    r = CliRunner().invoke(app, args + ["--error-estimate"])
    assert r.exit_code == 0, r.output
    record = json.loads(out.read_text())
    assert record["solver_error"] > 0 and "solver error" in r.output
    assert record["solver_error"] == pytest.approx(record["solver_error_a"] + record["solver_error_b"])
    default = CliRunner().invoke(app, args)  # estimated unless asked not to
    assert default.exit_code == 0 and json.loads(out.read_text())["solver_error"] == record["solver_error"]
    r = CliRunner().invoke(app, args + ["--no-error-estimate"])
    assert r.exit_code == 0 and json.loads(out.read_text())["solver_error"] is None
    r = CliRunner().invoke(app, args + ["--solver", "reference"])  # adaptive: its tolerance sets its error
    assert r.exit_code == 0 and json.loads(out.read_text())["solver_error"] is None


class _Image:
    """A flat Gaussian's denoiser on (1, 2, 2) images: the shape a decoder sees."""

    shape = (1, 2, 2)

    def __init__(self, g: pfdist.Gaussian):
        self.g = g

    def __call__(self, x, sigma):
        return self.g(x.reshape(len(x), -1), sigma).reshape(x.shape)


def test_the_estimate_reruns_the_map_itself_decoder_included(gaussians):
    """The doubled grid keeps the map's decoder: with a decoder that doubles its input, each
    side's estimated error doubles too (the estimate is of the map's output, not its latents)."""
    a, b = (_Image(g) for g in gaussians)
    plain = pfdist.pfd(pfdist.ode_map(a), pfdist.ode_map(b), num_samples=16, steps=8, error_estimate=True, **F64)
    double = pfdist.pfd(pfdist.ode_map(a, decoder=lambda x: 2 * x), pfdist.ode_map(b, decoder=lambda x: 2 * x),
                        num_samples=16, steps=8, error_estimate=True, **F64)
    assert double.value == pytest.approx(2 * plain.value, rel=1e-9)
    assert double.solver_error_a == pytest.approx(2 * plain.solver_error_a, rel=1e-9)
    assert double.solver_error_b == pytest.approx(2 * plain.solver_error_b, rel=1e-9)


def test_one_maps_solver_error_is_the_side_error_of_a_pfd(gaussians):
    from pfdist.solver_error import map_solver_error

    a, b = gaussians
    r = pfdist.pfd(a, b, num_samples=32, seed=5, steps=8, error_estimate=True, **F64)
    alone = map_solver_error(a, flow=pfdist.FlowSettings(steps=8), seed=5, num_samples=32, **F64)
    assert alone == pytest.approx(r.solver_error_a, rel=1e-12)
