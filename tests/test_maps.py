"""Maps as values: generators, ODE maps, precomputed outputs that know what they are, sigma ranges, labels."""

import math

import numpy as np
import pytest
import torch

import pfdist

F64 = dict(dtype=torch.float64)


# Done-when checks.

def test_two_gaussian_generators_agree_with_the_closed_form(gaussians):
    a, b = gaussians
    r = pfdist.pfd(pfdist.generator(a.flow_map), pfdist.generator(b.flow_map), shape=(4,), num_samples=4000,
                   batch_size=1000, **F64)
    assert r.ci[0] <= pfdist.gaussian_pfd(a, b) <= r.ci[1], (r, pfdist.gaussian_pfd(a, b))
    assert r.nfe_a == r.nfe_b == 1 and r.flow_a is None and r.flow_b is None


def test_exact_map_against_its_heun_map_is_within_discretization_error(gaussians):
    """Heun is 2nd order: PFD(exact, Heun-n) ~ C n^-2, and Richardson's estimate from the
    Heun-18 and Heun-36 maps alone, 4/3 PFD(Heun-18, Heun-36), predicts the Heun-18 error."""
    g = gaussians[0]
    exact = pfdist.generator(g.flow_map, nfe=0)
    heun = lambda n: pfdist.ode_map(g, pfdist.FlowSettings(steps=n))  # noqa: E731
    errors = [pfdist.pfd(exact, heun(n), num_samples=32, **F64).value for n in (18, 36, 72)]
    slope = -np.polyfit(np.log([18, 36, 72]), np.log(errors), 1)[0]
    assert abs(slope - 2) < 0.25, (errors, slope)
    richardson = 4 / 3 * pfdist.pfd(heun(18), heun(36), num_samples=32, **F64).value
    assert errors[0] == pytest.approx(richardson, rel=0.15)


def test_a_few_step_student_against_its_teachers_ode_map(gaussians):
    """Each side keeps its own settings; nfe is reported per side."""
    g = gaussians[0]
    one_step = pfdist.generator(g.flow_map, nfe=1)
    r = pfdist.pfd(one_step, pfdist.ode_map(g, pfdist.FlowSettings(steps=10)), num_samples=8, **F64)
    assert (r.nfe_a, r.nfe_b, r.nfe) == (1, 19, 19)
    assert r.flow_b == pfdist.FlowSettings(steps=10).to_dict()
    d = r.to_dict()
    assert d["nfe_a"] == 1 and d["flow_b"]["steps"] == 10


def test_denoiser_map_and_outputs_give_one_result_on_each_side(gaussians):
    a, b = gaussians
    flow = pfdist.FlowSettings(steps=8)
    direct = pfdist.pfd(a, b, num_samples=12, flow=flow, **F64)
    outs = pfdist.flow_outputs(b, num_samples=12, seed=100_000, flow=flow, **F64)
    for left in (a, pfdist.ode_map(a, flow)):
        for right in (b, pfdist.ode_map(b, flow), outs):
            r = pfdist.pfd(left, right, num_samples=12, flow=flow, **F64)
            assert torch.equal(r.per_sample, direct.per_sample)
    assert pfdist.pfd(a, outs, num_samples=12, **F64).flow_a == flow.to_dict()  # the outputs' grid is inherited


# Precomputed outputs know what they are.

def test_outputs_made_with_another_descriptor_are_refused(mixture):
    outs = pfdist.flow_outputs(mixture, num_samples=8)
    with pytest.raises(pfdist.PFDistError, match="descriptor"):
        pfdist.pfd(mixture, outs, num_samples=8, descriptor=lambda x: 2 * x)
    assert pfdist.pfd(mixture, outs, num_samples=8).value == 0.0


def test_a_descriptor_without_fingerprint_matches_only_itself(mixture):
    psi = lambda x: 2 * x  # noqa: E731
    outs = pfdist.flow_outputs(mixture, num_samples=8, descriptor=psi)
    assert outs.descriptor is None
    assert pfdist.pfd(mixture, outs, num_samples=8, descriptor=psi).value == 0.0
    with pytest.raises(pfdist.PFDistError, match="descriptor"):
        pfdist.pfd(mixture, outs, num_samples=8, descriptor=lambda x: 2 * x)
    with pytest.raises(pfdist.PFDistError, match="descriptor"):
        pfdist.pfd(mixture, outs, num_samples=8)


