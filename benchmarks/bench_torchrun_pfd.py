"""One PFD spread over 2 processes (gloo, one thread each) / the same PFD in 1 process.

Goal >= 1.7 on 2 cores. The network is large enough that its forwards dominate. The number of
seeds M is calibrated so that the 2-process PFD takes at least 10 s; each measurement is the
PFD call alone, after a warm-up (process start-up and the group's rendezvous are outside it),
5 repeats alternating 1 and 2 processes, and the 2-process values are checked against the
1-process ones. Printed: the median and spread (min-max) of the repeat-by-repeat ratios of wall
seconds, of the busiest process's CPU seconds (what the wall time would be on cores of one's
own), and the CPU seconds of all processes together (2 processes over 1: the cost of splitting).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pfdist
from _timing import MIN_SECONDS, REPEATS, ratios, spread

SHAPE, WIDTH, BATCH = (3, 8, 8), 1024, 64


class MLPDenoiser(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        d = 192
        self.net = torch.nn.Sequential(torch.nn.Linear(d + 1, WIDTH), torch.nn.SiLU(), torch.nn.Linear(WIDTH, WIDTH),
                                       torch.nn.SiLU(), torch.nn.Linear(WIDTH, d))

    def forward(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
        h = torch.cat([x.flatten(1) / (1 + s[:, None] ** 2).sqrt(), s.log()[:, None] / 4], 1)
        return self.net(h).reshape(x.shape)


def worker(rank: int, world: int, m: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=30))
    a, b = MLPDenoiser(0).eval(), MLPDenoiser(1).eval()
    pfdist.pfd(a, b, shape=SHAPE, num_samples=2 * world, batch_size=BATCH)  # warm-up
    dist.barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    r = pfdist.pfd(a, b, shape=SHAPE, num_samples=m, batch_size=BATCH)
    cpu = time.process_time() - c0
    dist.barrier()
    wall = time.perf_counter() - t0
    cpus = [None] * world
    dist.all_gather_object(cpus, cpu)
    if rank == 0:
        torch.save({"wall": wall, "cpu_max": max(cpus), "cpu_sum": sum(cpus), "per_sample": r.per_sample}, out)
    dist.destroy_process_group()


def run(world: int, m: int, tmp: str, i: int) -> dict:
    store, out = os.path.join(tmp, f"store{world}-{i}"), os.path.join(tmp, f"out{world}-{i}.pt")
    mp.spawn(worker, args=(world, m, store, out), nprocs=world, join=True)
    return torch.load(out)


def calibrate(min_seconds: float) -> int:
    """Seeds for which 2 processes take about 1.2 * min_seconds (rate of one thread, here)."""
    torch.set_num_threads(1)
    a, b = MLPDenoiser(0).eval(), MLPDenoiser(1).eval()
    pfdist.pfd(a, b, shape=SHAPE, num_samples=BATCH, batch_size=BATCH)
    t0 = time.perf_counter()
    pfdist.pfd(a, b, shape=SHAPE, num_samples=2 * BATCH, batch_size=BATCH)
    rate = 2 * BATCH / (time.perf_counter() - t0)
    return max(2 * BATCH, math.ceil(2 * 1.2 * min_seconds * rate / BATCH) * BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--seconds", type=float, default=MIN_SECONDS, help="least time of one 2-process measurement")
    args = parser.parse_args()
    m = calibrate(args.seconds)
    one, two = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # alternating, so both see the same load
            one.append(run(1, m, tmp, i))
            two.append(run(2, m, tmp, i))
    for a, b in zip(one, two):
        assert torch.equal(a["per_sample"], b["per_sample"]), "2 processes changed the per-seed values"
    short = sum(r["wall"] < args.seconds for r in two)
    print(f"PFD of M = {m} seeds, MLP width {WIDTH}, batch {BATCH}, one thread per process (gloo); "
          f"{args.repeats} repeats, median (min-max); per-seed values identical")
    print(f"  wall s: 1 process {spread([r['wall'] for r in one])}, 2 processes {spread([r['wall'] for r in two])}"
          + (f" ({short} under {args.seconds:.0f} s)" if short else ""))
    print(f"  speed-up, wall: {spread(ratios([r['wall'] for r in one], [r['wall'] for r in two]))}x (goal >= 1.7 on 2 cores)")
    print(f"  speed-up, CPU s of the busiest process: "
          f"{spread(ratios([r['cpu_max'] for r in one], [r['cpu_max'] for r in two]))}x")
    print(f"  CPU s of all processes, 2 / 1: {spread(ratios([r['cpu_sum'] for r in two], [r['cpu_sum'] for r in one]))}x "
          "(1.00 = no cost of splitting)")


if __name__ == "__main__":
    main()
