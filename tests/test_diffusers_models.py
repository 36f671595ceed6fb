"""Text- and class-conditioned diffusers networks and flow matching, against diffusers' own schedulers.

Oracles: the schedulers' ``pred_original_sample`` (DDPM family), one ``FlowMatchEulerDiscreteScheduler``
step (flow matching), a whole flow-matching sampling loop, the pipelines' classifier-free guidance
combination, and the closed-form rectified-flow map of a Gaussian.
"""

from __future__ import annotations

import math

import pytest
import torch

import pfdist
from pfdist.errors import PFDistError

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (4, 8, 8)  # latents
TOKENS, FEATURES, POOLED = 5, 12, 6
f64 = torch.float64


def tiny_sd_unet(seed: int = 0) -> torch.nn.Module:
    """A Stable Diffusion 1.x/2.x-layout UNet2DConditionModel, tiny."""
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=SHAPE[1], in_channels=SHAPE[0], out_channels=SHAPE[0], block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, cross_attention_dim=FEATURES, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).double().eval()


def tiny_dit(seed: int = 0, classes: int = 5) -> torch.nn.Module:
    """A class-conditional DiT with a learned-sigma output (2C channels)."""
    torch.manual_seed(seed)
    return diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=SHAPE[0], out_channels=2 * SHAPE[0], num_layers=1,
        sample_size=SHAPE[1], patch_size=2, num_embeds_ada_norm=classes, norm_num_groups=4,
    ).double().eval()


