"""One prepared GPU check (about 5 minutes on one GPU; ``--tiny`` runs on a CPU in seconds).

1. Training throughput of the paper's students (EDM's DDPM++ SongUNet, CIFAR-10 configuration,
   at 32x32) for model_channels 16 ... 128: images/s of ``pfdist.training.train_step`` (batch
   128, Adam, EMA) in float32 and in bf16 autocast with channels-last, and the peak memory.
2. PFD throughput for an EDM CIFAR-size network (model_channels 128, 55.7 M parameters, random
   weights, built with pfdist's own nets): seeds/s of ``pfdist.pfd`` between two such networks
   (EDM's Heun, 18 steps = 35 evaluations per map), float32 and bf16, and the peak memory.
3. What bf16 costs in accuracy: the same PFD in float32 and bf16 on the same seeds, and the RMS
   difference of one network's bf16 map from its float32 map (relative to the map's RMS).

``--compile`` adds torch.compile to the bf16 rows (a one-off compilation of each shape: slower
start, then faster steps). Prints a table; ``--out FILE`` writes the numbers as JSON.

    python benchmarks/gpu_check.py [--device cuda] [--compile] [--out gpu_check.json]
    python benchmarks/gpu_check.py --tiny   # CPU, seconds: checks that the script runs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import torch

import pfdist
from pfdist.accel import Accel, accelerate
from pfdist.experiments.presets import ddpmpp
from pfdist.nets import build_network, count_parameters
from pfdist.training import TrainConfig, make_state, train_step


@dataclass(frozen=True)
class Scale:
    shape: tuple[int, int, int]
    widths: tuple[int, ...]
    teacher_width: int
    net_changes: dict
    train_batch: int
    seconds: float  # least time of one throughput measurement
    pfd_seeds: int
    pfd_batch: int
    steps: int
    compare_seeds: int


FULL = Scale((3, 32, 32), (16, 32, 64, 128), 128, {}, 128, 8.0, 1024, 256, 18, 256)
TINY = Scale((3, 8, 8), (4, 8), 8, {"channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4]}, 8, 0.2, 8, 4,
             3, 4)


def net_config(width: int, scale: Scale) -> dict:
    return {**ddpmpp(width).net, **scale.net_changes, "shape": list(scale.shape), "dropout": 0.0}


def random_network(width: int, scale: Scale, seed: int, device: torch.device) -> torch.nn.Module:
    """pfdist's DDPM++ with random weights; EDM's zero-initialised layers drawn too, so that the
    network's output depends on its input (as a trained one's does)."""
    net = build_network(net_config(width, scale), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return net.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_rate(width: int, accel: Accel, scale: Scale, device: torch.device) -> dict:
    """Images/s of train_step for the DDPM++ of ``width`` (after 3 warm-up steps)."""
    reset_peak(device)
    config = TrainConfig(batch_size=scale.train_batch, epochs=1, **accel.to_dict())
    n = 4 * scale.train_batch
    state = make_state(build_network(net_config(width, scale), seed=config.init_seed), config, n, device)
    data = torch.randn(n, *scale.shape, generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(3):
        train_step(state, data, config, total_steps=10**6)
    sync(device)
    steps, t0 = 0, time.perf_counter()
    while True:
        loss = train_step(state, data, config, total_steps=10**6)
        steps += 1
        if steps % 5 == 0:
            sync(device)
            if time.perf_counter() - t0 >= scale.seconds:
                break
    wall = time.perf_counter() - t0
    assert math.isfinite(float(loss)), f"non-finite loss at width {width}"
    return {"width": width, "params": count_parameters(state.net), "images_per_s": steps * scale.train_batch / wall,
            "peak_mib": peak_mib(device)}


def pfd_rate(a: torch.nn.Module, b: torch.nn.Module, accel: Accel, scale: Scale, device: torch.device) -> dict:
    """Seeds/s of pfd(a, b) (after one warm-up batch) and the result."""
    fa, fb = accelerate(a, accel), accelerate(b, accel)
    kw = dict(shape=scale.shape, steps=scale.steps, batch_size=scale.pfd_batch, device=device)
    pfdist.pfd(fa, fb, num_samples=scale.pfd_batch, **kw)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    result = pfdist.pfd(fa, fb, num_samples=scale.pfd_seeds, **kw)
    sync(device)
    wall = time.perf_counter() - t0
    return {"seeds_per_s": scale.pfd_seeds / wall, "pfd": result.value, "nfe": result.nfe, "peak_mib": peak_mib(device)}


def bf16_error(a: torch.nn.Module, b: torch.nn.Module, scale: Scale, device: torch.device) -> dict:
    """PFD in float32 and bf16 on the same seeds; RMS of (bf16 map - float32 map) / RMS of the map."""
    kw = dict(shape=scale.shape, num_samples=scale.compare_seeds, steps=scale.steps, batch_size=scale.pfd_batch,
              device=device)
    bf16 = Accel(autocast="bf16")
    ref, low = pfdist.pfd(a, b, **kw), pfdist.pfd(accelerate(a, bf16), accelerate(b, bf16), **kw)
    flow = pfdist.FlowSettings(steps=scale.steps)
    maps = [pfdist.flow_outputs(net, shape=scale.shape, num_samples=scale.compare_seeds, flow=flow,
                                batch_size=scale.pfd_batch, device=device).values for net in (a, accelerate(a, bf16))]
    rms = maps[0].square().mean().sqrt()
    return {"pfd_fp32": ref.value, "pfd_bf16": low.value, "pfd_rel_diff": abs(low.value - ref.value) / ref.value,
            "map_rel_rms_diff": float((maps[1] - maps[0]).square().mean().sqrt() / rms)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and counts: a CPU smoke run in seconds")
    parser.add_argument("--compile", action="store_true", help="torch.compile the bf16 rows too")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    from pfdist import checks

    device = checks.device("--device", args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scale = TINY if args.tiny else FULL
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 rows are float32
        torch.backends.cudnn.allow_tf32 = False
    modes = {"fp32": Accel(), "bf16+channels_last": Accel(autocast="bf16", channels_last=True)}
    if args.compile:
        modes["bf16+channels_last+compile"] = Accel(autocast="bf16", channels_last=True, compile=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    out: dict = {"device": name, "torch": torch.__version__, "tiny": args.tiny, "train": [], "pfd": {}}
    print(f"{name}, torch {torch.__version__}{' (tiny)' if args.tiny else ''}")

    print(f"training, batch {scale.train_batch}, {scale.shape}: images/s (peak MiB)")
    for width in scale.widths:
        row = {mode: train_rate(width, accel, scale, device) for mode, accel in modes.items()}
        out["train"].append(row)
        params = next(iter(row.values()))["params"]
        cells = "  ".join(f"{m} {r['images_per_s']:8.1f}" + (f" ({r['peak_mib']:.0f})" if r["peak_mib"] else "")
                          for m, r in row.items())
        print(f"  width {width:4d} ({params / 1e6:6.2f} M): {cells}", flush=True)

    a, b = (random_network(scale.teacher_width, scale, seed, device) for seed in (0, 1))
    print(f"PFD of two width-{scale.teacher_width} networks ({count_parameters(a) / 1e6:.2f} M), "
          f"{scale.pfd_seeds} seeds, batch {scale.pfd_batch}, Heun {scale.steps} steps:")
    for mode, accel in modes.items():
        r = out["pfd"][mode] = pfd_rate(a, b, accel, scale, device)
        print(f"  {mode}: {r['seeds_per_s']:.1f} seeds/s" + (f", peak {r['peak_mib']:.0f} MiB" if r["peak_mib"] else "")
              + f", PFD {r['pfd']:.4f}", flush=True)
    e = out["bf16_error"] = bf16_error(a, b, scale, device)
    print(f"bf16 vs fp32 on {scale.compare_seeds} seeds: PFD {e['pfd_fp32']:.5f} vs {e['pfd_bf16']:.5f} "
          f"(relative difference {e['pfd_rel_diff']:.2e}); map RMS difference {e['map_rel_rms_diff']:.2e} of the map's RMS")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
