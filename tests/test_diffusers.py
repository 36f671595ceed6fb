"""diffusers adapters against the schedulers' own x_0 predictions (the oracle), and loading from disk."""

from __future__ import annotations

import json

import pytest
import torch

import pfdist
from pfdist.errors import PFDistError

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 8, 8)


def tiny_unet(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=SHAPE[1], in_channels=SHAPE[0], out_channels=kwargs.pop("out_channels", SHAPE[0]),
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"), **kwargs,
    ).double().eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def x_t_batch(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddpm_adapter_matches_scheduler_pred_original_sample(unet, prediction_type, beta_schedule):
    scheduler = diffusers.DDPMScheduler(beta_schedule=beta_schedule, prediction_type=prediction_type, clip_sample=False)
    D = pfdist.from_diffusers(unet, scheduler)
    abar = scheduler.alphas_cumprod.double()
    assert D.sigma_min == pytest.approx(float(((1 - abar[0]) / abar[0]).sqrt()))
    assert D.sigma_max == pytest.approx(float(((1 - abar[-1]) / abar[-1]).sqrt()))
    x_t = x_t_batch()
    for t in (0, 371, 999):
        ref = scheduler.step(unet(x_t, t).sample, t, x_t).pred_original_sample
        sigma = ((1 - abar[t]) / abar[t]).sqrt()
        # x = x_t / sqrt(abar_t): the same noisy image in EDM's variance-exploding form.
        out = D(x_t / abar[t].sqrt(), sigma.expand(len(x_t)))
        assert rel_err(out, ref) < 1e-5, (t, rel_err(out, ref))


def test_ddim_scheduler_and_class_conditional_unet():
    unet = tiny_unet(seed=2, num_class_embeds=5)
    scheduler = diffusers.DDIMScheduler(prediction_type="v_prediction", clip_sample=False)
    scheduler.set_timesteps(1000)
    D = pfdist.from_diffusers(unet, scheduler)
    assert D.label_dim == 5
    x_t, labels = x_t_batch(3), torch.tensor([4, 1])
    abar = scheduler.alphas_cumprod.double()
    for t in (10, 640):
        ref = scheduler.step(unet(x_t, t, class_labels=labels).sample, t, x_t).pred_original_sample
        sigma = ((1 - abar[t]) / abar[t]).sqrt()
        one_hot = torch.nn.functional.one_hot(labels, 5).double()
        for given in (labels, one_hot):
            assert rel_err(D(x_t / abar[t].sqrt(), float(sigma), given), ref) < 1e-5
    with pytest.raises(PFDistError, match="class-conditional"):
        D(x_t, 1.0)
    with pytest.raises(PFDistError, match="one-hot"):
        D(x_t, 1.0, torch.full((2, 5), 0.2, dtype=torch.float64))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"])
def test_edm_schedulers_match_their_preconditioning(unet, name, prediction_type):
    scheduler = getattr(diffusers, name)(sigma_data=0.7, prediction_type=prediction_type, sigma_min=0.01, sigma_max=50.0)
    scheduler.set_timesteps(6)
    D = pfdist.from_diffusers(unet, scheduler)
    assert (D.sigma_min, D.sigma_max) == (0.01, 50.0)
    x = x_t_batch(4) * 3
    for i, t in enumerate(scheduler.timesteps[:-1]):
        sigma = scheduler.sigmas[i].double()
        model_output = unet(scheduler.precondition_inputs(x, sigma), t.double()).sample
        if name == "EDMEulerScheduler":
            ref = scheduler.step(model_output, t, x).pred_original_sample
        else:
            ref = scheduler.precondition_outputs(x, model_output, sigma)
        assert rel_err(D(x, float(sigma)), ref) < 1e-5


def test_timesteps_interpolate_log_sigma(unet):
    D = pfdist.from_diffusers(unet, diffusers.DDPMScheduler())
    sigmas = D.log_sigmas.exp()
    k = torch.arange(len(sigmas), dtype=torch.float64)
    assert torch.allclose(D.timestep(sigmas), k, atol=1e-9)
    mid = (sigmas[:-1] * sigmas[1:]).sqrt()  # the geometric mean lies halfway in log sigma
    assert torch.allclose(D.timestep(mid), k[:-1] + 0.5, atol=1e-9)
    # Outside the training range t clamps; the input scaling still uses the true sigma.
    assert D.timestep(torch.tensor([1e-6, 1e6], dtype=torch.float64)).tolist() == [0.0, len(sigmas) - 1]
    rounded = pfdist.from_diffusers(unet, diffusers.DDPMScheduler(), fractional_timesteps=False)
    assert torch.equal(rounded.timestep(mid[:5] * 1.01), k[1:6])


def test_sigma_zero_returns_x_for_epsilon_models(unet):
    D = pfdist.from_diffusers(unet, diffusers.DDPMScheduler())
    x = x_t_batch()
    assert torch.equal(D(x, 0.0), x)


def test_learned_variance_output_uses_the_prediction_half():
    unet = tiny_unet(seed=5, out_channels=2 * SHAPE[0])
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range", clip_sample=False)
    D = pfdist.from_diffusers(unet, scheduler)
    x_t, t = x_t_batch(6), 250
    abar = scheduler.alphas_cumprod.double()[t]
    ref = scheduler.step(unet(x_t, t).sample, t, x_t).pred_original_sample
    assert rel_err(D(x_t / abar.sqrt(), float(((1 - abar) / abar).sqrt())), ref) < 1e-5


def test_bad_inputs_are_refused(unet):
    with pytest.raises(PFDistError, match="neither"):
        pfdist.from_diffusers(unet, diffusers.ScoreSdeVeScheduler())
    D = pfdist.from_diffusers(unet, diffusers.DDPMScheduler())
    with pytest.raises(PFDistError, match="unconditional"):
        D(x_t_batch(), 1.0, torch.tensor([0, 1]))


def test_load_spec_reads_a_saved_pipeline_with_safetensors(unet, tmp_path):
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet.float(), scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    unet.double()
    assert not list((tmp_path / "pipe").rglob("*.bin"))
    from pfdist.specs import load_spec

    D = load_spec(tmp_path / "pipe")
    assert pfdist.data_shape(D) == SHAPE and D.prediction_type == "v_prediction"
    ref = pfdist.from_diffusers(unet, scheduler)
    x = x_t_batch(7)
    assert rel_err(D.double()(x, 2.0), ref(x, 2.0)) < 1e-6
    # A bare UNet2DModel directory with the scheduler config beside it loads too.
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "unet")
    assert rel_err(load_spec(tmp_path / "unet").double()(x, 2.0), ref(x, 2.0)) < 1e-6


