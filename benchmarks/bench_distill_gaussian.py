"""Distilled students of a 4-d Gaussian teacher: E_gen and E_mem against N, and wall time per student.

E_gen is the PFD to the teacher's closed-form flow map (and, for regression, to the teacher's
18-step Heun map it was fitted to); E_mem the PFD to the empirical flow of the N training outputs;
all on 2000 evaluation seeds, in units of sqrt(tr Sigma). For consistency students, "ideal" is
E_gen of the same multistep sampler run with the exact consistency function (the Gaussian's flow
to the segment's end, or to sigma_min when re-noised): the floor that the sampler sets whatever the
training (0 for segments, which follow x_T's trajectory). Progressive
students train every round with the same settings (10 epochs a round). Run:
    python benchmarks/bench_distill_gaussian.py
"""

from __future__ import annotations

import math
import time

import torch

import pfdist

NET = {"arch": "mlp", "width": 64, "depth": 2, "sigma_data": 1.0}
TRAIN = pfdist.TrainConfig(batch_size=256, lr=2e-3, epochs=10, epoch_images=256 * 100, ema_halflife_images=None,
                           lr_schedule="cosine")


def ideal_map(g: pfdist.Gaussian, student: pfdist.GeneratorMap) -> pfdist.GeneratorMap:
    sigmas, sigma_min, multistep = student.fn.sigmas, student.fn.sigma_min, student.fn.multistep
    fresh = multistep == "fresh"

    def fn(x_T: torch.Tensor) -> torch.Tensor:
        if multistep == "segments":
            x = x_T
            for sigma, floor in zip(sigmas, sigmas[1:] + [sigma_min]):
                x = g.flow(x, sigma, floor)
            return x
        x_0 = g.flow(x_T, sigmas[0], sigma_min)
        z_ddim = (x_T - x_0) / sigmas[0]
        for i, sigma in enumerate(sigmas[1:], start=1):
            z = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(i)) if fresh else z_ddim
            x_0 = g.flow(x_0 + math.sqrt(sigma**2 - sigma_min**2) * z, sigma, sigma_min)
        return x_0

    return pfdist.generator(fn, sigma_max=sigmas[0], shape=(4,))


def main() -> None:
    A = torch.tensor([[1.0, 0.3, 0.0, 0.2], [0.0, 0.8, 0.4, 0.0], [0.1, 0.0, 0.6, 0.3], [0.0, 0.2, 0.0, 0.5]])
    g = pfdist.Gaussian(torch.tensor([0.5, -0.3, 0.2, 0.0]), A @ A.T + 0.05 * torch.eye(4))
    exact = pfdist.generator(g.flow_map, sigma_max=80.0, shape=(4,))
    teacher = pfdist.ode_map(g)
    scale = math.sqrt(float(g.cov.trace()))
    print(f"teacher's own Heun-18 error: {pfdist.pfd(teacher, exact, num_samples=2000).value / scale:.4f}")
    print("method             steps      N   E_gen(exact)  E_gen(teacher)  E_mem   wall_s  ideal")
    runs = [("regression", 1, n) for n in (8, 64, 512, 4096)] + [("regression", 4, 4096)]
    runs += [("consistency", s, 4096) for s in (1, 2, 4)] + [("consistency", 2, n) for n in (8, 64, 512)]
    runs += [("consistency/ddim", s, 4096) for s in (2, 4)] + [("consistency/fresh", 2, 4096)]
    runs += [("progressive", s, 4096) for s in (1, 4)]
    for method, steps, n in runs:
        t0 = time.perf_counter()
        method, _, multistep = method.partition("/")
        student = pfdist.distill(g, method=method, steps=steps, num_pairs=n, net=NET, train=TRAIN,
                                 multistep=multistep or "segments")
        wall = time.perf_counter() - t0
        train_outputs = pfdist.distill_pairs(g, n)[1]
        e_gen = pfdist.pfd(student, exact, num_samples=2000).value / scale
        e_teacher = pfdist.pfd(student, teacher, num_samples=2000).value / scale
        e_mem = pfdist.pfd(student, pfdist.EmpiricalDenoiser(train_outputs), num_samples=2000).value / scale
        ideal = pfdist.pfd(ideal_map(g, student), exact, num_samples=2000).value / scale if method == "consistency" else math.nan
        name = method + ("/" + multistep if multistep else "")
        print(f"{name:18s} {steps:5d} {n:6d}   {e_gen:11.4f}  {e_teacher:14.4f}  {e_mem:6.4f}  {wall:6.1f}  {ideal:.4f}")


if __name__ == "__main__":
    main()
