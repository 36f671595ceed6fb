"""The distance layer: per-sample squared distances and the PFD result (docs/method.md, §2).

    PFD(p, q) = ( E_{x_T} |Psi(Phi_p(x_T)) - Psi(Phi_q(x_T))|^2 )^(1/2)

This module sees tensors only: it imports no solver, map or flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from pfdist.errors import PFDistError

Z_95 = 1.959963984540054
# Cornish-Fisher terms g_1..g_4 of Student's t quantile in 1/df at the normal 97.5% point
# (Abramowitz & Stegun 26.7.5); from df = 100 on they are within 1e-10 of the exact quantile.
_CF_TERMS = (
    (Z_95**3 + Z_95) / 4,
    (5 * Z_95**5 + 16 * Z_95**3 + 3 * Z_95) / 96,
    (3 * Z_95**7 + 19 * Z_95**5 + 17 * Z_95**3 - 15 * Z_95) / 384,
    (79 * Z_95**9 + 776 * Z_95**7 + 1482 * Z_95**5 - 1920 * Z_95**3 - 945 * Z_95) / 92160,
)


def t_quantile_95(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom: the half-width, in standard
    errors, of a two-sided 95% interval of a mean of df + 1 values (1.96 as df -> infinity).

    Below df = 100 scipy's ``stdtrit`` (imported there only, so that a process evaluating PFDs on
    thousands of seeds never imports scipy); from 100 on the Cornish-Fisher series in 1/df."""
    if df < 100:
        from scipy.special import stdtrit

        return float(stdtrit(df, 0.975))
    return Z_95 + sum(g / df ** (i + 1) for i, g in enumerate(_CF_TERMS))


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """|a_i - b_i|^2 per sample in float64; a, b: (batch, *feature) -> (batch,)."""
    if a.shape != b.shape:
        raise PFDistError(f"outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}.")
    return ((a.double() - b.double()) ** 2).flatten(1).sum(1)


