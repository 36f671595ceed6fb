"""An EDM2 snapshot's decoder (latents -> images), as EDM2's ``encoder.decode`` computes it.

EDM2 latent models (``StabilityVAEEncoder``) denoise "final latents" z = raw * scale + bias; the
image is the Stable Diffusion VAE's decoding of the raw latents (z - bias) / scale, clamped to
[0, 1] and multiplied by 255 (EDM2 feeds the VAE images in [0, 1]). Pixel models
(``StandardRGBEncoder``) map x to x * 127.5 + 128 clipped to [0, 255]. pfdist returns those
pixel values p, before EDM2's uint8 cast, as images p / 127.5 - 1 in [-1, 1]. The snapshot's
encoder record gives scale, bias and the VAE's name; nothing in it is run, and the VAE comes
from a local diffusers ``save_pretrained`` directory with safetensors weights (never downloaded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash, file_sha256
from pfdist.models.snapshot import read_snapshot
from pfdist.models.edm2 import EncoderRecord, encoder_record, is_edm2

_UNSAFE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _vae_files(vae: Path, vae_name: str) -> list[Path]:
    """The VAE directory's safetensors weights, refusing a directory without them or with pickled ones."""
    if not vae.is_dir() or not (vae / "config.json").is_file():
        raise PFDistError(f"vae={vae} is not a diffusers AutoencoderKL directory (no config.json); give the "
                          f"save_pretrained directory of the snapshot's VAE {vae_name!r}.")
    unsafe = sorted(p.name for p in vae.iterdir() if p.suffix in _UNSAFE_WEIGHTS)
    if unsafe:
        raise PFDistError(f"vae={vae} holds pickled weights {unsafe}; pfdist reads VAE weights from safetensors only "
                          "(convert them, or download the model's .safetensors files).")
    weights = sorted(vae.glob("*.safetensors"))
    if not weights:
        raise PFDistError(f"vae={vae} has no .safetensors weights; save the VAE with "
                          "AutoencoderKL.save_pretrained(dir, safe_serialization=True).")
    return weights


