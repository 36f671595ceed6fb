"""Sweep engines on one small preset (8 students), each run in a fresh run directory.

- throughput of the Ray engine with 2 workers over 1 worker (goal >= 1.7);
- wall time of the Ray engine over the local pool, both with 2 workers (goal <= 1.15).

A Ray cluster exists before a sweep starts, so ``ray.init`` and ``ray.shutdown`` are outside the
timings; starting the worker processes (and their imports) is inside, as it is for the local
pool. Each unit trains on one thread. The students' epochs are calibrated so that the fastest
sweep takes at least 10 s; 5 repeats, the three sweeps interleaved; ratios are formed within a
repeat and printed as median (min-max). CPU seconds count the driver and every process under it
(pool workers; Ray's raylet, GCS and workers). Needs Ray (``pip install 'pfdist[ray]'``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from _timing import MIN_SECONDS, REPEATS, CpuClock, ratios, spread
from pfdist.experiments import Preset, Scaling, Student, run_preset
from pfdist.experiments.presets import MIXTURE_TEACHER
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

TRAIN = TrainConfig(batch_size=128, lr=2e-3, lr_schedule="onecycle", epochs=20, epoch_images=2560, checkpoint_every=10)


def preset(epochs: int) -> Preset:
    students = tuple(Student(f"w{w}", {"arch": "mlp", "width": w, "depth": 2, "sigma_data": 1.0}) for w in (64, 128))
    return Preset(name="bench", teacher=MIXTURE_TEACHER,
                  eval=EvalConfig(num_samples=256, test_samples=256, loss_repeats=1, batch_size=256),
                  scaling=Scaling((8, 32, 128, 512), students,
                                  replace(TRAIN, epochs=epochs, checkpoint_every=max(1, epochs // 2))))


def sweep(epochs: int, engine: str, options: dict, workers: int | None = None) -> tuple[float, float, float]:
    """(wall, CPU, critical-path CPU) seconds of one sweep, read before Ray's processes are shut
    down. Critical path: the driver's CPU seconds plus the busiest live worker's, what the wall
    time would be with a core per process (known for Ray, whose workers outlive the sweep)."""
    with tempfile.TemporaryDirectory() as tmp:
        clock, t0 = CpuClock(), time.perf_counter()
        summary = run_preset(preset(epochs), Path(tmp), engine=engine, engine_options=options, workers=workers,
                             show_progress=False)
        wall, cpu = time.perf_counter() - t0, clock.seconds()
        path = time.process_time() - clock.self_start + clock.busiest()
    assert summary["ran"] == 8, summary
    return wall, cpu, path


def local(epochs: int) -> tuple[float, float, float]:
    return sweep(epochs, "local", {}, workers=2)


def on_ray(num_cpus: int):
    def run(epochs: int) -> tuple[float, float, float]:
        import ray  # here, not at the top: the local pool's spawned workers import this module

        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            return sweep(epochs, "ray", {"cpus_per_unit": 1})
        finally:
            ray.shutdown()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--seconds", type=float, default=MIN_SECONDS, help="least time of the fastest sweep")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each student (default: calibrated)")
    args = parser.parse_args()
    torch.set_num_threads(2)  # the local pool gives each of its 2 workers 2 // 2 = 1 thread
    probe = args.epochs or TRAIN.epochs
    wall, _, _ = local(probe)  # warm-up, and the calibration of the epochs
    epochs = args.epochs or max(probe, math.ceil(probe * 1.2 * args.seconds / wall))
    runs = {"local pool, 2 workers": local, "Ray, 1 worker": on_ray(1), "Ray, 2 workers": on_ray(2)}
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            samples[name].append(run(epochs))
    wall = {name: [w for w, _, _ in s] for name, s in samples.items()}
    cpu = {name: [c for _, c, _ in s] for name, s in samples.items()}
    path = {name: [p for _, _, p in s] for name, s in samples.items()}
    print(f"sweep of 8 students, {epochs} epochs each ({sys.platform}, {torch.get_num_threads()} threads in the "
          f"driver); {args.repeats} repeats, median (min-max)")
    for name in runs:
        print(f"  {name}: wall {spread(wall[name], '.1f')} s, CPU {spread(cpu[name], '.1f')} s")
    one, two, pool = "Ray, 1 worker", "Ray, 2 workers", "local pool, 2 workers"
    print(f"  Ray throughput 2 workers / 1 worker, wall: {spread(ratios(wall[one], wall[two]))}x (goal >= 1.7); "
          f"CPU 2 / 1: {spread(ratios(cpu[two], cpu[one]))}x (1.00 = no cost of the second worker); "
          f"critical-path CPU 1 / 2: {spread(ratios(path[one], path[two]))}x (the wall ratio with a core per process)")
    print(f"  Ray engine / local pool (2 workers each), wall: {spread(ratios(wall[two], wall[pool]))}x (goal <= 1.15); "
          f"CPU: {spread(ratios(cpu[two], cpu[pool]))}x")


if __name__ == "__main__":
    main()