def tiny_sd3(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return diffusers.SD3Transformer2DModel(
        sample_size=SHAPE[1], patch_size=2, in_channels=SHAPE[0], num_layers=1, attention_head_dim=4,
        num_attention_heads=2, joint_attention_dim=FEATURES, caption_projection_dim=8, pooled_projection_dim=POOLED,
        out_channels=SHAPE[0], pos_embed_max_size=8,
    ).double().eval()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def sd_unet():
    return tiny_sd_unet()


@pytest.fixture(scope="module")
def sd3():
    return tiny_sd3()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_sd_unet_with_a_prompt_matches_the_scheduler(sd_unet, name, prediction_type):
    scheduler = getattr(diffusers, name)(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                         prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(1000)
    prompt = randn(1, TOKENS, FEATURES, seed=1)
    D = pfdist.from_diffusers(sd_unet, scheduler, encoder_hidden_states=prompt)
    assert D.shape == SHAPE and D.label_dim == 0
    x_t, abar = randn(3, *SHAPE, seed=2), scheduler.alphas_cumprod.double()
    for t in (0, 402, 999):
        output = sd_unet(x_t, t, encoder_hidden_states=prompt.expand(3, -1, -1)).sample
        ref = scheduler.step(output, t, x_t).pred_original_sample
        out = D(x_t / abar[t].sqrt(), ((1 - abar[t]) / abar[t]).sqrt().expand(3))  # one prompt for the whole batch
        assert rel_err(out, ref) < 1e-7, (t, rel_err(out, ref))


def test_sd_unet_with_euler_discrete_scheduler(sd_unet):
    """EulerDiscreteScheduler samples in EDM's variables: x = x_t / sqrt(abar), model input x / sqrt(1 + sigma^2)."""
    scheduler = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    scheduler.set_timesteps(7)
    prompt = randn(1, TOKENS, FEATURES, seed=8)
    D = pfdist.from_diffusers(sd_unet, scheduler, encoder_hidden_states=prompt)
    x = randn(2, *SHAPE, seed=9) * float(scheduler.init_noise_sigma)
    for i, t in enumerate(scheduler.timesteps[:-1]):
        sigma = scheduler.sigmas[i]
        output = sd_unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=prompt.expand(2, -1, -1)).sample
        ref = scheduler.step(output, t, x).pred_original_sample
        assert rel_err(D(x, float(sigma)), ref) < 1e-5, i  # the scheduler's sigmas and timesteps are float32


def test_pipeline_classifier_free_guidance_is_guided(sd_unet):
    """StableDiffusionPipeline: eps = uncond + w (text - uncond) on one batch of both, then the scheduler's x_0."""
    scheduler = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
    prompt, empty = randn(1, TOKENS, FEATURES, seed=3), randn(1, TOKENS, FEATURES, seed=4)
    w, x_t, t = 4.5, randn(2, *SHAPE, seed=5), 640
    both = sd_unet(torch.cat([x_t] * 2), t, encoder_hidden_states=torch.cat([empty.expand(2, -1, -1),
                                                                             prompt.expand(2, -1, -1)])).sample
    uncond, text = both.chunk(2)
    scheduler.set_timesteps(50)
    ref = scheduler.step(uncond + w * (text - uncond), t, x_t).pred_original_sample
    cond = pfdist.from_diffusers(sd_unet, scheduler, encoder_hidden_states=prompt)
    null = pfdist.from_diffusers(sd_unet, scheduler, encoder_hidden_states=empty)
    abar = scheduler.alphas_cumprod.double()[t]
    out = pfdist.guided(cond, null, w)(x_t / abar.sqrt(), float(((1 - abar) / abar).sqrt()))
    assert rel_err(out, ref) < 1e-7
    from pfdist.hashing import fingerprint

    assert fingerprint(cond) is not None and fingerprint(cond) != fingerprint(null)  # the prompt is content


def test_dit_learned_sigma_with_labels_matches_the_scheduler():
    dit = tiny_dit()
    scheduler = diffusers.DDPMScheduler(variance_type="learned_range", clip_sample=False)
    D = pfdist.from_diffusers(dit, scheduler)
    assert D.label_dim == 5 and D.shape == SHAPE
    x_t, labels, abar = randn(2, *SHAPE, seed=6), torch.tensor([4, 0]), scheduler.alphas_cumprod.double()
    for t in (3, 500, 999):
        ref = scheduler.step(dit(x_t, timestep=torch.tensor([t] * 2), class_labels=labels).sample, t, x_t)
        sigma = float(((1 - abar[t]) / abar[t]).sqrt())
        for given in (labels, torch.nn.functional.one_hot(labels, 5).double()):
            assert rel_err(D(x_t / abar[t].sqrt(), sigma, given), ref.pred_original_sample) < 1e-7
    # A fixed class (class_labels=, batch 1) and DiT's null class label_dim: the pipeline's guidance on eps.
    w, t = 4.0, 300
    out = dit(torch.cat([x_t] * 2), timestep=torch.tensor([t] * 4), class_labels=torch.tensor([3, 3, 5, 5])).sample
    eps_c, eps_u = out[:, :4].chunk(2)
    ref = scheduler.step(torch.cat([eps_u + w * (eps_c - eps_u), out[:2, 4:]], 1), t, x_t).pred_original_sample
    cond = pfdist.from_diffusers(dit, scheduler, class_labels=torch.tensor([3]))
    null = pfdist.from_diffusers(dit, scheduler, class_labels=torch.tensor([5]))
    assert cond.label_dim == 0
    sigma = float(((1 - abar[t]) / abar[t]).sqrt())
    assert rel_err(pfdist.guided(cond, null, w)(x_t / abar[t].sqrt(), sigma), ref) < 1e-7


def test_legacy_transformer2d_dit_takes_labels_from_its_config():
    torch.manual_seed(0)
    dit = diffusers.Transformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8,
                                       num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=7,
                                       norm_type="ada_norm_zero", norm_num_groups=4).double().eval()
    scheduler = diffusers.DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(4)
    D = pfdist.from_diffusers(dit, scheduler)
    assert D.label_dim == 7
    x_t, t, abar = randn(2, *SHAPE, seed=7), 250, scheduler.alphas_cumprod.double()
    ref = scheduler.step(dit(x_t, timestep=torch.tensor([t] * 2), class_labels=torch.tensor([6, 1])).sample[:, :4],
                         t, x_t).pred_original_sample
    out = D(x_t / abar[t].sqrt(), float(((1 - abar[t]) / abar[t]).sqrt()), torch.tensor([6, 1]))
    assert rel_err(out, ref) < 1e-7


def sd3_conditioning(seed: int) -> dict:
    return dict(encoder_hidden_states=randn(1, TOKENS, FEATURES, seed=seed), pooled_projections=randn(1, POOLED, seed=seed + 1))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_one_flow_matching_step_is_one_euler_step(sd3, shift):
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    cond = sd3_conditioning(10)
    D = pfdist.from_diffusers(sd3, scheduler, **cond)
    assert D.kind == "flow" and D.pure_noise and D.sigma_max == math.inf
    t_min = float(scheduler.sigma_min)
    assert D.sigma_min == pytest.approx(t_min / (1 - t_min))
    scheduler.set_timesteps(5)
    ts = scheduler.sigmas.double()  # t_0 = 1 (pure noise) .. 0
    eps = randn(2, *SHAPE, seed=11)
    x_t = eps
    for i in range(len(ts) - 1):
        timestep = scheduler.timesteps[i]
        v = sd3(x_t, encoder_hidden_states=cond["encoder_hidden_states"].expand(2, -1, -1),
                pooled_projections=cond["pooled_projections"].expand(2, -1), timestep=timestep.expand(2).double()).sample
        stepped = scheduler.step(v, timestep, x_t).prev_sample.double()
        t, t_next = float(ts[i]), float(ts[i + 1])
        if t == 1:  # from pure noise: D(eps, inf), then x(sigma_1) = sigma_1 eps + D
            x_next = (t_next / (1 - t_next)) * eps + D(eps, math.inf)
        else:
            sigmas = torch.tensor([t / (1 - t), t_next / (1 - t_next)], dtype=f64)
            x_next = pfdist.euler(D, x_t / (1 - t), sigmas)
        assert rel_err(x_next * (1 - t_next), stepped) < 2e-6, (i, rel_err(x_next * (1 - t_next), stepped))
        x_t = stepped


