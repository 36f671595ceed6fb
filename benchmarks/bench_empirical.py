"""EmpiricalDenoiser throughput / torch.matmul throughput on the same shapes.

N = 2^14 points of dimension 3072, batch 256. The denoiser's useful work is two matmuls
(x Y^T and W Y: 4 B N d flops); the baseline is those two matmuls alone. Goal: >= 0.5.
"""

from __future__ import annotations

import torch

import pfdist
from _timing import interleaved_medians

N, D, B = 2**14, 3072, 256


def main() -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(N, D, generator=g)
    x = torch.randn(B, D, generator=g)
    w = torch.rand(B, N, generator=g)
    emp = pfdist.EmpiricalDenoiser(data)
    flops = 4 * B * N * D

    def denoise():
        emp.denoise(x, 1.0)

    def matmuls():
        torch.matmul(x, data.T)
        torch.matmul(w, data)

    t = interleaved_medians({"empirical": denoise, "matmul": matmuls}, repeats=5)
    ge, gm = flops / t["empirical"] / 1e9, flops / t["matmul"] / 1e9
    print(f"EmpiricalDenoiser N={N}, d={D}, batch={B} (chunk {emp.chunk_size})")
    print(f"  empirical {ge:.1f} GFLOP/s, matmul {gm:.1f} GFLOP/s, ratio {ge / gm:.3f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
