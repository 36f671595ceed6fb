"""Latent models: the decoder is part of the map (EDM2's decode on the fixtures, noise and data
shapes, caching, batching of the VAE), and decoders or VAE directories that are wrong."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

import pfdist
from edm_fixtures import EDM2_FIXTURES as FIXTURES, needs_edm2_fixtures as needs_fixtures
from pfdist.errors import PFDistError
from pfdist.protocol import memorization_ratio

pytestmark = pytest.mark.usefixtures("one_thread")

VAE = FIXTURES / "tiny-sd-vae"
FLOW = pfdist.FlowSettings(steps=8)


def _cfg():
    net = pfdist.load_edm(FIXTURES / "edm2-latent-cond.pkl")
    return pfdist.guided(net, pfdist.load_edm(FIXTURES / "edm2-latent-uncond.pkl"), 1.4)


@needs_fixtures
@pytest.mark.parametrize("tag", ["cfg", "autog", "plain"])
def test_decoded_guided_map_gives_edm2s_images_within_one_grey_level(tag):
    name = "edm2-rgb-uncond" if tag == "plain" else "edm2-latent-cond"
    ref = load_file(FIXTURES / f"sampler-{name}-{tag}.safetensors")
    net = pfdist.load_edm(FIXTURES / f"{name}.pkl")
    guide = {"cfg": "edm2-latent-uncond", "autog": "edm2-latent-cond-xs"}.get(tag)
    weight = {"cfg": 1.4, "autog": 2.0}.get(tag)
    denoiser = net if guide is None else pfdist.guided(net, pfdist.load_edm(FIXTURES / f"{guide}.pkl"), weight)
    decoder = pfdist.load_edm_decoder(FIXTURES / f"{name}.pkl", vae=None if tag == "plain" else VAE)
    phi = pfdist.ode_map(denoiser, FLOW, decoder=decoder)
    assert phi.noise_shape == tuple(ref["noise"].shape[1:]) and phi.shape == tuple(ref["images"].shape[1:])
    with torch.no_grad():
        images, _ = phi.run(ref["noise"] * 80, ref.get("class_labels"), FLOW, name=tag)
        decoded_reference = decoder(ref["latents"])  # EDM2's latents through pfdist's decode: exactly its pixels
    pixels = (images + 1) * 127.5
    assert images.min() >= -1 and images.max() <= 1
    assert (pixels - ref["images"].float()).abs().max() <= 1.0
    assert torch.equal(((decoded_reference + 1) * 127.5).floor(), ref["images"].float())  # floor: EDM2's uint8 cast


@needs_fixtures
def test_pfd_of_a_decoded_map_against_itself_is_zero_and_outputs_follow_the_data_shape(tmp_path):
    decoder = pfdist.load_edm_decoder(FIXTURES / "edm2-latent-cond.pkl", vae=VAE)
    phi = pfdist.ode_map(_cfg(), pfdist.FlowSettings(steps=4), decoder=decoder)
    r = pfdist.pfd(phi, phi, num_samples=6, batch_size=4)
    assert r.value == 0.0 and torch.equal(r.per_sample, torch.zeros(6, dtype=r.per_sample.dtype))
    out = pfdist.flow_outputs(phi, num_samples=5, batch_size=2, cache_dir=tmp_path)
    assert out.values.shape == (5, 3, 16, 16) and out.shape == (3, 16, 16) and out.noise_shape == (4, 8, 8)
    again = pfdist.flow_outputs(phi, num_samples=5, batch_size=5, cache_dir=tmp_path)  # a cache hit
    assert torch.equal(again.values, out.values) and again.noise_shape == (4, 8, 8)
    latent = pfdist.ode_map(_cfg(), pfdist.FlowSettings(steps=4))
    keys = {phi.fingerprint(), latent.fingerprint(),
            pfdist.ode_map(_cfg(), pfdist.FlowSettings(steps=4), decoder=pfdist.load_edm_decoder(
                FIXTURES / "edm2-latent-cond.pkl", vae=VAE, dtype=torch.float64)).fingerprint()}
    assert len(keys) == 3 and None not in keys  # the decoder's identity is in the key
    assert pfdist.pfd(out, phi, num_samples=5, batch_size=2).value == 0.0  # float32 kernels: same batches, same bits
    copies = memorization_ratio(out.values, out.values[:3])  # copy detection sees the images: 3 of 5 are copies
    assert copies["value"] >= 0.6
    with pytest.raises(PFDistError, match="different data shapes"):
        pfdist.pfd(phi, latent, num_samples=4)  # images against latents


@needs_fixtures
def test_the_vae_runs_in_batches_of_its_batch_size_and_batching_does_not_change_images():
    ref = load_file(FIXTURES / "sampler-edm2-latent-cond-cfg.safetensors")
    seen = []
    small = pfdist.load_edm_decoder(FIXTURES / "edm2-latent-cond.pkl", vae=VAE, batch_size=3)
    decode = small.vae.decode
    small.vae.decode = lambda z: seen.append(len(z)) or decode(z)
    latents = torch.cat([ref["latents"]] * 2)
    with torch.no_grad():
        images = small(latents)
        whole = pfdist.load_edm_decoder(FIXTURES / "edm2-latent-cond.pkl", vae=VAE)(latents)
    assert seen == [3, 3, 2] and torch.allclose(images, whole, atol=1e-6)


@needs_fixtures
def test_generator_with_a_decoder():
    decoder = pfdist.load_edm_decoder(FIXTURES / "edm2-rgb-uncond.pkl")
    gen = pfdist.generator(lambda z: z / 80, shape=(3, 8, 8), decoder=decoder, fingerprint="scale-1/80")
    assert gen.noise_shape == gen.shape == (3, 8, 8) and gen.fingerprint() is not None
    r = pfdist.pfd(gen, pfdist.generator(lambda z: z / 80, shape=(3, 8, 8)), num_samples=64)
    assert r.value > 0  # decoding clips what the identity map keeps: the maps differ


@needs_fixtures
def test_bad_vae_directories_and_missing_vae_are_clear_errors(tmp_path):
    snapshot = FIXTURES / "edm2-latent-cond.pkl"
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(VAE / "config.json", empty)
    with pytest.raises(PFDistError, match=r"no-weights has no \.safetensors"):
        pfdist.load_edm_decoder(snapshot, vae=empty)
    pickled = tmp_path / "pickled"
    shutil.copytree(VAE, pickled)
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(PFDistError, match=r"pickled weights \['diffusion_pytorch_model.bin'\]"):
        pfdist.load_edm_decoder(snapshot, vae=pickled)
    with pytest.raises(PFDistError, match="tiny-sd-vae.*pass vae=DIR"):
        pfdist.load_edm_decoder(snapshot)
    with pytest.raises(PFDistError, match="no config.json"):
        pfdist.load_edm_decoder(snapshot, vae=tmp_path)
    with pytest.raises(PFDistError, match="no VAE"):
        pfdist.load_edm_decoder(FIXTURES / "edm2-rgb-uncond.pkl", vae=VAE)


class _Shrink(torch.nn.Module):
    shape = (4, 4, 4)

    def forward(self, x, sigma):
        return x / (1 + torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1) ** 2)


@pytest.mark.parametrize("decoder, match", [
    (lambda z: z.flatten(1), r"returned torch.float32 \(4, 64\)"),
    (lambda z: z.repeat(1, 4, 1, 1), r"1 to 4 channels"),
    (lambda z: z[:2], "image batch"),
    (lambda z: "image", "returned str"),
    ("decoder.safetensors", "decoder must be a callable"),
])
def test_a_decoder_whose_output_is_not_an_image_batch_is_refused(decoder, match):
    if isinstance(decoder, str):
        with pytest.raises(PFDistError, match=match):
            pfdist.ode_map(_Shrink(), FLOW, decoder=decoder)
        return
    phi = pfdist.ode_map(_Shrink(), FLOW, decoder=decoder)
    with pytest.raises(PFDistError, match=match):
        pfdist.pfd(phi, phi, num_samples=4)