def test_flow_map_equals_the_schedulers_sampling_loop(sd3):
    """pfdist's map of a flow model, Euler, equals FlowMatchEulerDiscreteScheduler run on the same grid from eps = x_T / T."""
    cond = sd3_conditioning(12)
    T, steps = 80.0, 4
    flow = pfdist.FlowSettings(solver="euler", steps=steps, sigma_max=T, sigma_min=0.01)
    D = pfdist.from_diffusers(sd3, diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), **cond)
    out = pfdist.flow_outputs(pfdist.ode_map(D, flow), num_samples=2, seed=7, dtype=f64).values
    assert out.shape == (2, *SHAPE)
    eps = pfdist.noise(range(7, 9), SHAPE, T, dtype=f64) / T
    sigmas = flow.sigmas()[:-1]
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)  # grids given as t, unshifted
    scheduler.set_timesteps(sigmas=[1.0] + (sigmas / (1 + sigmas)).tolist())
    x_t = eps
    for timestep in scheduler.timesteps:
        v = sd3(x_t, encoder_hidden_states=cond["encoder_hidden_states"].expand(2, -1, -1),
                pooled_projections=cond["pooled_projections"].expand(2, -1), timestep=timestep.expand(2).double()).sample
        x_t = scheduler.step(v, timestep, x_t).prev_sample.double()
    assert rel_err(out, x_t) < 1e-5, rel_err(out, x_t)
    # The same map run from x_T as EDM's sampler would (pure_noise=False) differs.
    truncated = pfdist.flow_outputs(pfdist.ode_map(D, flow, pure_noise=False), num_samples=2, seed=7, dtype=f64).values
    assert rel_err(truncated, x_t) > 1e-4


def test_sd3_guidance_is_the_pipelines_combination(sd3):
    """StableDiffusion3Pipeline: v = uncond + w (text - uncond); D = x_t - t v is affine in v."""
    cond, null = sd3_conditioning(20), sd3_conditioning(30)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    w, t, x_t = 7.0, 0.6, randn(2, *SHAPE, seed=13)
    both = {k: torch.cat([null[k].expand(2, *null[k].shape[1:]), cond[k].expand(2, *cond[k].shape[1:])]) for k in cond}
    v_u, v_c = sd3(torch.cat([x_t] * 2), timestep=torch.full((4,), t * 1000, dtype=f64), **both).sample.chunk(2)
    ref = x_t - t * (v_u + w * (v_c - v_u))
    G = pfdist.guided(pfdist.from_diffusers(sd3, scheduler, **cond), pfdist.from_diffusers(sd3, scheduler, **null), w)
    assert rel_err(G(x_t / (1 - t), t / (1 - t)), ref) < 1e-7


class GaussianVelocity(torch.nn.Module):
    """The exact rectified-flow velocity of N(mu, c^2 I): v = (x_t - E[x_0 | x_t]) / t."""

    def __init__(self, mu: float, c: float, shape: tuple[int, ...]):
        super().__init__()
        self.mu, self.c = mu, c
        self.config = {"in_channels": shape[0], "sample_size": shape[1], "out_channels": shape[0]}

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (timestep / 1000).reshape(-1, 1, 1, 1)
        s, c2 = 1 - t, self.c**2
        x0 = self.mu + s * c2 / (s**2 * c2 + t**2) * (hidden_states - s * self.mu)
        return (hidden_states - x0) / t