def test_pickle_weights_and_unknown_classes_are_refused(unet, tmp_path):
    from pfdist.specs import load_spec

    unet.save_pretrained(tmp_path / "m", safe_serialization=False)
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "m")
    with pytest.raises(PFDistError, match="safetensors"):
        load_spec(tmp_path / "m")
    config = tmp_path / "m" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "os.system"}))
    with pytest.raises(PFDistError, match="not a diffusers SchedulerMixin"):
        load_spec(tmp_path / "m")


def test_cli_distance_between_two_diffusers_directories(tmp_path):
    from typer.testing import CliRunner

    from pfdist.cli import app
    from pfdist.specs import load_spec

    for i, name in enumerate("ab"):
        scheduler = diffusers.DDPMScheduler(prediction_type=["epsilon", "sample"][i])
        diffusers.DDPMPipeline(unet=tiny_unet(seed=10 + i).float(), scheduler=scheduler).save_pretrained(tmp_path / name)
    out = tmp_path / "pfd.json"
    args = ["distance", str(tmp_path / "a"), str(tmp_path / "b"), "-n", "3", "--steps", "3", "-o", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    a, b = (load_spec(tmp_path / n) for n in "ab")
    expected = pfdist.pfd(a, b, shape=SHAPE, num_samples=3, steps=3)
    assert json.loads(out.read_text())["pfd"] == pytest.approx(expected.value, rel=1e-5)


def test_class_conditional_adapter_runs_through_pfd():
    import copy

    unet = tiny_unet(seed=3, num_class_embeds=4).float()
    D = pfdist.from_diffusers(unet, diffusers.DDPMScheduler())
    assert pfdist.pfd(D, D, num_samples=2, steps=2).value == 0.0  # labels drawn per seed, shared by both maps
    # A fixed class reads only its own row of the class embedding.
    for row, changes in ((1, False), (0, True)):
        other = copy.deepcopy(unet)
        with torch.no_grad():
            other.class_embedding.weight[row] += 1.0
        E = pfdist.from_diffusers(other, diffusers.DDPMScheduler())
        value = pfdist.pfd(pfdist.ode_map(D, class_labels=0), pfdist.ode_map(E, class_labels=0), num_samples=2, steps=2).value
        assert (value > 0) == changes
