"""Overhead of the trainer's step over a bare forward + backward + Adam step.

ratio = median time of ``pfdist.training.train_step`` (batch indices, seeded noise, EDM loss,
backward, scheduled lr, Adam, EMA) / median time of a bare step (the same EDM loss drawn from
the global RNG on a fixed batch, backward, Adam) for the same network and batch size. The two
are timed alternately in one process so machine load hits both alike. Goal: ratio <= 1.2.

    .venv/bin/python benchmarks/bench_train_step.py [--seconds 8] [--arch unet mlp tiny]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from pfdist.nets import build_network, count_parameters
from pfdist.training import TrainConfig, make_optimizer, make_state, train_step

CASES = {
    "unet": ({"arch": "songunet", "shape": [3, 32, 32], "model_channels": 16, "channel_mult": [1, 2, 2],
              "num_blocks": 1, "attn_resolutions": [16], "sigma_data": 0.5}, 16),
    "mlp": ({"arch": "mlp", "shape": [16], "width": 256, "depth": 3, "sigma_data": 1.0}, 128),
    # Worst case for per-step Python overhead: a network that costs almost nothing.
    "tiny": ({"arch": "mlp", "shape": [2], "width": 64, "depth": 2, "sigma_data": 1.0}, 64),
}


def bare_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, y: torch.Tensor) -> torch.Tensor:
    sigma = (torch.randn(y.shape[0]) * 1.2 - 1.2).exp()
    weight = (sigma**2 + net.sigma_data**2) / (sigma * net.sigma_data) ** 2
    s = sigma.reshape(-1, *([1] * (y.ndim - 1)))
    denoised = net(y + s * torch.randn_like(y), sigma)
    loss = (weight * (denoised - y).square().reshape(y.shape[0], -1).mean(1)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def bench(arch: str, seconds: float, warmup: int = 5) -> float:
    """Time both steps alternately for about ``seconds`` (at least 20 pairs); return the ratio."""
    net_config, batch_size = CASES[arch]
    data = torch.randn(1024, *net_config["shape"])
    config = TrainConfig(batch_size=batch_size, lr=1e-4, epochs=1, ema_halflife_images=10_000)
    state = make_state(build_network(net_config, seed=config.init_seed), config, data.shape[0], data.device)
    net = copy.deepcopy(state.net)
    optimizer = make_optimizer(net, config)
    y = data[:batch_size]
    steps = {"train_step": lambda: train_step(state, data, config, 10**6),
             "bare": lambda: bare_step(net, optimizer, y)}
    times: dict[str, list[float]] = {"train_step": [], "bare": []}
    t_start, i = time.perf_counter(), 0
    while i < warmup + 20 or time.perf_counter() - t_start < seconds:
        for name in ("train_step", "bare") if i % 2 else ("bare", "train_step"):
            t0 = time.perf_counter()
            steps[name]()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
        i += 1
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["train_step"] / med["bare"]
    print(f"{arch:5s} params={count_parameters(net):>9,d} batch={batch_size:4d} "
          f"train_step={med['train_step'] * 1e3:8.2f} ms  bare={med['bare'] * 1e3:8.2f} ms  "
          f"ratio={ratio:.3f}  (threads={torch.get_num_threads()}, pairs={i - warmup})")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timing budget per case")
    parser.add_argument("--arch", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    for arch in args.arch:
        bench(arch, args.seconds)


if __name__ == "__main__":
    main()
