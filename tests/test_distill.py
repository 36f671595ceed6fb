"""Distilled few-step students on a Gaussian teacher, whose flow map is known in closed form."""

import math

import pytest
import torch
from safetensors.torch import load_file

import pfdist

NET = {"arch": "mlp", "width": 64, "depth": 2, "sigma_data": 1.0}
T = 80.0


def config(epochs: int = 10, **kw) -> pfdist.TrainConfig:
    return pfdist.TrainConfig(batch_size=256, lr=2e-3, epochs=epochs, epoch_images=256 * 100,
                              ema_halflife_images=None, lr_schedule="cosine", **kw)


@pytest.fixture(scope="module")
def gaussian():
    A = torch.tensor([[1.0, 0.3, 0.0, 0.2], [0.0, 0.8, 0.4, 0.0], [0.1, 0.0, 0.6, 0.3], [0.0, 0.2, 0.0, 0.5]])
    g = pfdist.Gaussian(torch.tensor([0.5, -0.3, 0.2, 0.0]), A @ A.T + 0.05 * torch.eye(4))
    return g, pfdist.generator(g.flow_map, sigma_max=T, shape=(4,)), math.sqrt(float(g.cov.trace()))


def e_gen(student, exact) -> float:
    return pfdist.pfd(student, exact, num_samples=2000).value


def test_regression_reaches_the_exact_map_as_pairs_grow(gaussian):
    g, exact, scale = gaussian
    many = pfdist.distill(g, method="regression", steps=1, num_pairs=4096, net=NET, train=config())
    few = pfdist.distill(g, method="regression", steps=1, num_pairs=8, net=NET, train=config())
    assert many.nfe == 1 and many.sigma_max == T
    # The floor is the teacher's own 18-step Heun error against the closed form (about 0.05 scale).
    assert e_gen(many, exact) <= 0.2 * scale
    assert e_gen(many, exact) <= 0.5 * e_gen(few, exact)


def test_regression_on_two_pairs_interpolates_them(gaussian):
    # Theory: with capacity to spare, MSE training drives the loss to 0, so f(x_T^i) = y^i.
    g, _, scale = gaussian
    student = pfdist.distill(g, method="regression", steps=2, num_pairs=2, net=NET, train=config(epochs=4))
    x_T, y = pfdist.distill_pairs(g, 2)
    assert student.nfe == 2
    with torch.no_grad():
        out = student.fn(x_T)
    assert (out - y).norm(dim=1).max() <= 1e-3 * scale
    assert (y[0] - y[1]).norm() > 0.5 * scale  # the two targets are far apart, so interpolation is not trivial


def ideal_consistency_map(g, sigmas, sigma_min):
    """The 2-step DDIM-renoised consistency sampler with the exact consistency function."""

    def fn(x_T):
        x_0 = g.flow(x_T, sigmas[0], sigma_min)
        z = (x_T - x_0) / sigmas[0]
        x = x_0 + math.sqrt(sigmas[1] ** 2 - sigma_min**2) * z
        return g.flow(x, sigmas[1], sigma_min)

    return pfdist.generator(fn, sigma_max=T, shape=(4,))


def test_consistency_student_approaches_its_closed_form(gaussian):
    g, exact, scale = gaussian
    teacher = pfdist.ode_map(g)
    one = pfdist.distill(g, method="consistency", steps=1, num_pairs=4096, net=NET, train=config())
    two = pfdist.distill(g, method="consistency", steps=2, num_pairs=4096, net=NET, train=config())
    assert (one.nfe, two.nfe) == (1, 2) and two.fn.multistep == "segments"
    assert e_gen(one, exact) <= 0.2 * scale
    # Two segments (80 -> 2.52 -> sigma_min) along x_T's own trajectory: with the exact f the chain
    # is the exact map, so only learning error is left (measured 0.08 of the closed form).
    assert e_gen(two, exact) <= 0.3 * scale and e_gen(two, teacher) <= 0.3 * scale


def test_renoised_consistency_sampling_lands_off_the_trajectory(gaussian):
    # Song et al.'s Algorithm 1 with the noise the first step implies: even the exact consistency
    # function lands near, not on, x_T's trajectory (0.28 scale), and the student is near that sampler.
    g, exact, scale = gaussian
    two = pfdist.distill(g, method="consistency", steps=2, num_pairs=4096, net=NET, train=config(), multistep="ddim")
    ideal = ideal_consistency_map(g, two.fn.sigmas, two.fn.sigma_min)
    assert 0.2 * scale <= e_gen(ideal, exact) <= 0.35 * scale
    assert e_gen(two, ideal) <= 0.3 * scale