def test_describe_records_the_descriptor(mixture):
    pixels = pfdist.flow_outputs(mixture, num_samples=8)
    psi = torch.nn.Linear(6, 3)
    described = pixels.describe(psi)
    assert described.descriptor == pfdist.hashing.fingerprint(psi)
    assert pfdist.pfd(mixture, described, num_samples=8, descriptor=psi).value == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(pfdist.PFDistError, match="descriptor"):
        pfdist.pfd(mixture, described, num_samples=8)
    with pytest.raises(pfdist.PFDistError, match="already in a descriptor space"):
        described.describe(psi)


@pytest.mark.parametrize("change,match", [
    (dict(dtype=torch.float64), "dtype"),
    (dict(flow=pfdist.FlowSettings(steps=10)), "precomputed on"),
    (dict(sigma_max=40.0), "precomputed on"),
])
def test_outputs_for_another_comparison_are_refused(mixture, change, match):
    outs = pfdist.flow_outputs(mixture, num_samples=8)
    with pytest.raises(pfdist.PFDistError, match=match):
        pfdist.pfd(mixture, outs, num_samples=8, **change)
    with pytest.raises(pfdist.PFDistError, match="noise levels"):
        pfdist.pfd(pfdist.ode_map(mixture, pfdist.FlowSettings(sigma_max=40.0)), outs, num_samples=8)
    with pytest.raises(pfdist.PFDistError, match="seeds"):
        pfdist.pfd(mixture, outs, num_samples=8, seed=100_001)


def test_outputs_record_what_made_them(mixture, tmp_path):
    outs = pfdist.flow_outputs(mixture, num_samples=6, seed=7, cache_dir=tmp_path, **F64)
    again = pfdist.flow_outputs(mixture, num_samples=6, seed=7, cache_dir=tmp_path, **F64)  # from disk
    for o in (outs, again):
        assert (o.seed, o.shape, o.flow, o.sigma_max, o.dtype, o.descriptor, o.conditioning) == (
            7, (6,), pfdist.FlowSettings(), 80.0, "torch.float64", "identity", None)
        assert o.map_fingerprint == pfdist.ode_map(mixture).fingerprint() and o.key is not None
    assert torch.equal(outs.values, again.values) and outs.metadata() == again.metadata()


# Cache keys cover everything.

class Wrapper(torch.nn.Module):
    """A prediction-type wrapper: the same network read as x0 or as eps prediction."""

    def __init__(self, net, eps_prediction=False, scale=1.0):
        super().__init__()
        self.net, self.eps_prediction, self.scale = net, eps_prediction, scale
        self.shape = (6,)

    def forward(self, x, sigma):
        out = self.scale * self.net(x)
        return x - pfdist.ode.expand_sigma(sigma, x) * out if self.eps_prediction else out


def test_wrappers_differing_in_a_plain_attribute_get_different_keys(tmp_path):
    net = torch.nn.Linear(6, 6)
    kinds = [Wrapper(net), Wrapper(net, eps_prediction=True), Wrapper(net, scale=0.5)]
    keys = {pfdist.hashing.fingerprint(w) for w in kinds}
    assert len(keys) == 3 and None not in keys
    assert pfdist.hashing.fingerprint(Wrapper(net)) == pfdist.hashing.fingerprint(kinds[0])
    outs = [pfdist.flow_outputs(w, num_samples=4, cache_dir=tmp_path, flow=pfdist.FlowSettings(steps=4)) for w in kinds]
    assert not torch.equal(outs[0].values, outs[1].values) and not torch.equal(outs[0].values, outs[2].values)
    assert len(list(tmp_path.glob("flow-*.safetensors"))) == 3


def test_train_and_eval_modes_get_different_keys():
    net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.5))
    train_key = pfdist.hashing.fingerprint(net)
    assert pfdist.hashing.fingerprint(net.eval()) != train_key


def test_a_module_with_an_opaque_attribute_is_not_cached(tmp_path):
    w = Wrapper(torch.nn.Linear(6, 6))
    w.postprocess = lambda x: x  # a function: what it does cannot be hashed
    assert pfdist.hashing.fingerprint(w) is None
    with pytest.warns(pfdist.PFDistWarning, match="cache_dir is ignored: the model has no fingerprint"):
        out = pfdist.flow_outputs(w, num_samples=4, cache_dir=tmp_path, steps=4)
    assert out.key is None and not list(tmp_path.iterdir())
    assert out.flow == pfdist.FlowSettings(steps=4)  # steps= replaces that field of EDM's defaults, as in pfd
    with pytest.raises(pfdist.PFDistError, match="a map brings its own"):
        pfdist.flow_outputs(pfdist.ode_map(w), num_samples=4, steps=4)
    hooked = Wrapper(torch.nn.Linear(6, 6))
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    assert pfdist.hashing.fingerprint(hooked) is None