def test_rectified_flow_map_from_pure_noise_matches_the_closed_form():
    """The exact flow of N(mu, c^2 I) from t = 1 sends eps to mu + c eps; an ODE map from sigma = T misses by ~ mu c / T."""
    mu, c, T = 2.0, 0.5, 20.0
    D = pfdist.from_diffusers(GaussianVelocity(mu, c, (1, 2)), diffusers.FlowMatchEulerDiscreteScheduler())
    flow = pfdist.FlowSettings(solver="reference", sigma_max=T, sigma_min=1e-3)  # adaptive: solver error << (c / T)^2
    seeds = range(3, 7)
    eps = pfdist.noise(seeds, (1, 2, 2), 1.0, dtype=f64)
    exact = mu + c * eps
    out = pfdist.flow_outputs(pfdist.ode_map(D, flow), shape=(1, 2, 2), num_samples=4, seed=3, dtype=f64).values
    # One Euler step from t = 1 to T / (1 + T) is exact for the mean; the rest of the flow is the
    # Gaussian's closed form from sigma = T, so the spread is short by the factor T / sqrt(c^2 + T^2).
    hypot = math.hypot(c, T)
    assert (out - (mu + c * T / hypot * eps)).abs().max() < 1e-5
    assert (out - exact).abs().max() < c * (c / T) ** 2 * eps.abs().max()
    edm_like = pfdist.flow_outputs(pfdist.ode_map(D, flow, pure_noise=False), shape=(1, 2, 2), num_samples=4, seed=3,
                                   dtype=f64).values
    assert (edm_like - exact).abs().max() > 0.5 * mu * c / T
    # An EDM-type map of the same Gaussian on the same x_T starts at x(T) = x_T and misses the mean's
    # share of the flow above T: the two maps differ by c mu / sqrt(c^2 + T^2) per coordinate.
    gauss = pfdist.Gaussian(torch.full((1, 2, 2), mu, dtype=f64), c**2 * torch.eye(4, dtype=f64))
    value = pfdist.pfd(pfdist.ode_map(D, flow), gauss, num_samples=4, seed=3, flow=flow, dtype=f64).value
    assert value == pytest.approx(2 * c * mu / hypot, rel=1e-4)


def test_flow_map_pfd_and_nfe(sd3):
    cond = sd3_conditioning(40)
    D = pfdist.from_diffusers(sd3.float(), diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), **cond)
    try:
        result = pfdist.pfd(D, D, num_samples=2, steps=3)
        assert result.value == 0.0 and result.nfe_a == 2 * 3 - 1 + 1  # Heun's 5 plus the step from pure noise
        assert pfdist.ode_map(D).fingerprint() != pfdist.ode_map(D, pure_noise=False).fingerprint()
    finally:
        sd3.double()


def test_bad_conditioning_is_refused_before_anything_runs(sd_unet, sd3):
    ddpm, fm = diffusers.DDPMScheduler(), diffusers.FlowMatchEulerDiscreteScheduler()
    prompt = randn(1, TOKENS, FEATURES, seed=0)
    cases = [
        (sd_unet, ddpm, {}, "needs the conditioning encoder_hidden_states"),
        (sd_unet, ddpm, {"encoder_hidden_states": prompt.expand(2, -1, -1)}, "must have batch 1"),
        (sd_unet, ddpm, {"encoder_hidden_states": prompt[0]}, "must have batch 1"),
        (sd_unet, ddpm, {"encoder_hidden_states": prompt[:, :, :5]}, "must have 12 features"),
        (sd_unet, ddpm, {"encoder_hidden_states": prompt[:, 0]}, "must have 3 dimensions"),
        (sd_unet, ddpm, {"encoder_hidden_states": prompt, "prompt_embeds": prompt}, "no argument 'prompt_embeds'"),
        (sd3, fm, {"encoder_hidden_states": prompt}, "needs the conditioning pooled_projections"),
        (sd3, fm, {"encoder_hidden_states": prompt, "pooled_projections": randn(1, 4, seed=0)}, "must have 6 features"),
        (sd3, ddpm, sd3_conditioning(0), "flow-matching model; pass its FlowMatch"),
        (tiny_dit(), ddpm, {"class_labels": torch.tensor([6])}, r"class index in 0\.\.5"),
        (tiny_dit(), ddpm, {"class_labels": torch.tensor([1.0])}, "integer tensor"),
        (tiny_dit(), fm, {}, "learned-variance output"),
        (sd_unet, fm, {"encoder_hidden_states": prompt, "prediction_type": "epsilon"}, "flow-matching scheduler"),
    ]
    for model, scheduler, kwargs, match in cases:
        calls = []
        handle = model.register_forward_hook(lambda *a: calls.append(1))
        try:
            with pytest.raises(PFDistError, match=match):
                pfdist.from_diffusers(model, scheduler, **kwargs)
        finally:
            handle.remove()
        assert not calls, match


def test_pure_noise_needs_a_model_trained_up_to_pure_noise(sd_unet):
    D = pfdist.from_diffusers(sd_unet, diffusers.DDPMScheduler(), encoder_hidden_states=randn(1, 3, FEATURES, seed=0))
    assert pfdist.ode_map(D).pure_noise is False
    with pytest.raises(PFDistError, match="pure_noise=True needs"):
        pfdist.ode_map(D, pure_noise=True)
