"""U-Net students of the digits presets on CPU: students per CPU-hour and trainer overhead.

For each digits student width (SongUNet on 1x8x8, channel_mult [1, 2], 2 blocks), in one run:

- ratio = median ``pfdist.training.train_step`` / median bare forward + backward + Adam step
  (the two alternate, so machine load hits both alike). Goal: ratio <= 1.2.
- students per CPU-hour = 3600 / (CPU seconds of one student of the ``digits`` preset: its
  training steps at the measured step time plus its evaluation map, ``num_samples`` seeds x
  35 denoiser calls, at the measured forward time), with ``--threads`` threads (default 1).
  Times are process CPU time, so a loaded machine slows the run but not the numbers (much).
- with ``--vmap K`` (stretch): K same-architecture students trained as one batched model
  (``torch.func.stack_module_state`` + ``vmap`` of the loss gradient, one Adam over the stacked
  weights), throughput ratio = (K bare steps) / (one batched step).

    .venv/bin/python benchmarks/bench_unet_students.py [--seconds 6] [--widths 4 8 12 24] [--vmap 4]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from bench_train_step import bare_step
from pfdist.experiments.digits_presets import digits, unet
from pfdist.nets import build_network, count_parameters
from pfdist.training import make_optimizer, make_state, train_step

SHAPE = [1, 8, 8]


def alternate(fns: dict, seconds: float, warmup: int = 3, min_pairs: int = 10) -> dict[str, float]:
    """Median CPU seconds (process time, all threads) of each function, timed alternately for about
    ``seconds`` of wall time. CPU time, not wall time, so that other work on the machine does not count."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    t_start, i = time.perf_counter(), 0
    names = list(fns)
    while i < warmup + min_pairs or time.perf_counter() - t_start < seconds:
        for name in names if i % 2 else names[::-1]:
            t0 = time.process_time()
            fns[name]()
            if i >= warmup:
                times[name].append(time.process_time() - t0)
        i += 1
    return {k: statistics.median(v) for k, v in times.items()}


def bench_width(c: int, seconds: float) -> dict[str, float]:
    preset = digits()
    config = preset.scaling.train
    net_config = {**unet(c).net, "shape": SHAPE}
    data = torch.rand(1797, *SHAPE) * 2 - 1
    state = make_state(build_network(net_config, seed=config.init_seed), config, data.shape[0], data.device)
    net = copy.deepcopy(state.net)
    optimizer = make_optimizer(net, config)
    y = data[: config.batch_size]
    ev = preset.eval
    x = torch.randn(min(ev.batch_size, ev.num_samples), *SHAPE)

    def forward():
        with torch.no_grad():
            state.ema(x, torch.full((x.shape[0],), 1.0))

    med = alternate({"train_step": lambda: train_step(state, data, config, 10**6),
                     "bare": lambda: bare_step(net, optimizer, y), "forward": forward}, seconds)
    steps = config.epochs * config.steps_per_epoch(1797)
    nfe = ev.flow.nfe
    student_s = steps * med["train_step"] + nfe * med["forward"] * ev.num_samples / x.shape[0]
    return {"params": count_parameters(net), **med, "ratio": med["train_step"] / med["bare"], "steps": steps,
            "student_s": student_s, "students_per_cpu_hour": 3600 / student_s}


def bench_vmap(c: int, k: int, seconds: float) -> dict[str, float]:
    """K students as one batched model vs K bare steps one after another."""
    net_config = {**unet(c).net, "shape": SHAPE}
    nets = [build_network(net_config, seed=i) for i in range(k)]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    stacked = list(params.values())
    optimizer = torch.optim.Adam(stacked, lr=1e-4, foreach=True)
    sigma_data, batch = nets[0].sigma_data, digits().scaling.train.batch_size
    Y = torch.rand(k, batch, *SHAPE) * 2 - 1

    def loss(p, b, y, sigma, n):
        denoised = functional_call(base, (p, b), (y + sigma.reshape(-1, 1, 1, 1) * n, sigma))
        weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
        return (weight * (denoised - y).square().reshape(y.shape[0], -1).mean(1)).mean()

    grad_all = vmap(grad(loss), in_dims=(0, 0, 0, 0, 0), randomness="different")

    def batched_step():
        sigma = (torch.randn(k, batch) * 1.2 - 1.2).exp()
        grads = grad_all(params, buffers, Y, sigma, torch.randn_like(Y))
        for p, name in zip(stacked, params):
            p.grad = grads[name]
        optimizer.step()

    singles = [(n, make_optimizer(n, digits().scaling.train)) for n in copy.deepcopy(nets)]

    def one_at_a_time():
        for i, (n, opt) in enumerate(singles):
            bare_step(n, opt, Y[i])

    med = alternate({"batched": batched_step, "one_at_a_time": one_at_a_time}, seconds)
    return {**med, "throughput_ratio": med["one_at_a_time"] / med["batched"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timing budget per width")
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8, 12, 24])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vmap", type=int, default=0, help="K students batched with vmap (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads}; student = the digits preset's scaling student (training + evaluation map)")
    for c in args.widths:
        r = bench_width(c, args.seconds)
        print(f"unet-{c:<3d} params={r['params']:>8,d} train_step={r['train_step'] * 1e3:7.2f} ms "
              f"bare={r['bare'] * 1e3:7.2f} ms (CPU) ratio={r['ratio']:.3f}  student={r['student_s']:7.1f} CPU-s "
              f"({r['steps']} steps) -> {r['students_per_cpu_hour']:6.1f} students/CPU-hour", flush=True)
    if args.vmap:
        for c in args.widths:
            r = bench_vmap(c, args.vmap, args.seconds)
            print(f"unet-{c:<3d} vmap K={args.vmap}: batched={r['batched'] * 1e3:8.2f} ms "
                  f"one-at-a-time={r['one_at_a_time'] * 1e3:8.2f} ms throughput ratio={r['throughput_ratio']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