# Model sigma range.

class Ranged:
    """A Gaussian that declares a sigma range and records the sigmas it is called at."""

    def __init__(self, g, sigma_min, sigma_max):
        self.g, self.sigma_min, self.sigma_max, self.shape, self.seen = g, sigma_min, sigma_max, g.shape, []

    def __call__(self, x, sigma):
        self.seen.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
        return self.g(x, sigma)


def test_grid_is_the_intersection_of_the_models_ranges(gaussians):
    a, b = Ranged(gaussians[0], 0.01, 100.0), Ranged(gaussians[1], 0.001, 20.0)
    r = pfdist.pfd(a, b, num_samples=4)
    expected = pfdist.FlowSettings(sigma_min=0.01, sigma_max=20.0).to_dict()
    assert r.flow_a == r.flow_b == expected
    for m in (a, b):
        assert max(m.seen) == pytest.approx(20.0) and min(m.seen) == pytest.approx(0.01)
    # the same as both maps on that grid explicitly, with x_T ~ N(0, 20^2 I)
    plain = pfdist.pfd(gaussians[0], gaussians[1], num_samples=4, sigma_min=0.01, sigma_max=20.0)
    torch.testing.assert_close(r.per_sample, plain.per_sample)


def test_a_generator_at_another_noise_level_is_refused(gaussians):
    ranged = Ranged(gaussians[0], 0.002, 20.0)
    with pytest.raises(pfdist.PFDistError, match="noise levels"):
        pfdist.pfd(ranged, pfdist.generator(gaussians[1].flow_map), num_samples=4)
    exact = pfdist.generator(lambda x: gaussians[1].flow_map(x, 20.0), sigma_max=20.0, shape=(4,))
    assert pfdist.pfd(ranged, exact, num_samples=4).flow_a["sigma_max"] == 20.0


def test_disjoint_ranges_are_refused(gaussians):
    with pytest.raises(pfdist.PFDistError, match="do not overlap"):
        pfdist.pfd(Ranged(gaussians[0], 0.002, 1.0), Ranged(gaussians[1], 2.0, 80.0), num_samples=4)


# Class-conditional denoisers.

class Conditional:
    """D(x, sigma, class_labels) of N(mu_k, cov): one Gaussian per class."""

    label_dim = 3
    shape = (4,)

    def __init__(self, cov, offset=0.0):
        self.classes = [pfdist.Gaussian(torch.full((4,), 3.0 * k + offset, **F64), cov) for k in range(3)]

    def __call__(self, x, sigma, class_labels):
        k = class_labels.argmax(1)
        out = torch.stack([g(x, sigma) for g in self.classes])  # (K, batch, 4)
        return out[k, torch.arange(x.shape[0])]


def test_labels_are_drawn_from_the_seed():
    a = pfdist.seeded_labels(range(100, 140), 5)
    b = torch.cat([pfdist.seeded_labels([s], 5) for s in reversed(range(100, 140))]).flip(0)
    assert torch.equal(a, b) and torch.equal(a.sum(1), torch.ones(40))
    counts = pfdist.seeded_labels(range(3000), 3).sum(0)
    assert ((counts - 1000).abs() < 4 * math.sqrt(3000 * (1 / 3) * (2 / 3))).all()  # uniform, 4 sigma


def test_conditional_maps_share_labels_whatever_the_batch(gaussians):
    cov = gaussians[0].cov
    a, b = Conditional(cov), Conditional(cov, offset=0.5)
    r1 = pfdist.pfd(a, b, num_samples=12, batch_size=12, **F64)
    r2 = pfdist.pfd(a, b, num_samples=12, batch_size=5, **F64)
    torch.testing.assert_close(r1.per_sample, r2.per_sample)
    # same labels on both sides: the class means cancel, only the 0.5 offset (contracted by the flow) remains
    labels = pfdist.seeded_labels(range(100_000, 100_012), 3).argmax(1)
    for k in range(3):
        same = pfdist.pfd(a.classes[k], b.classes[k], num_samples=12, **F64).per_sample
        torch.testing.assert_close(r1.per_sample[labels == k], same[labels == k])