def test_a_segment_ends_where_the_next_begins(gaussian):
    from pfdist.protocol.few_step import FewStepStudent, consistency_function
    net = pfdist.build_network({"arch": "mlp", "shape": [4], "width": 8, "depth": 1}, seed=0)
    student = FewStepStudent(net, "consistency", [80.0, 2.5, 0.3], 0.002)
    floors = student.floors(torch.tensor([80.0, 3.0, 2.5, 1.0, 0.3, 0.01]))
    assert floors.tolist() == pytest.approx([2.5, 2.5, 0.3, 0.3, 0.002, 0.002])
    one = FewStepStudent(net, "consistency", [80.0, 2.5, 0.3], 0.002, "ddim")  # one segment, re-noised
    assert one.floors(torch.tensor([80.0, 1.0])).tolist() == pytest.approx([0.002, 0.002])
    x, sigma = torch.randn(6, 4), torch.tensor([80.0, 3.0, 2.5, 1.0, 0.3, 0.01])
    with torch.no_grad():
        clean = consistency_function(net, x, sigma, 0.002)
        assert torch.equal(consistency_function(net, x, sigma, 0.002, sigma), x)  # f(x, s; s) = x
        assert torch.allclose(consistency_function(net, x, sigma, 0.002, 0.002), clean)  # the last segment: Song's f
        # Above sigma_min: the DDIM step from sigma to the floor with the clean estimate.
        step = consistency_function(net, x, sigma, 0.002, floors)
        r = ((floors - 0.002) / (sigma - 0.002))[:, None]
        assert torch.allclose(step, clean + r * (x - clean), atol=1e-6)


def ddim_sampler(g, levels):
    """Euler (DDIM) steps of the exact denoiser on ``levels`` (0 last)."""

    def fn(x):
        for sigma, sigma_next in zip(levels[:-1], levels[1:]):
            denoised = g(x, sigma)
            x = denoised + sigma_next / sigma * (x - denoised)
        return x

    return pfdist.generator(fn, sigma_max=T, shape=(4,))


def test_progressive_student_keeps_its_first_teachers_map(gaussian):
    # Four rounds 16 -> 8 -> 4 -> 2 -> 1 steps; each student matches two steps of the last one, so
    # the 1-step student approaches the 16-step DDIM sampler of the exact denoiser (which is itself
    # 0.15 scale from the closed form, and 2 to 1 steps of DDIM are 0.67 to 0.99 away).
    g, exact, scale = gaussian
    student = pfdist.distill(g, method="progressive", steps=1, num_pairs=4096, net=NET, train=config(epochs=5))
    assert student.nfe == 1
    levels = pfdist.edm_sigmas(17, sigma_min=0.002, sigma_max=T, rho=7.0)[:16].tolist()  # the students' nested grid
    first_teacher = ddim_sampler(g, levels + [0.0])
    assert e_gen(student, first_teacher) <= 0.05 * scale
    assert e_gen(student, exact) <= 0.2 * scale


def test_fresh_renoising_is_a_deterministic_function_of_x_T(gaussian):
    g, _, _ = gaussian
    student = pfdist.distill(g, method="consistency", steps=3, num_pairs=64, net=NET, train=config(epochs=1),
                             multistep="fresh")
    x_T = pfdist.noise(range(100_000, 100_016), (4,), T)
    with torch.no_grad():
        whole, halves = student.fn(x_T), torch.cat([student.fn(x_T[8:]), student.fn(x_T[:8])])
    assert torch.equal(whole, torch.cat([halves[8:], halves[:8]]))