@dataclass(frozen=True)
class PFDResult:
    """A PFD estimate. ``per_sample`` holds the squared distances, one per seed, in seed order
    (None for a :class:`pfdist.PFDMetric` that kept only sums). ``seed``: the first of the
    contiguous seeds (None for seeds with gaps, and for a PFDMetric).

    ``value = sqrt(mean(per_sample))``. ``stderr`` is the delta-method standard error
    s / (2 sqrt(M) value), s the sample std of per_sample. ``ci`` is the 95% Student-t interval
    of the mean squared distance, mean +- t_{0.975, M-1} s / sqrt(M) (clipped at 0; t = 2.78 at
    M = 5, 1.96 as M grows: :func:`t_quantile_95`), mapped through the square root, so it is
    asymmetric like the estimator.

    ``nfe_a`` / ``nfe_b``: network evaluations per sample of each side's map (for precomputed
    outputs, the count recorded when they were made); ``nfe = max(nfe_a, nfe_b)``, the cost
    of the dearer side. ``flow_a`` / ``flow_b``: the
    flow settings each side's ODE actually ran on (after clamping to the models' sigma range;
    None for a generator), as dicts.

    ``solver_error_a`` / ``solver_error_b`` (``pfd(..., error_estimate=True)``; None when not
    asked for): each map's discretisation error on the grid it ran on, the RMS over seeds of
    |Psi(Phi_grid(x_T)) - Psi(Phi_exact(x_T))|, estimated by step doubling and Richardson
    extrapolation on the first seeds of the range (docs/method.md, §2); 0 for a generator,
    which is its own exact map. ``solver_error = solver_error_a + solver_error_b`` bounds the
    discretisation part of the result: on the same seeds, |value - value_exact| <= solver_error
    (Minkowski's inequality), beside the Monte-Carlo interval ``ci``.
    ``comparison``: a hash of the two maps' and the descriptor's fingerprints (None when one
    has none), so that :meth:`combine` joins parts of one comparison only.
    """

    value: float
    stderr: float
    ci: tuple[float, float]
    per_sample: Tensor | None
    num_samples: int
    nfe: float
    seed: int | None
    nfe_a: float = math.nan
    nfe_b: float = math.nan
    flow_a: dict | None = None
    flow_b: dict | None = None
    solver_error_a: float | None = None
    solver_error_b: float | None = None
    comparison: str | None = None

    @property
    def solver_error(self) -> float | None:
        """Bound on |value - value_exact| from the two maps' estimated discretisation errors (or None)."""
        if self.solver_error_a is None or self.solver_error_b is None:
            return None
        return self.solver_error_a + self.solver_error_b

    @classmethod
    def from_per_sample(
        cls,
        per_sample: Tensor,
        *,
        seed: int,
        nfe_a: float = math.nan,
        nfe_b: float = math.nan,
        flow_a: dict | None = None,
        flow_b: dict | None = None,
        solver_error_a: float | None = None,
        solver_error_b: float | None = None,
        comparison: str | None = None,
    ) -> "PFDResult":
        per_sample = per_sample.detach().double().cpu()
        if not bool(torch.isfinite(per_sample).all()) or bool((per_sample < 0).any()):
            raise PFDistError("per_sample must hold squared distances: finite numbers >= 0.")
        m = per_sample.numel()
        _at_least_two(m)
        mean = per_sample.mean().item()
        se_mean = per_sample.std(unbiased=True).item() / math.sqrt(m)
        return cls._from_mean(mean, se_mean, per_sample, m, seed, nfe_a, nfe_b, flow_a, flow_b,
                              solver_error_a, solver_error_b, comparison)

    @classmethod
    def from_sums(
        cls, total: float, total_sq: float, count: int, *, per_sample: Tensor | None = None, seed: int | None = None,
    ) -> "PFDResult":
        """The result of ``count`` squared distances known by their sum and sum of squares (streamed,
        or summed over processes); the same rule as :meth:`from_per_sample`. ``per_sample`` may be
        None (then ``combine`` and ``to_dict(per_sample=True)`` are unavailable)."""
        _at_least_two(count)
        mean = total / count
        variance = max(total_sq - total * mean, 0.0) / (count - 1)
        return cls._from_mean(mean, math.sqrt(variance / count), per_sample, count, seed,
                              math.nan, math.nan, None, None)

    @classmethod
    def _from_mean(cls, mean, se_mean, per_sample, m, seed, nfe_a, nfe_b, flow_a, flow_b,
                   solver_error_a=None, solver_error_b=None, comparison=None) -> "PFDResult":
        """The interval rule (class docstring) from the mean squared distance and its standard error."""
        value = math.sqrt(mean)
        stderr = se_mean / (2 * value) if value > 0 else 0.0
        half = t_quantile_95(m - 1) * se_mean
        lo, hi = max(mean - half, 0.0), mean + half
        nfe = max(nfe_a, nfe_b) if not (math.isnan(nfe_a) or math.isnan(nfe_b)) else math.nan
        return cls(value, stderr, (math.sqrt(lo), math.sqrt(hi)), per_sample, m, nfe, seed,
                   nfe_a, nfe_b, flow_a, flow_b, solver_error_a, solver_error_b, comparison)

    @staticmethod
    def combine(parts: Sequence["PFDResult"]) -> "PFDResult":
        """Join results on contiguous seed ranges (any order) into the result of the union.

        The solver error estimates, made on the first seeds of a range, are those of the part
        holding the lowest seeds (None unless every part has them).
        """
        if not parts:
            raise PFDistError("nothing to combine.")
        strays = sorted({type(r).__name__ for r in parts if not isinstance(r, PFDResult)})
        if strays:
            raise PFDistError(f"combine joins PFDResult objects (pfd on seed ranges); got {', '.join(strays)}.")
        if any(r.per_sample is None or r.seed is None for r in parts):
            raise PFDistError("combine needs the per-seed values and seed range of each part (results of pfd).")
        parts = sorted(parts, key=lambda r: r.seed)
        for a, b in zip(parts, parts[1:]):
            if a.seed + a.num_samples != b.seed:
                raise PFDistError(
                    f"seed ranges are not contiguous: {a.seed}..{a.seed + a.num_samples - 1} "
                    f"then {b.seed}..; evaluate the missing seeds first."
                )
            if (a.flow_a, a.flow_b) != (b.flow_a, b.flow_b):
                raise PFDistError("the parts ran on different flow settings; combine parts of one comparison.")
            if a.comparison != b.comparison:
                raise PFDistError("the parts compare different models or descriptors (their comparison "
                                  "fingerprints differ); combine parts of one comparison.")
        total = sum(r.num_samples for r in parts)
        mean_nfe = lambda side: sum(getattr(r, side) * r.num_samples for r in parts) / total  # noqa: E731
        return PFDResult.from_per_sample(
            torch.cat([r.per_sample for r in parts]), seed=parts[0].seed, nfe_a=mean_nfe("nfe_a"),
            nfe_b=mean_nfe("nfe_b"), flow_a=parts[0].flow_a, flow_b=parts[0].flow_b, comparison=parts[0].comparison,
            **({} if any(r.solver_error is None for r in parts) else
               dict(solver_error_a=parts[0].solver_error_a, solver_error_b=parts[0].solver_error_b)),
        )

    def to_dict(self, *, per_sample: bool = False) -> dict:
        d = {
            "pfd": self.value,
            "stderr": self.stderr,
            "ci95": list(self.ci),
            "num_samples": self.num_samples,
            "seed": self.seed,
            "nfe": self.nfe,
            "nfe_a": self.nfe_a,
            "nfe_b": self.nfe_b,
            "flow_a": self.flow_a,
            "flow_b": self.flow_b,
            "solver_error": self.solver_error,
            "solver_error_a": self.solver_error_a,
            "solver_error_b": self.solver_error_b,
        }
        if self.comparison is not None:
            d["comparison"] = self.comparison
        if per_sample:
            if self.per_sample is None:
                raise PFDistError("this result kept no per-sample values; use PFDMetric(per_sample=True).")
            d["per_sample"] = self.per_sample.tolist()
        return d

    def __str__(self) -> str:
        lo, hi = self.ci
        text = f"PFD = {self.value:.5g} ± {self.stderr:.2g}  (95% CI [{lo:.5g}, {hi:.5g}], M = {self.num_samples})"
        if self.solver_error is not None:
            text += (f"; solver error <= {self.solver_error:.2g} (est.; maps {self.solver_error_a:.2g}, "
                     f"{self.solver_error_b:.2g})")
        return text


def _at_least_two(m: int) -> None:
    if m < 2:
        raise PFDistError(f"num_samples must be at least 2 for an interval (got {m}).")
