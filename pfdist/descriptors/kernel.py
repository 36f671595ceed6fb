"""A saturating descriptor: random Fourier features of a Gaussian (RBF) kernel.

For frequencies w_1..w_F/2 ~ N(0, I) (seeded) and bandwidth h,

    Psi(x) = sqrt(2/F) [cos(W x / h), sin(W x / h)],   |Psi(x)| = 1 exactly,
    Psi(a) . Psi(b) = mean_j cos(w_j . (a - b) / h)  ~  k(a, b) = exp(-|a - b|^2 / (2 h^2)),

so |Psi(a) - Psi(b)|^2 = 2 - 2 Psi(a).Psi(b) ~ 2 - 2 k(a, b) (Rahimi & Recht, 2007): about
|a - b|^2 / h^2 for points much closer than h, and 2 for unrelated points, as a copy-detection
descriptor's unit vectors saturate. PFD in this space lies in [0, 2]. ``fit`` takes h as a
multiple (default 1/2) of the median nearest-neighbour distance among teacher samples, so "close"
means "closer than typical neighbours of the data". Images are flattened.

Stored as safetensors (the frequencies) with a JSON header (bandwidth, seed, sizes): no code.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError

FORMAT = "pfdist.kernel_descriptor/v1"

# The defaults of a kernel descriptor, here and nowhere else (specs and presets read them).
NUM_FEATURES = 2048  # F random Fourier features
SEED = 0  # seed of the frequencies
BANDWIDTH_FACTOR = 0.5  # h = factor * median nearest-neighbour distance of the fit samples
BANDWIDTH_RULE = "median_nn/2"  # the same factor as a spec writes it
FIT_SAMPLES = 1000  # teacher samples h is fitted on
SPEC_DEFAULTS = {"num_features": NUM_FEATURES, "bandwidth_rule": BANDWIDTH_RULE, "seed": SEED, "fit_samples": FIT_SAMPLES}
MAX_FREQUENCY_VALUES = 1 << 27  # (num_features / 2) * dim float64 frequencies: at most 1 GiB


def median_nn_distance(samples: Tensor, *, batch_size: int = 1024) -> float:
    """Median over samples of the Euclidean distance to the nearest other sample. samples: (n, *shape)."""
    if not isinstance(samples, Tensor) or samples.ndim < 2:
        raise PFDistError(f"samples must be a tensor (n, *shape) of n samples; got "
                          f"{list(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__}.")
    x = samples.detach().flatten(1).double().cpu()
    if x.shape[0] < 2:
        raise PFDistError(f"the median nearest-neighbour distance needs at least 2 samples (got {x.shape[0]}).")
    nearest = []
    for i in range(0, x.shape[0], batch_size):
        d = torch.cdist(x[i : i + batch_size], x)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = math.inf
        nearest.append(d.min(1).values)
    return float(torch.cat(nearest).median())


class KernelDescriptor:
    """Random Fourier features of the RBF kernel of bandwidth h; see the module docstring.

    frequencies: (F/2, dim) standard normal draws; bandwidth: h > 0. Build one with :meth:`fit`
    or :meth:`load`.
    """

    def __init__(self, frequencies: Tensor, bandwidth: float, *, seed: int | None = None):
        if frequencies.ndim != 2 or frequencies.shape[0] < 1:
            raise PFDistError(f"frequencies must be (num_features / 2, dim); got {tuple(frequencies.shape)}.")
        checks.real("bandwidth", bandwidth, positive=True)
        if not torch.isfinite(frequencies).all():
            raise PFDistError("frequencies contain NaN or Inf.")
        self.frequencies = frequencies.detach().to(torch.float64).cpu().contiguous()
        self.bandwidth = float(bandwidth)
        self.seed = seed
        self._scaled: dict[tuple, Tensor] = {}
        self._fingerprint: str | None = None

    @property
    def num_features(self) -> int:
        return 2 * self.frequencies.shape[0]

    @property
    def dim(self) -> int:
        return self.frequencies.shape[1]

    @classmethod
    def fit(cls, samples: Tensor, *, num_features: int = NUM_FEATURES, seed: int = SEED,
            bandwidth_factor: float = BANDWIDTH_FACTOR) -> "KernelDescriptor":
        """h = bandwidth_factor * median nearest-neighbour distance of ``samples`` (n, *shape), n >= 2."""
        if checks.integer("num_features", num_features, lo=2, fix="an even number") % 2:
            raise PFDistError(f"num_features must be an even integer >= 2 (got {num_features!r}).")
        checks.seed("seed", seed)  # torch would take -1 as 2^64 - 1
        checks.real("bandwidth_factor", bandwidth_factor, positive=True)
        h = bandwidth_factor * median_nn_distance(samples)
        if h <= 0:
            raise PFDistError("the median nearest-neighbour distance of the samples is 0 (duplicates); "
                              "fit on distinct samples or give a bandwidth.")
        return cls.random(samples[0].numel(), h, num_features=num_features, seed=seed)

    @classmethod
    def random(cls, dim: int, bandwidth: float, *, num_features: int = NUM_FEATURES, seed: int = SEED
               ) -> "KernelDescriptor":
        """Fresh seeded frequencies for data of ``dim`` numbers and a given bandwidth."""
        if (num_features // 2) * dim > MAX_FREQUENCY_VALUES:
            raise PFDistError(f"num_features = {num_features} on data of {dim} numbers needs {num_features // 2 * dim:,} "
                              f"frequencies, more than the {MAX_FREQUENCY_VALUES:,} that fit in memory; "
                              f"use fewer features ({NUM_FEATURES} is the default).")
        g = torch.Generator().manual_seed(checks.seed("seed", seed))
        return cls(torch.randn(num_features // 2, dim, generator=g, dtype=torch.float64), bandwidth, seed=seed)

    def __call__(self, x: Tensor) -> Tensor:
        """x: (batch, *shape) with prod(shape) = dim -> (batch, num_features), unit rows."""
        flat = x.flatten(1)
        if flat.shape[1] != self.dim:
            raise PFDistError(f"this kernel descriptor was fitted on data of {self.dim} numbers per sample; "
                              f"got samples of shape {tuple(x.shape[1:])}. Fit one on this data.")
        key = (x.device, x.dtype)
        if key not in self._scaled:
            self._scaled[key] = (self.frequencies / self.bandwidth).T.to(device=x.device, dtype=x.dtype)
        z = flat @ self._scaled[key]
        return torch.cat([torch.cos(z), torch.sin(z)], dim=1) * math.sqrt(2.0 / self.num_features)

    def kernel(self, a: Tensor, b: Tensor) -> Tensor:
        """The exact kernel exp(-|a - b|^2 / (2 h^2)) per pair of rows, the features' target."""
        d2 = ((a.double() - b.double()) ** 2).flatten(1).sum(1)
        return torch.exp(-d2 / (2 * self.bandwidth**2))

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from pfdist.hashing import content_hash

            self._fingerprint = "kernel:" + content_hash(FORMAT, self.frequencies, self.bandwidth)
        return self._fingerprint

    def config(self) -> dict:
        return {"format": FORMAT, "bandwidth": self.bandwidth, "num_features": self.num_features, "dim": self.dim,
                "seed": self.seed, "fingerprint": self.fingerprint()}

    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: the frequencies, and the JSON config in its header."""
        from pfdist.atomic import atomic_save_tensors

        return atomic_save_tensors(Path(path), {"frequencies": self.frequencies},
                                   metadata={"pfdist": json.dumps(self.config())})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KernelDescriptor":
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        path = checks.existing_file(path, "kernel descriptor file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("pfdist", "null"))
                frequencies = f.get_tensor("frequencies")
        except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise PFDistError(f"{path} is not a readable kernel descriptor file ({type(e).__name__}: {e}); "
                              "save one with KernelDescriptor.save(path).") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PFDistError(f"{path} is a safetensors file but not a pfdist kernel descriptor ({FORMAT}).")
        desc = cls(frequencies, meta.get("bandwidth"), seed=meta.get("seed"))
        if "fingerprint" not in meta:
            raise PFDistError(f"kernel descriptor {path} records no fingerprint, so its bandwidth and frequencies "
                              "cannot be verified; fit and save it again with KernelDescriptor.save.")
        if meta["fingerprint"] != desc.fingerprint():
            raise PFDistError(f"kernel descriptor {path} is corrupt: its content does not match its recorded "
                              "fingerprint; fit and save it again.")
        return desc

    def __repr__(self) -> str:
        return f"KernelDescriptor(num_features={self.num_features}, dim={self.dim}, bandwidth={self.bandwidth:.6g})"
