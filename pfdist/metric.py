"""Probability flow distance (PAPER.md, Definition 1).

    PFD(p, q) = ( E_{x_T ~ N(0, T^2 I)} |Psi(Phi_p(x_T)) - Psi(Phi_q(x_T))|^2 )^(1/2)

estimated on seeds seed..seed+M-1 shared by both maps. The distance itself is a pure function
(:func:`squared_distances`); reduction and intervals live in :class:`PFDResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from pfdist.descriptors import Descriptor, resolve_descriptor
from pfdist.errors import PFDistError
from pfdist.flows import FlowOutputs, FlowSettings, check_denoiser, map_batch, resolve_device, seed_batches

Z_95 = 1.959963984540054


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """|a_i - b_i|^2 per sample in float64; a, b: (batch, *feature) -> (batch,)."""
    if a.shape != b.shape:
        raise PFDistError(f"outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}.")
    return ((a.double() - b.double()) ** 2).flatten(1).sum(1)


@dataclass(frozen=True)
class PFDResult:
    """A PFD estimate. ``per_sample`` holds the squared distances, one per seed, in seed order.

    ``value = sqrt(mean(per_sample))``. ``stderr`` is the delta-method standard error
    s / (2 sqrt(M) value), s the sample std of per_sample. ``ci`` is the 95% normal interval
    of the mean squared distance, mean +- 1.96 s / sqrt(M) (clipped at 0), mapped through the
    square root, so it is asymmetric like the estimator.
    """

    value: float
    stderr: float
    ci: tuple[float, float]
    per_sample: Tensor
    num_samples: int
    nfe: float
    seed: int

    @classmethod
    def from_per_sample(cls, per_sample: Tensor, *, seed: int, nfe: float) -> "PFDResult":
        per_sample = per_sample.detach().double().cpu()
        m = per_sample.numel()
        if m < 2:
            raise PFDistError(f"num_samples must be at least 2 for an interval (got {m}).")
        mean = per_sample.mean().item()
        se_mean = per_sample.std(unbiased=True).item() / math.sqrt(m)
        value = math.sqrt(mean)
        stderr = se_mean / (2 * value) if value > 0 else 0.0
        lo, hi = max(mean - Z_95 * se_mean, 0.0), mean + Z_95 * se_mean
        return cls(value, stderr, (math.sqrt(lo), math.sqrt(hi)), per_sample, m, nfe, seed)

    @staticmethod
    def combine(parts: Sequence["PFDResult"]) -> "PFDResult":
        """Join results on contiguous seed ranges (any order) into the result of the union."""
        if not parts:
            raise PFDistError("nothing to combine.")
        parts = sorted(parts, key=lambda r: r.seed)
        for a, b in zip(parts, parts[1:]):
            if a.seed + a.num_samples != b.seed:
                raise PFDistError(
                    f"seed ranges are not contiguous: {a.seed}..{a.seed + a.num_samples - 1} "
                    f"then {b.seed}..; evaluate the missing seeds first."
                )
        nfe = sum(r.nfe * r.num_samples for r in parts) / sum(r.num_samples for r in parts)
        return PFDResult.from_per_sample(torch.cat([r.per_sample for r in parts]), seed=parts[0].seed, nfe=nfe)

    def to_dict(self, *, per_sample: bool = False) -> dict:
        d = {
            "pfd": self.value,
            "stderr": self.stderr,
            "ci95": list(self.ci),
            "num_samples": self.num_samples,
            "seed": self.seed,
            "nfe": self.nfe,
        }
        if per_sample:
            d["per_sample"] = self.per_sample.tolist()
        return d

    def __str__(self) -> str:
        lo, hi = self.ci
        return f"PFD = {self.value:.5g} ± {self.stderr:.2g}  (95% CI [{lo:.5g}, {hi:.5g}], M = {self.num_samples})"


def pfd(
    a: Callable | FlowOutputs,
    b: Callable | FlowOutputs,
    *,
    shape: Sequence[int] | None = None,
    num_samples: int = 10_000,
    seed: int = 100_000,
    descriptor: Descriptor | str | None = None,
    steps: int = 18,
    solver: str = "heun",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
) -> PFDResult:
    """Probability flow distance between two denoisers on shared seeds.

    a, b: anything with ``D(x, sigma)`` (exact distributions, networks, callables) or
    :class:`FlowOutputs` precomputed on (a superset of) the same seeds with the same settings.
    shape: the data shape (taken from a or b when they know it). Seeds are
    seed..seed+num_samples-1; any range can be evaluated alone and joined exactly with
    :meth:`PFDResult.combine`. Streams in batches; ``progress(n)`` gets samples done.
    """
    if not isinstance(num_samples, int) or num_samples < 2:
        raise PFDistError(f"num_samples must be an integer >= 2 (got {num_samples!r}).")
    if batch_size < 1:
        raise PFDistError(f"batch_size must be positive (got {batch_size}).")
    shape = _infer_shape(a, b, shape)
    settings = FlowSettings(steps, solver, sigma_min, sigma_max, rho)
    desc = resolve_descriptor(descriptor)
    device = resolve_device(device, a, b)
    for name, x in (("a", a), ("b", b)):
        check_denoiser(x, name, shape, device, dtype)
        if isinstance(x, FlowOutputs) and x.settings != settings:
            raise PFDistError(f"{name}: precomputed with {x.settings}, but this PFD uses {settings}.")
        if isinstance(x, FlowOutputs):
            x.slice(seed, num_samples)  # range check up front
    per_sample = torch.empty(num_samples, dtype=torch.float64)
    calls = {"a": 0, "b": 0}
    batches = 0
    with torch.no_grad():
        for seeds in seed_batches(seed, num_samples, batch_size):
            outs = []
            for name, x in (("a", a), ("b", b)):
                if isinstance(x, FlowOutputs):
                    outs.append(x.slice(seeds.start, len(seeds)).to(device))
                else:
                    out, n = map_batch(x, seeds, shape, settings, desc, name=name, device=device, dtype=dtype)
                    outs.append(out)
                    calls[name] += n
            per_sample[seeds.start - seed : seeds.stop - seed] = squared_distances(*outs).cpu()
            batches += 1
            if progress:
                progress(len(seeds))
    nfe = max(calls.values()) / batches or _precomputed_nfe(a, b)
    return PFDResult.from_per_sample(per_sample, seed=seed, nfe=nfe)


def _precomputed_nfe(a, b) -> float:
    return max(x.nfe for x in (a, b) if isinstance(x, FlowOutputs))


def _infer_shape(a, b, shape) -> tuple[int, ...]:
    known = {name: tuple(getattr(x, "shape")) for name, x in (("a", a), ("b", b)) if hasattr(x, "shape") and not isinstance(x, Tensor)}
    if len(set(known.values())) > 1:
        raise PFDistError(
            f"a and b have different data shapes ({known['a']} vs {known['b']}); PFD compares maps on the same space."
        )
    if shape is None:
        if not known:
            raise PFDistError("pass shape=(...) : neither a nor b knows its data shape.")
        return next(iter(known.values()))
    return tuple(int(s) for s in shape)