@pytest.mark.parametrize("method", ["regression", "consistency", "progressive"])
def test_resumed_distillation_equals_an_uninterrupted_one(gaussian, tmp_path, method):
    g, _, _ = gaussian
    kw = dict(method=method, steps=2, num_pairs=64, net=NET)
    short = dict(batch_size=32, epoch_images=32 * 5, checkpoint_every=1, ema_halflife_images=None)
    whole = pfdist.distill(g, train=pfdist.TrainConfig(epochs=3, **short), out_dir=tmp_path / "a", **kw)
    pfdist.distill(g, train=pfdist.TrainConfig(epochs=1, **short), out_dir=tmp_path / "b", **kw)  # killed after epoch 1
    resumed = pfdist.distill(g, train=pfdist.TrainConfig(epochs=3, **short), out_dir=tmp_path / "b", **kw)
    a, b = load_file(tmp_path / "a" / "student.safetensors"), load_file(tmp_path / "b" / "student.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = pfdist.load_distilled(tmp_path / "b")
    x_T = pfdist.noise(range(100_000, 100_032), (4,), T)
    with torch.no_grad():
        assert torch.equal(loaded.fn(x_T), resumed.fn(x_T)) and torch.equal(whole.fn(x_T), resumed.fn(x_T))
    assert loaded.nfe == 2 and loaded.sigma_max == T


def test_a_checkpoint_of_other_settings_is_refused(gaussian, tmp_path):
    g, _, _ = gaussian
    train = pfdist.TrainConfig(epochs=1, batch_size=32, epoch_images=32)
    pfdist.distill(g, method="regression", steps=1, num_pairs=8, net=NET, train=train, out_dir=tmp_path)
    with pytest.raises(pfdist.CheckpointError, match="another distillation"):
        pfdist.distill(g, method="regression", steps=1, num_pairs=16, net=NET, train=train, out_dir=tmp_path)


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), r"steps must be an integer in \[1, 18\], got 0; the teacher's grid has 18 steps"),
    (dict(steps=19), r"steps must be an integer in \[1, 18\], got 19; the teacher's grid has 18 steps"),
    (dict(steps=1.5), "steps must be an integer"),
    (dict(num_pairs=0), "num_pairs must be an integer >= 1"),
    (dict(method="progressive", steps=10), "progressive distillation halves the steps"),
    (dict(method="dmd"), "unknown distillation method"),
    (dict(train={"epochs": 1}), "train must be a pfdist.TrainConfig"),
    (dict(multistep="random"), "multistep must be one of"),
    (dict(method="regression", multistep="ddim"), "applies to consistency distillation only"),
    (dict(net={"arch": "mlp", "shape": [3]}), "shape"),
])
def test_bad_input_is_refused_before_training(gaussian, tmp_path, kw, match):
    g, _, _ = gaussian
    args = dict(method="consistency", steps=2, num_pairs=8, net=NET, out_dir=tmp_path / "out") | kw
    with pytest.raises(pfdist.PFDistError, match=match):
        pfdist.distill(g, **args)
    assert not (tmp_path / "out").exists()


def test_a_generator_teacher_serves_regression_but_not_consistency(gaussian):
    g, exact, scale = gaussian
    teacher = pfdist.generator(g.flow_map, sigma_max=T, shape=(4,), nfe=18)
    with pytest.raises(pfdist.PFDistError, match="distillation needs the teacher's PF-ODE"):
        pfdist.distill(teacher, method="consistency", steps=1, num_pairs=8)
    student = pfdist.distill(teacher, method="regression", steps=1, num_pairs=8, net=NET, train=config(epochs=1))
    assert student.nfe == 1


def test_load_distilled_refuses_a_plain_denoiser(tmp_path):
    net = pfdist.build_network({"arch": "mlp", "shape": [4], "width": 8, "depth": 1}, seed=0)
    pfdist.save_denoiser(tmp_path / "plain.safetensors", net)
    with pytest.raises(pfdist.CheckpointError, match="not a distilled student"):
        pfdist.load_distilled(tmp_path / "plain.safetensors")


@pytest.mark.parametrize("method", ["regression", "consistency"])
def test_songunet_students_of_an_image_teacher(tmp_path, method):
    g = pfdist.Gaussian(torch.zeros(1, 8, 8), 0.5 * torch.eye(64))
    net = {"arch": "songunet", "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
           "dropout": 0.0}
    student = pfdist.distill(g, method=method, steps=2, num_pairs=16, net=net, out_dir=tmp_path,
                             train=pfdist.TrainConfig(batch_size=8, epochs=1, epoch_images=16))
    x_T = pfdist.noise(range(100_000, 100_003), (1, 8, 8), T)
    with torch.no_grad():
        out = pfdist.load_distilled(tmp_path).fn(x_T)
        assert out.shape == (3, 1, 8, 8) and torch.equal(out, student.fn(x_T))
    assert student.nfe == 2 and student.shape == (1, 8, 8)


def test_a_student_saved_before_segments_loads_as_it_was_made(gaussian, tmp_path):
    # pfdist 0.1 recorded "renoise" (one consistency function, re-noised between steps).
    import json
    g, _, _ = gaussian
    student = pfdist.distill(g, method="consistency", steps=2, num_pairs=8, net=NET, train=config(epochs=1),
                             multistep="ddim", out_dir=tmp_path)
    path = tmp_path / "student.json"
    record = json.loads(path.read_text())
    record["info"]["distill"]["renoise"] = record["info"]["distill"].pop("multistep")
    path.write_text(json.dumps(record))
    loaded = pfdist.load_distilled(tmp_path)
    x_T = pfdist.noise(range(100_000, 100_008), (4,), T)
    with torch.no_grad():
        assert loaded.fn.multistep == "ddim" and torch.equal(loaded.fn(x_T), student.fn(x_T))
