"""Evaluating a denoiser's flow map on seed-addressed noise, batch by batch, with checks.

``flow_outputs`` computes Psi(Phi(x_T)) for seeds seed..seed+n-1 once, so that a map used in
many comparisons (a teacher's) is reused, and caches it on disk keyed by content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from pfdist.atomic import atomic_save_tensors
from pfdist.descriptors import Descriptor, descriptor_fingerprint, resolve_descriptor
from pfdist.errors import NonFiniteError, PFDistError
from pfdist.hashing import content_hash, fingerprint
from pfdist.noise import noise
from pfdist.schedules import edm_sigmas
from pfdist.solvers import get_solver


@dataclass(frozen=True)
class FlowSettings:
    """How noise becomes data: the PF-ODE solver and its sigma grid."""

    steps: int = 18
    solver: str = "heun"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self):
        get_solver(self.solver)
        edm_sigmas(self.steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho)

    def sigmas(self) -> Tensor:
        return edm_sigmas(self.steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho)


@dataclass(frozen=True)
class FlowOutputs:
    """Precomputed Psi(Phi(x_T)) for seeds ``seed .. seed + len(values) - 1``."""

    values: Tensor  # (num_samples, *feature_shape), on the CPU
    seed: int
    shape: tuple[int, ...]  # data shape the map was evaluated at
    nfe: float
    key: str | None = None  # content key (None when the denoiser has no fingerprint)
    settings: FlowSettings = field(default_factory=FlowSettings)

    @property
    def num_samples(self) -> int:
        return self.values.shape[0]

    def slice(self, seed: int, num_samples: int) -> Tensor:
        start = seed - self.seed
        if start < 0 or start + num_samples > self.num_samples:
            raise PFDistError(
                f"precomputed outputs cover seeds {self.seed}..{self.seed + self.num_samples - 1}, "
                f"but seeds {seed}..{seed + num_samples - 1} were asked for; recompute them with "
                "flow_outputs(..., seed=..., num_samples=...) covering that range."
            )
        return self.values[start : start + num_samples]


class _Counted:
    """Counts denoiser evaluations and checks each output's shape, dtype and device."""

    def __init__(self, denoiser: Callable, name: str):
        self.denoiser, self.name, self.calls = denoiser, name, 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        out = self.denoiser(x, sigma)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise PFDistError(
                f"model {self.name} returned {got} for input of shape {tuple(x.shape)}; "
                "a denoiser must return a tensor shaped like its input x."
            )
        if out.dtype != x.dtype or out.device != x.device:
            raise PFDistError(
                f"model {self.name} returned {out.dtype} on {out.device} for {x.dtype} input on "
                f"{x.device}; move the model to that device and dtype, or pass device=/dtype= to match it."
            )
        return out


