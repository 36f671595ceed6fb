"""The optimal denoiser of an empirical distribution (1/N) sum_i delta(y_i)."""

from __future__ import annotations

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.ode import expand_sigma


class EmpiricalDenoiser:
    """D*(x; sigma) = sum_i y_i softmax_i(-|x - y_i|^2 / (2 sigma^2)), exact.

    ``data: (N, *shape)``. Streams over the data in chunks of ``chunk_size`` points with an
    online softmax (running max and sum), so memory is O(batch * chunk_size + batch * d) for
    any N. Squared distances use |x|^2 - 2 x.y + |y|^2 (two matmuls per chunk); the row
    constant |x|^2 cancels in the softmax and is dropped.
    """

    def __init__(self, data: Tensor, *, chunk_size: int = 4096):
        data = torch.as_tensor(data)
        if data.ndim < 2 or data.shape[0] < 1:
            raise PFDistError(f"data must be (N, *shape) with N >= 1; got {tuple(data.shape)}.")
        if not data.is_floating_point():
            raise PFDistError(f"data must be floating point; got {data.dtype}.")
        if not torch.isfinite(data).all():
            raise PFDistError("data contains NaN or Inf.")
        self.shape = tuple(data.shape[1:])
        self.data = data.reshape(data.shape[0], -1).contiguous()
        self.half_sq_norms = 0.5 * (self.data.double() ** 2).sum(1).to(self.data.dtype)
        self.chunk_size = int(chunk_size)
        self._device_cache: dict = {}

    def __len__(self) -> int:
        return self.data.shape[0]

    def _on(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (str(device), dtype)
        if key not in self._device_cache:
            self._device_cache[key] = (self.data.to(device, dtype), self.half_sq_norms.to(device, dtype))
        return self._device_cache[key]

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """x: (batch, *shape), sigma: float or (batch,) > 0 -> (batch, *shape)."""
        Y, half_sq = self._on(x.device, x.dtype)
        flat = x.reshape(x.shape[0], -1)
        inv_var = 1.0 / expand_sigma(sigma, flat) ** 2  # (batch, 1)
        run_max = torch.full((flat.shape[0], 1), -torch.inf, dtype=x.dtype, device=x.device)
        run_sum = torch.zeros_like(run_max)
        acc = torch.zeros_like(flat)
        for start in range(0, Y.shape[0], self.chunk_size):
            Yc, hc = Y[start : start + self.chunk_size], half_sq[start : start + self.chunk_size]
            # logits = -(|x - y|^2 - |x|^2) / (2 sigma^2) = (x.y - |y|^2 / 2) / sigma^2
            logits = torch.addmm(hc, flat, Yc.T, beta=-1.0).mul_(inv_var)
            new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
            rescale = torch.exp(run_max - new_max)
            weights = logits.sub_(new_max).exp_()
            run_sum = run_sum * rescale + weights.sum(1, keepdim=True)
            acc = torch.addmm(acc * rescale, weights, Yc)
            run_max = new_max
        return (acc / run_sum).reshape(x.shape)

    __call__ = denoise

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws with replacement from the data."""
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.data[idx].reshape(n, *self.shape).clone()

    def fingerprint(self) -> str:
        return content_hash("EmpiricalDenoiser", self.data)

    def __repr__(self) -> str:
        return f"EmpiricalDenoiser(N={len(self)}, shape={self.shape})"


def nearest_neighbors(x: Tensor, data: Tensor, *, k: int = 2, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Euclidean distances and indices of the k nearest rows of ``data`` to each row of ``x``.

    x: (batch, *shape), data: (N, *shape) -> (batch, k) distances (ascending), (batch, k) indices.
    Streams over data in chunks; distances are computed in float64 for exact ordering.
    """
    checks.integer("k", k, lo=1)
    if data.ndim < 1 or data.shape[0] == 0 or data[0].numel() != x[0].numel():
        raise PFDistError(f"data must be (N, *shape) with N >= 1 rows of the size of x's rows; got data "
                          f"{tuple(data.shape)} for x {tuple(x.shape)}.")
    flat = x.reshape(x.shape[0], -1).double()
    Y = data.reshape(data.shape[0], -1).to(x.device)
    k = min(k, Y.shape[0])
    best_d = torch.full((flat.shape[0], 0), 0.0, dtype=torch.float64, device=x.device)
    best_i = torch.zeros((flat.shape[0], 0), dtype=torch.long, device=x.device)
    for start in range(0, Y.shape[0], chunk_size):
        Yc = Y[start : start + chunk_size].double()
        dist = torch.cdist(flat, Yc, compute_mode="donot_use_mm_for_euclid_dist")
        d_all = torch.cat([best_d, dist], 1)
        i_all = torch.cat([best_i, torch.arange(start, start + Yc.shape[0], device=x.device).expand_as(dist)], 1)
        best_d, order = d_all.topk(k, dim=1, largest=False)
        best_i = i_all.gather(1, order)
    return best_d, best_i