def test_fixed_class_labels(gaussians):
    cond = Conditional(gaussians[0].cov)
    r = pfdist.pfd(cond, cond.classes[2], class_labels=2, num_samples=6, **F64)
    assert r.value == 0.0
    with pytest.raises(pfdist.PFDistError, match="class index"):
        pfdist.pfd(cond, cond, class_labels=3, num_samples=6, **F64)


def test_outputs_with_other_labels_are_refused(gaussians):
    cond = Conditional(gaussians[0].cov)
    fixed = pfdist.flow_outputs(cond, num_samples=6, class_labels=1, **F64)
    assert fixed.conditioning == "class=1/3"
    with pytest.raises(pfdist.PFDistError, match="class labels"):
        pfdist.pfd(cond, fixed, num_samples=6, **F64)
    assert pfdist.pfd(pfdist.ode_map(cond, class_labels=1), fixed, num_samples=6, **F64).value == 0.0


# Settings own their validation.

@pytest.mark.parametrize("bad", [dict(steps=2.5), dict(steps=True), dict(steps=1), dict(rho=math.inf),
                                 dict(rho=0), dict(sigma_min=80.0), dict(sigma_max=math.nan), dict(sigma_min=-1.0),
                                 dict(sigma_max=True), dict(solver="rk4"), dict(solver=None)])
def test_flow_settings_refuse_bad_values(bad):
    with pytest.raises(pfdist.PFDistError):
        pfdist.FlowSettings(**bad)


def test_flow_settings_normalise_numbers():
    assert pfdist.FlowSettings(sigma_max=80, rho=7) == pfdist.FlowSettings()
    assert pfdist.FlowSettings.of(None, steps=35) == pfdist.FlowSettings(steps=35)
    assert pfdist.FlowSettings().nfe == 35


@pytest.mark.parametrize("bad", [dict(num_samples=2.5), dict(loss_repeats=0), dict(batch_size=0), dict(steps=2.5),
                                 dict(seed=-1), dict(test_samples=True), dict(solver="nope")])
def test_eval_config_refuses_bad_values(bad):
    with pytest.raises(pfdist.PFDistError):
        pfdist.EvalConfig.from_dict(bad)


def test_eval_config_holds_flow_settings_and_keeps_its_flat_dict():
    config = pfdist.EvalConfig.from_dict({"num_samples": 64, "steps": 35, "solver": "euler"})
    assert config.flow == pfdist.FlowSettings(steps=35, solver="euler")
    assert config.to_dict() == {"num_samples": 64, "seed": 100_000, "steps": 35, "solver": "euler", "sigma_min": 0.002,
                                "sigma_max": 80.0, "rho": 7.0, "batch_size": 256, "test_samples": 2048,
                                "loss_repeats": 4, "loss_seed": 12345}
    assert pfdist.EvalConfig.from_dict(config.to_dict()) == config
    with pytest.raises(pfdist.PFDistError, match="flow must be a FlowSettings"):
        pfdist.EvalConfig(flow={"steps": 35})
    with pytest.raises(pfdist.PFDistError, match="unknown EvalConfig keys"):
        pfdist.EvalConfig.from_dict({"flow": {"steps": 35}})


def test_maps_refuse_what_is_not_a_map(gaussians):
    with pytest.raises(pfdist.PFDistError, match="ode_map needs"):
        pfdist.ode_map(3)
    with pytest.raises(pfdist.PFDistError, match="generator needs"):
        pfdist.generator("g")
    with pytest.raises(pfdist.PFDistError, match="not class-conditional"):
        pfdist.ode_map(gaussians[0], class_labels=1)
    with pytest.raises(pfdist.PFDistError, match="shape"):
        pfdist.pfd(pfdist.generator(lambda x: x[:, :2]), gaussians[0], num_samples=4)


def test_the_seed_loop_evaluates_any_contiguous_range_alone(mixture):
    """Plan.evaluate_range is the seam for spreading one comparison over processes."""
    from pfdist.plan import make_plan

    other = pfdist.random_low_rank_mixture(6, 2, 2, seed=9)
    p = make_plan({"a": mixture, "b": other}, reduce=lambda outs: pfdist.squared_distances(*outs), batch_size=4)
    whole = p.evaluate_range(range(100, 110))
    parts = [p.evaluate_range(r) for r in (range(100, 103), range(103, 110))]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(whole, pfdist.pfd(mixture, other, num_samples=10, seed=100).per_sample)
    with pytest.raises(pfdist.PFDistError, match="contiguous"):
        p.evaluate_range(range(100, 110, 2))
