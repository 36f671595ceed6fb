"""PFD relative error of fixed-grid solvers vs the adaptive dopri5 reference, on a mixture.

Goals: Heun at 35 NFE <= 1e-3; the best solver at <= 20 NFE <= 1e-2. Both PFDs use the same
seeds, so the relative error is a discretisation error, not Monte Carlo noise.
"""

from __future__ import annotations

import time

import torch

import pfdist

M = 256


def main() -> None:
    a = pfdist.random_low_rank_mixture(16, 4, 4, scale=2.0, mean_scale=1.5, noise_std=0.2, seed=0)
    b = pfdist.random_low_rank_mixture(16, 4, 4, scale=2.0, mean_scale=1.5, noise_std=0.2, seed=1)
    t0 = time.perf_counter()
    ref = pfdist.pfd(a, b, num_samples=M, solver="reference", dtype=torch.float64).value
    print(f"mixture 16-d, 4 components rank 4; M = {M} shared seeds; reference (dopri5, rtol 1e-7) "
          f"PFD = {ref:.6f} ({time.perf_counter() - t0:.1f} s)")
    rows = [("heun", 18), ("heun", 10), ("dpmpp_2m", 18), ("dpmpp_2m", 20), ("euler", 18)]
    best = {}
    for solver, steps in rows:
        r = pfdist.pfd(a, b, num_samples=M, solver=solver, steps=steps, dtype=torch.float64)
        rel = abs(r.value - ref) / ref
        print(f"  {solver:9s} steps {steps:3d}  NFE {r.nfe:4.0f}  PFD {r.value:.6f}  rel. error {rel:.2e}")
        if r.nfe <= 20:
            best[(solver, steps)] = rel
        if (solver, steps) == ("heun", 18):
            print(f"    Heun at 35 NFE: {rel:.2e} (goal <= 1e-3)")
    (solver, steps), rel = min(best.items(), key=lambda kv: kv[1])
    print(f"  best at <= 20 NFE: {solver} steps {steps}: {rel:.2e} (goal <= 1e-2)")
    for steps in (24, 32, 48, 64, 96, 128):
        rel = abs(pfdist.pfd(a, b, num_samples=M, steps=steps, dtype=torch.float64).value - ref) / ref
        if rel <= 1e-3:
            print(f"  Heun reaches 1e-3 at {steps} steps ({2 * steps - 1} NFE): {rel:.2e}")
            break
    else:
        print("  Heun does not reach 1e-3 by 128 steps")


if __name__ == "__main__":
    main()
