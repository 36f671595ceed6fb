"""E_gen, E_mem, losses and the memorization ratio of one student (docs/method.md, §3)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from pfdist.denoisers import EmpiricalDenoiser, nearest_neighbors
from pfdist.descriptors import Descriptor, identity
from pfdist.errors import PFDistError
from pfdist.flows import FlowOutputs, FlowSettings, flow_outputs
from pfdist.metric import pfd
from pfdist.protocol.data import EVAL_SEED
from pfdist.training import edm_loss

COPY_RATIO = 1.0 / 3.0


@dataclass(frozen=True)
class EvalConfig:
    """Shared evaluation settings: seeds, solver (defaults: :class:`FlowSettings`), and the loss estimates.

    Validated when constructed: counts are integers in range, the solver fields form valid
    :class:`FlowSettings`.
    """

    num_samples: int = 10_000
    seed: int = EVAL_SEED
    steps: int = FlowSettings.steps
    solver: str = FlowSettings.solver
    sigma_min: float = FlowSettings.sigma_min
    sigma_max: float = FlowSettings.sigma_max
    rho: float = FlowSettings.rho
    batch_size: int = 256
    test_samples: int = 2048
    loss_repeats: int = 4
    loss_seed: int = 12345

    def __post_init__(self):
        for name, lo in (("num_samples", 2), ("seed", 0), ("batch_size", 1), ("test_samples", 1),
                         ("loss_repeats", 1), ("loss_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise PFDistError(f"EvalConfig.{name} must be an integer >= {lo} (got {value!r}).")
        flow = self.settings()  # validates the solver fields
        for name in ("steps", "sigma_min", "sigma_max", "rho"):
            object.__setattr__(self, name, getattr(flow, name))

    def settings(self) -> FlowSettings:
        return FlowSettings(self.steps, self.solver, self.sigma_min, self.sigma_max, self.rho)

    def pfd_kwargs(self) -> dict:
        return dict(num_samples=self.num_samples, seed=self.seed, flow=self.settings(), batch_size=self.batch_size)

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (scipy.stats.binomtest)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def memorization_ratio(samples: Tensor, train_data: Tensor) -> dict:
    """Share of samples whose nearest training point is closer than 1/3 of the second nearest."""
    dist, _ = nearest_neighbors(samples, train_data, k=2)
    d2 = dist[:, 1] if dist.shape[1] > 1 else torch.full_like(dist[:, 0], math.inf)
    copies = int((dist[:, 0] < COPY_RATIO * d2).sum())
    return {"value": copies / samples.shape[0], "ci95": list(wilson_interval(copies, samples.shape[0]))}


def mean_loss(net: Callable, data: Tensor, *, sigma_data: float, seed: int, repeats: int, batch_size: int = 1024) -> float:
    """EDM loss of ``net`` on ``data`` averaged over ``repeats`` fixed draws of (sigma, n)."""
    g = torch.Generator(device=data.device).manual_seed(seed)
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(repeats):
            for start in range(0, data.shape[0], batch_size):
                y = data[start : start + batch_size]
                total += float(edm_loss(net, y, generator=g, sigma_data=sigma_data).double().sum())
                count += y.shape[0]
    return total / count


def apply_descriptor(outputs: FlowOutputs, descriptor: Descriptor, batch_size: int = 256) -> FlowOutputs:
    """Psi of precomputed pixel outputs (same seeds); identity returns them unchanged."""
    return outputs.describe(descriptor, batch_size)


def evaluate_student(
    student: torch.nn.Module,
    *,
    teacher_outputs: FlowOutputs,
    train_data: Tensor,
    test_data: Tensor,
    config: EvalConfig,
    descriptor: Descriptor = identity,
    device: Any = None,
    cache_dir: Any = None,
) -> dict[str, Any]:
    """E_gen = PFD(student, teacher), E_mem = PFD(student, empirical of train_data), losses, copy share.

    ``teacher_outputs`` are the teacher's pixel-space outputs on the evaluation seeds; the
    student's map is computed once and used for all three comparisons.
    """
    shape = teacher_outputs.shape
    device = torch.device(device) if device is not None else next(student.parameters()).device
    student_outputs = flow_outputs(student, shape=shape, num_samples=config.num_samples, seed=config.seed,
                                   flow=config.settings(), batch_size=config.batch_size, device=device,
                                   cache_dir=cache_dir)
    s_desc = apply_descriptor(student_outputs, descriptor, config.batch_size)
    t_desc = apply_descriptor(teacher_outputs, descriptor, config.batch_size)
    kwargs = config.pfd_kwargs()
    e_gen = pfd(s_desc, t_desc, shape=shape, descriptor=descriptor, **kwargs)
    empirical = EmpiricalDenoiser(train_data.to(device))
    e_mem = pfd(s_desc, empirical, shape=shape, descriptor=descriptor, device=device, **kwargs)
    sigma_data = float(getattr(student, "sigma_data", 0.5))
    losses = {
        name: mean_loss(student, data.to(device), sigma_data=sigma_data, seed=config.loss_seed, repeats=config.loss_repeats)
        for name, data in (("train_loss", train_data), ("test_loss", test_data))
    }
    return {
        "e_gen": e_gen.to_dict(),
        "e_mem": e_mem.to_dict(),
        "mem_ratio": memorization_ratio(student_outputs.values, train_data),
        **losses,
    }
