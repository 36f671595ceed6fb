"""PFD accumulated batch by batch, as a metric object in the torchmetrics style.

``update(out_a, out_b)`` takes the outputs Psi(Phi_p(x_T)), Psi(Phi_q(x_T)) of two maps on one
batch of shared noise and adds float64 sums of the squared distances d and d^2 and their count
(keeping the d themselves on request); ``compute()`` turns the sums into a :class:`PFDResult`
with the interval rule of :meth:`PFDResult.from_sums`; ``reset()`` starts over. Under
``torch.distributed`` the sums are added over the ranks (and kept d joined in rank order), so
every rank gets the result of one process holding all batches.

When torchmetrics is installed (``pip install pfdist[metrics]``), :class:`PFDMetric` is a
``torchmetrics.Metric`` (device moves, ``state_dict``, ``MetricCollection``, its own
synchronisation); otherwise it is a plain object with the same methods.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from pfdist import distributed
from pfdist.distance import PFDResult, squared_distances
from pfdist.errors import NonFiniteError, PFDistError
from pfdist.outputs import FlowOutputs

__all__ = ["PFDMetric"]


def batch_distances(out_a: Tensor | FlowOutputs, out_b: Tensor | FlowOutputs) -> Tensor:
    """Squared distances (batch,) in float64 of two maps' outputs on the same noise.

    Tensors (batch, *feature) must be on the same seeds, in the same order; that is the caller's
    to ensure. :class:`FlowOutputs` on both sides are checked: the same noise level, labels,
    descriptor and precision, and the seeds of the shorter inside those of the longer (which
    is sliced to them).
    """
    if isinstance(out_a, FlowOutputs) and isinstance(out_b, FlowOutputs):
        out_a, out_b = _seed_aligned(out_a, out_b)
    elif isinstance(out_a, FlowOutputs) or isinstance(out_b, FlowOutputs):
        raise PFDistError("give both sides as tensors or both as FlowOutputs; for the seeds seed..seed+n-1 "
                          "of precomputed outputs, pass outputs.slice(seed, n).")
    for name, out in (("out_a", out_a), ("out_b", out_b)):
        if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] == 0:
            raise PFDistError(f"{name} must be a non-empty (batch, ...) tensor or FlowOutputs "
                              f"(got {type(out).__name__} {tuple(getattr(out, 'shape', ()))}).")
    d = squared_distances(out_a, out_b.to(out_a.device))
    if not torch.isfinite(d).all():
        bad = (~torch.isfinite(d)).nonzero().flatten().tolist()
        raise NonFiniteError(f"the outputs hold NaN or Inf at {len(bad)} rows of this batch (first row {bad[0]}); "
                             "check the maps that made them.")
    return d


def _seed_aligned(a: FlowOutputs, b: FlowOutputs) -> tuple[Tensor, Tensor]:
    for what in ("sigma_max", "conditioning", "dtype", "descriptor"):
        if getattr(a, what) != getattr(b, what):
            raise PFDistError(f"the outputs differ in {what} ({getattr(a, what)} vs {getattr(b, what)}); PFD compares "
                              "maps on the same x_T and labels, in one descriptor space and precision.")
    if a.descriptor is None and a.descriptor_object is not b.descriptor_object:
        raise PFDistError("the outputs were made with descriptors without a fingerprint; only the very same object matches.")
    if a.num_samples <= b.num_samples:
        return a.values, b.slice(a.seed, a.num_samples)
    return a.slice(b.seed, b.num_samples), b.values


def _result(total: Tensor, total_sq: Tensor, count: Tensor, per_sample: Tensor | None) -> PFDResult:
    return PFDResult.from_sums(total.item(), total_sq.item(), int(count.item()), per_sample=per_sample)


class PlainPFDMetric:
    """PFD over batches (module docstring); ``per_sample=True`` keeps each d (else only sums)."""

    def __init__(self, *, per_sample: bool = False) -> None:
        self.keep_per_sample = bool(per_sample)
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64)  # sum d, sum d^2
        self.count = torch.zeros(1, dtype=torch.int64)
        self.per_sample: list[Tensor] = []

    def update(self, out_a: Tensor | FlowOutputs, out_b: Tensor | FlowOutputs) -> None:
        d = batch_distances(out_a, out_b)
        self.sums += torch.stack([d.sum(), (d * d).sum()]).cpu()
        self.count += d.numel()
        if self.keep_per_sample:
            self.per_sample.append(d.cpu())

    def compute(self) -> PFDResult:
        """The result of all batches of all ranks (every rank joins the sums)."""
        sums, count = distributed.sum_over_ranks(self.sums), distributed.sum_over_ranks(self.count)
        kept = None
        if self.keep_per_sample:
            local = torch.cat(self.per_sample) if self.per_sample else torch.zeros(0, dtype=torch.float64)
            kept = distributed.cat_over_ranks(local)
        return _result(sums[0], sums[1], count[0], kept)


try:
    import torchmetrics
    from torchmetrics.utilities import dim_zero_cat
except ImportError:  # the optional extra is absent
    torchmetrics = None


if torchmetrics is None:
    PFDMetric = PlainPFDMetric
else:

    class PFDMetric(torchmetrics.Metric):  # type: ignore[no-redef]
        """PFD over batches as a ``torchmetrics.Metric`` (module docstring); ``per_sample=True``
        keeps each d; other keywords go to ``torchmetrics.Metric`` (``sync_on_compute``, ...)."""

        is_differentiable = False
        higher_is_better = False
        full_state_update = False

        def __init__(self, *, per_sample: bool = False, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.keep_per_sample = bool(per_sample)
            self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("total_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
            if self.keep_per_sample:
                self.add_state("per_sample", [], dist_reduce_fx="cat")

        def update(self, out_a: Tensor | FlowOutputs, out_b: Tensor | FlowOutputs) -> None:
            d = batch_distances(out_a, out_b).to(self.total.device)
            self.total += d.sum()
            self.total_sq += (d * d).sum()
            self.count += d.numel()
            if self.keep_per_sample:
                self.per_sample.append(d)

        def compute(self) -> PFDResult:
            kept = None
            if self.keep_per_sample:
                kept = dim_zero_cat(self.per_sample) if len(self.per_sample) else torch.zeros(0, dtype=torch.float64)
            return _result(self.total, self.total_sq, self.count, None if kept is None else kept.cpu())

        def _wrap_compute(self, compute: Any) -> Any:
            """torchmetrics' wrapper, less its tensor post-processing: it cannot rebuild a frozen result."""

            @functools.wraps(compute)
            def wrapped() -> PFDResult:
                if self._computed is None:
                    with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                                           should_unsync=self._should_unsync):
                        value = compute()
                    if not self.compute_with_cache:
                        return value
                    self._computed = value
                return self._computed

            return wrapped