def resolve_device(device: Any, *models: Any) -> torch.device:
    """The requested device, else the first module's, else the CPU; refuses devices that are absent."""
    if device is None:
        return next((d for d in map(_module_device, models) if d is not None), torch.device("cpu"))
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise PFDistError(f"device {device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1', ...") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PFDistError(f"device {device} was asked for but CUDA is not available here; pass device='cpu'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PFDistError(f"device {device} does not exist ({torch.cuda.device_count()} CUDA devices).")
    return device


def _module_device(denoiser: Any) -> torch.device | None:
    if isinstance(denoiser, torch.nn.Module):
        p = next(denoiser.parameters(), None)
        return None if p is None else p.device
    return None


def check_denoiser(denoiser: Any, name: str, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> None:
    """Validate a denoiser at the boundary: callable, shape, device, dtype."""
    if isinstance(denoiser, FlowOutputs):
        if denoiser.shape != shape:
            raise PFDistError(f"{name}: precomputed outputs are for data shape {denoiser.shape}, not {shape}.")
        return
    if not callable(denoiser):
        raise PFDistError(f"{name} is a {type(denoiser).__name__}; pass a denoiser D(x, sigma) or FlowOutputs.")
    own = getattr(denoiser, "shape", None)
    if own is not None and tuple(own) != shape:
        raise PFDistError(
            f"{name} is a distribution of shape {tuple(own)} but shape={shape} was asked for; "
            "compare models of the same data shape."
        )
    mdev = _module_device(denoiser)
    if mdev is not None and mdev != device:
        raise PFDistError(f"{name}'s parameters are on {mdev} but device={device}; pass device='{mdev}' or move it.")
    if isinstance(denoiser, torch.nn.Module):
        p = next(denoiser.parameters(), None)
        if p is not None and p.dtype != dtype:
            raise PFDistError(f"{name}'s parameters are {p.dtype} but dtype={dtype}; pass dtype={p.dtype} or cast it.")
    if dtype not in (torch.float32, torch.float64):
        raise PFDistError(f"dtype must be torch.float32 or torch.float64 (got {dtype}).")


def seed_batches(seed: int, num_samples: int, batch_size: int) -> Iterator[range]:
    for start in range(seed, seed + num_samples, batch_size):
        yield range(start, min(start + batch_size, seed + num_samples))


def map_batch(
    denoiser: Callable,
    seeds: range,
    shape: tuple[int, ...],
    settings: FlowSettings,
    descriptor: Descriptor,
    *,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, int]:
    """Psi(Phi(x_T)) for one batch of seeds, and the denoiser calls it took."""
    x_T = noise(seeds, shape, settings.sigma_max, device=device, dtype=dtype)
    counted = _Counted(denoiser, name)
    x_0 = get_solver(settings.solver)(counted, x_T, settings.sigmas())
    if not torch.isfinite(x_0).all():
        bad = [s for s, ok in zip(seeds, torch.isfinite(x_0.flatten(1)).all(1).tolist()) if not ok]
        raise NonFiniteError(
            f"model {name} produced NaN or Inf on seeds {seeds.start}..{seeds.stop - 1} "
            f"({len(bad)} bad, first {bad[0]}); check the model at small and large sigma."
        )
    out = descriptor(x_0)
    if not torch.isfinite(out).all():
        raise NonFiniteError(f"the descriptor gave NaN or Inf on seeds {seeds.start}..{seeds.stop - 1} for model {name}.")
    return out, counted.calls


def cache_key(denoiser: Any, descriptor: Descriptor, shape, seed: int, num_samples: int, settings: FlowSettings, dtype) -> str | None:
    fp, dfp = fingerprint(denoiser), descriptor_fingerprint(descriptor)
    if fp is None or dfp is None:
        return None
    return content_hash("flow_outputs/v1", fp, dfp, list(shape), seed, num_samples, settings.__dict__, str(dtype))


def flow_outputs(
    denoiser: Callable,
    *,
    shape: Sequence[int],
    num_samples: int = 10_000,
    seed: int = 100_000,
    descriptor: Descriptor | str | None = None,
    settings: FlowSettings | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> FlowOutputs:
    """Psi(Phi(x_T)) for seeds seed..seed+num_samples-1, computed once (and cached on disk).

    With ``cache_dir``, outputs are stored as safetensors under a key hashing the denoiser's
    content, the descriptor, the seeds and the solver settings; callables without a
    fingerprint are not cached. ``progress(n)`` is called with the number of samples done.
    """
    shape = tuple(int(s) for s in shape)
    settings = settings or FlowSettings()
    descriptor = resolve_descriptor(descriptor)
    device = resolve_device(device, denoiser)
    check_denoiser(denoiser, "model", shape, device, dtype)
    key = cache_key(denoiser, descriptor, shape, seed, num_samples, settings, dtype) if cache_dir else None
    path = Path(cache_dir) / f"flow-{key}.safetensors" if key else None
    if path is not None and path.is_file():
        from safetensors.torch import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["pfdist"])
            values = f.get_tensor("values")
        if progress:
            progress(num_samples)
        return FlowOutputs(values, seed, shape, meta["nfe"], key, settings)
    chunks, calls, batches = [], 0, 0
    with torch.no_grad():
        for seeds in seed_batches(seed, num_samples, batch_size):
            out, n = map_batch(denoiser, seeds, shape, settings, descriptor, name="model", device=device, dtype=dtype)
            chunks.append(out.cpu())
            calls, batches = calls + n, batches + 1
            if progress:
                progress(len(seeds))
    result = FlowOutputs(torch.cat(chunks), seed, shape, calls / batches, key, settings)
    if path is not None:
        meta = {"nfe": result.nfe, "seed": seed, "shape": list(shape), "settings": settings.__dict__}
        atomic_save_tensors(path, {"values": result.values}, metadata={"pfdist": json.dumps(meta)})
    return result