class EDM2Decoder:
    """``decoder(latents) -> images`` in [-1, 1]: ``(batch, C, h, w)`` -> ``(batch, 3, H, W)``.

    Built by :func:`load_edm_decoder`. The VAE runs ``batch_size`` latents at a time (memory
    flat in the number of samples) on its own device and ``dtype``; images come back on the
    latents' device, float32. ``output_shape(latent_shape)`` gives the image shape;
    ``fingerprint()`` hashes the encoder record and the VAE's config and weight files.
    """

    def __init__(self, encoder: EncoderRecord, vae: Any = None, *, files: list[Path] = (), batch_size: int = 8):
        self.encoder, self.vae, self.files, self.batch_size = encoder, vae, list(files), batch_size
        self._fingerprint: str | None = None

    def output_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.vae is None:
            return tuple(latent_shape)
        config = self.vae.config
        factor = 2 ** (len(config.block_out_channels) - 1)
        return (int(config.out_channels), latent_shape[1] * factor, latent_shape[2] * factor)

    def __call__(self, latents: Tensor) -> Tensor:
        x = latents.to(torch.float32)
        if self.vae is None:  # StandardRGBEncoder.decode before its uint8 cast
            pixels = (x * 127.5 + 128).clip(0, 255)
        else:  # StabilityVAEEncoder.decode before its uint8 cast
            scale = torch.tensor(self.encoder.scale, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
            bias = torch.tensor(self.encoder.bias, dtype=torch.float32, device=x.device).reshape(1, -1, 1, 1)
            raw = (x - bias) / scale
            p = next(self.vae.parameters())
            pixels = torch.cat([self.vae.decode(batch.to(p.device, p.dtype)).sample.to(x.device, torch.float32)
                                for batch in raw.split(self.batch_size)])
            pixels = pixels.clamp(0, 1).mul(255)
        return pixels / 127.5 - 1

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            files = {p.name: file_sha256(p) for p in self.files}
            # The content, not where it was read from: diffusers records the directory as _name_or_path.
            config = None if self.vae is None else {k: v for k, v in self.vae.config.items() if k != "_name_or_path"}
            dtype = None if self.vae is None else str(next(self.vae.parameters()).dtype)
            self._fingerprint = content_hash("edm2-decoder/v1", self.encoder.fingerprint(), files, config, dtype)
        return self._fingerprint

    def __repr__(self) -> str:
        what = "rgb" if self.vae is None else f"vae={self.encoder.vae_name!r}"
        return f"EDM2Decoder({what})"


def _encoder_of(path: Path) -> EncoderRecord:
    """The encoder record of an EDM2 snapshot, or of the JSON config of a checkpoint converted from one."""
    if path.suffix == ".pkl":
        obj = read_snapshot(path)
        if not is_edm2(obj):
            raise PFDistError(f"{path} is not an EDM2 snapshot (its 'ema' is not EDM2's Precond); only EDM2 snapshots "
                              "record a decoder.")
        return encoder_record(obj, str(path))
    config = path / "model.json" if path.is_dir() else path.with_suffix(".json")
    try:
        record = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise PFDistError(f"{path} is neither an EDM2 snapshot (.pkl) nor a converted checkpoint with a readable "
                          f"JSON config ({config}: {e}).") from None
    if not isinstance(record, dict) or "encoder" not in record:
        raise PFDistError(f"{config} records no EDM2 encoder; give the EDM2 snapshot, or a checkpoint that "
                          "`pfdist convert` made from one.")
    return EncoderRecord.from_dict(record["encoder"], str(config))


def load_edm_decoder(path: str | os.PathLike, *, vae: str | os.PathLike | None = None, batch_size: int | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> EDM2Decoder:
    """The decoder of an EDM2 snapshot: latents -> images in [-1, 1], as EDM2's ``encoder.decode``.

    ``path``: the snapshot ``.pkl``, or a checkpoint converted from one by ``pfdist convert``
    (its directory, ``model.json`` or ``model.safetensors``: the JSON config keeps the encoder).
    ``vae``: for a latent snapshot, the local diffusers ``AutoencoderKL`` directory of the VAE the
    snapshot names (``stabilityai/sd-vae-ft-mse`` for the published ones), safetensors only.
    ``batch_size``: latents per VAE call (default the snapshot's, 8). ``device`` / ``dtype``:
    where and in what precision the VAE runs.
    """
    encoder = _encoder_of(Path(path))
    batch_size = encoder.batch_size if batch_size is None else batch_size
    checks.integer("batch_size", batch_size, lo=1)
    if encoder.class_name == "StandardRGBEncoder":
        if vae is not None:
            raise PFDistError(f"{path} is a pixel-space (RGB) snapshot; it has no VAE, so pass no vae=.")
        return EDM2Decoder(encoder, batch_size=batch_size)
    if vae is None:
        raise PFDistError(f"{path} is a latent model whose images come from the VAE {encoder.vae_name!r}; pass "
                          "vae=DIR, that VAE's diffusers save_pretrained directory (safetensors).")
    vae = Path(vae)
    files = _vae_files(vae, encoder.vae_name) + [vae / "config.json"]
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise PFDistError("decoding latents needs diffusers: `pip install pfdist[diffusers]`.") from None
    try:
        model = AutoencoderKL.from_pretrained(vae, use_safetensors=True, local_files_only=True,
                                              low_cpu_mem_usage=False, torch_dtype=dtype)
    except Exception as e:  # diffusers raises many types for a broken directory
        raise PFDistError(f"vae={vae}: cannot load an AutoencoderKL from safetensors ({type(e).__name__}: {e}).") from None
    if model.config.latent_channels != len(encoder.scale):
        raise PFDistError(f"vae={vae} has {model.config.latent_channels} latent channels but {path} "
                          f"{len(encoder.scale)}; give the snapshot's VAE ({encoder.vae_name!r}).")
    model = model.to(device=device).eval().requires_grad_(False)
    return EDM2Decoder(encoder, model, files=files, batch_size=batch_size)
