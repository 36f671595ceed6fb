"""Sweep engines on one small preset (8 students), each run in a fresh run directory.

- throughput of the Ray engine with 2 workers over 1 worker (goal >= 1.7);
- wall time of the Ray engine over the local pool, both with 2 workers (goal <= 1.15).

A Ray cluster exists before a sweep starts, so ``ray.init`` is outside the timings; starting the
worker processes (and their imports) is inside, as it is for the local pool. Each unit trains
on one thread. Needs Ray (``pip install 'pfdist[ray]'``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import ray

from pfdist.experiments import Preset, Scaling, Student, run_preset
from pfdist.experiments.presets import MIXTURE_TEACHER
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

TRAIN = TrainConfig(batch_size=128, lr=2e-3, lr_schedule="onecycle", epochs=20, epoch_images=2560, checkpoint_every=10)


def preset() -> Preset:
    students = tuple(Student(f"w{w}", {"arch": "mlp", "width": w, "depth": 2, "sigma_data": 1.0}) for w in (64, 128))
    return Preset(name="bench", teacher=MIXTURE_TEACHER,
                  eval=EvalConfig(num_samples=256, test_samples=256, loss_repeats=1, batch_size=256),
                  scaling=Scaling((8, 32, 128, 512), students, TRAIN))


def timed(engine: str, options: dict, workers: int | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_preset(preset(), Path(tmp), engine=engine, engine_options=options, workers=workers,
                             show_progress=False)
        wall = time.perf_counter() - t0
    assert summary["ran"] == 8, summary
    return wall


def ray_run(num_cpus: int) -> float:
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        return timed("ray", {"cpus_per_unit": 1})
    finally:
        ray.shutdown()


def main() -> None:
    import torch

    torch.set_num_threads(2)  # the local pool gives each of its 2 workers 2 // 2 = 1 thread
    local = timed("local", {}, workers=2)
    one, two = ray_run(1), ray_run(2)
    print(f"sweep of 8 students ({sys.platform}, {torch.get_num_threads()} threads in the driver)")
    print(f"  local pool, 2 workers {local:.1f} s; Ray, 1 worker {one:.1f} s; Ray, 2 workers {two:.1f} s")
    print(f"  Ray throughput 2 workers / 1 worker: {one / two:.2f}x (goal >= 1.7)")
    print(f"  Ray engine / local pool (2 workers each): {two / local:.2f}x (goal <= 1.15)")


if __name__ == "__main__":
    main()
