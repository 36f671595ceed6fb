"""E_gen, E_mem, losses and the memorization ratio of one student (docs/method.md, §3)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
from torch import Tensor

from pfdist import checks
from pfdist import metrics
from pfdist.accel import Accel, accelerate, config_accel
from pfdist.denoisers import EmpiricalDenoiser
from pfdist.descriptors import Descriptor, NamedDescriptors, check_spaces, describe, identity
from pfdist.errors import PFDistError
from pfdist.flows import FlowOutputs, FlowSettings, flow_outputs
from pfdist.distance import PFDResult, squared_distances
from pfdist.protocol.data import EVAL_SEED
from pfdist.solver_error import ERROR_SEEDS, doubled_grid, richardson
from pfdist.training import edm_loss

COPY_RATIO = 1.0 / 3.0
FLOW_FIELDS = tuple(FlowSettings.__dataclass_fields__)  # steps, solver, sigma_min, sigma_max, rho


@dataclass(frozen=True)
class EvalConfig:
    """Shared evaluation settings: seeds, the flow settings of every map, and the loss estimates.

    ``flow``: the PF-ODE solver and grid (:class:`FlowSettings`, EDM's by default). In a dict
    (:meth:`from_dict`, :meth:`to_dict`, a preset's JSON) its five fields sit at the eval level
    (``{"steps": 35, "solver": "euler", ...}``), so a config's key does not depend on how it is held.

    ``error_estimate``: also estimate the discretisation error of the student's, the teacher's and
    the copier's maps (:mod:`pfdist.solver_error`), stored as ``solver_error`` beside each
    E_gen / E_mem interval.

    Validated when constructed: counts are integers in range, ``flow`` is a :class:`FlowSettings`.
    """

    num_samples: int = 10_000
    seed: int = EVAL_SEED
    flow: FlowSettings = FlowSettings()
    batch_size: int = 256
    test_samples: int = 2048
    loss_repeats: int = 4
    loss_seed: int = 12345
    error_estimate: bool = False
    autocast: str | None = None  # how the student's network runs (pfdist.accel.Accel); the ODE stays float32
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self):
        if not isinstance(self.error_estimate, bool):
            raise PFDistError(f"EvalConfig.error_estimate must be true or false (got {self.error_estimate!r}).")
        if not isinstance(self.flow, FlowSettings):
            raise PFDistError(f"EvalConfig.flow must be a FlowSettings (got {type(self.flow).__name__}); in a dict "
                              f"its fields {list(FLOW_FIELDS)} sit at the eval level (EvalConfig.from_dict).")
        for name, lo in (("num_samples", 2), ("seed", 0), ("batch_size", 1), ("test_samples", 1),
                         ("loss_repeats", 1), ("loss_seed", 0)):
            checks.integer(f"EvalConfig.{name}", getattr(self, name), lo=lo)
        for name in ("num_samples", "test_samples"):
            checks.size(f"EvalConfig.{name}", getattr(self, name), checks.MAX_SEEDS,
                        "each seed runs the ODE and its output is kept")
        checks.size("EvalConfig test_samples x loss_repeats", self.test_samples * self.loss_repeats, checks.MAX_SEEDS,
                    "each is one network evaluation of the test loss")
        self.accel  # validates autocast, channels_last, compile

    @staticmethod
    def keys() -> tuple[str, ...]:
        """The keys of its dict form: its own fields, with ``flow`` given as FlowSettings' five."""
        own = [f.name for f in fields(EvalConfig)]
        at = own.index("flow")
        return (*own[:at], *FLOW_FIELDS, *own[at + 1:])

    @classmethod
    def from_dict(cls, d: dict) -> "EvalConfig":
        """From the dict form (:meth:`to_dict`, a preset's ``eval``): missing keys take their defaults."""
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise PFDistError(f"unknown EvalConfig keys {unknown}; valid: {sorted(cls.keys())}.")
        flow = FlowSettings.from_dict({k: d[k] for k in FLOW_FIELDS if k in d})
        return cls(**{k: v for k, v in d.items() if k not in FLOW_FIELDS}, flow=flow)

    def pfd_kwargs(self) -> dict:
        return dict(num_samples=self.num_samples, seed=self.seed, flow=self.flow, batch_size=self.batch_size)

    @property
    def accel(self) -> Accel:
        return config_accel(self)

    def to_dict(self, *, full: bool = False) -> dict:
        """The flat dict form (``flow``'s fields at the eval level). Fields added after runs existed
        (``error_estimate``, the accel fields) are left out while off, so older runs' keys still
        match, unless ``full``."""
        d = {k: getattr(self.flow if k in FLOW_FIELDS else self, k) for k in self.keys()}
        if full:
            return d
        if not self.error_estimate:
            del d["error_estimate"]
        for name, default in Accel().to_dict().items():
            if d[name] == default:
                del d[name]
        return d


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; scipy's binomtest
    ``method="wilson"``), in closed form: no scipy import in the processes that train."""
    if n == 0:
        return (0.0, 1.0)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p, n = successes / n, float(n)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def memorization_ratio(samples: Tensor, train_data: Tensor) -> dict:
    """The copy share: Gu et al.'s rule (:func:`pfdist.metrics.memorization_ratio`, a sample copies
    when its nearest training point is closer than 1/3 of the second nearest) on pixels, 8-bit
    images for image data (:func:`pfdist.metrics.copy_features`), whatever descriptor space the
    errors are measured in; with its Wilson interval. With one training point every sample is its
    copy's."""
    if train_data.shape[0] >= 2:
        copies = int(metrics.memorization_ratio(metrics.copy_features(samples), metrics.copy_features(train_data),
                                                threshold=COPY_RATIO).memorized.sum())
    else:
        copies = samples.shape[0]
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


def space_errors(student: Tensor, teacher: Tensor, copier: Tensor, train_data: Tensor, descriptor: Descriptor, *,
                 seed: int, nfe: tuple[float, float, float] = (math.nan,) * 3, batch_size: int = 256,
                 doubled: tuple[tuple[Tensor, Tensor, str], ...] | None = None) -> dict[str, Any]:
    """E_gen, E_mem and the copy share of one student in one descriptor space (the copy share is
    Gu et al.'s pixel rule in every space: :func:`memorization_ratio`).

    student, teacher, copier: pixel outputs (M, *shape) of the student's, the teacher's and the
    exact empirical flow of ``train_data`` (N, *shape), all on seeds seed..seed+M-1; ``nfe``:
    the denoiser calls per sample of those three maps (recorded in the results). ``doubled``:
    for the same three maps, (outputs on the grid, outputs with doubled steps, solver) on the
    first seeds, from which each E's ``solver_error`` is estimated (:func:`pfdist.solver_error.richardson`).
    """
    s, t, c = (describe(v, descriptor, batch_size) for v in (student, teacher, copier))
    err = [None] * 3 if doubled is None else [
        richardson(describe(g, descriptor, batch_size), describe(f, descriptor, batch_size), solver)
        for g, f, solver in doubled]
    return {
        "e_gen": PFDResult.from_per_sample(squared_distances(s, t), seed=seed, nfe_a=nfe[0], nfe_b=nfe[1],
                                           solver_error_a=err[0], solver_error_b=err[1]).to_dict(),
        "e_mem": PFDResult.from_per_sample(squared_distances(s, c), seed=seed, nfe_a=nfe[0], nfe_b=nfe[2],
                                           solver_error_a=err[0], solver_error_b=err[2]).to_dict(),
        "mem_ratio": memorization_ratio(student.cpu(), train_data.cpu()),  # pixels, whatever the space
    }


def doubled_outputs(model: Any, outputs: FlowOutputs, config: EvalConfig, device: Any) -> tuple[Tensor, Tensor, str]:
    """A map's pixel outputs on its grid and with doubled steps, on the first seeds of the evaluation."""
    n = min(config.num_samples, ERROR_SEEDS)

    def run(flow: FlowSettings) -> Tensor:
        return flow_outputs(model, shape=outputs.shape, num_samples=n, seed=config.seed, flow=flow,
                            batch_size=config.batch_size, device=device).values

    return run(outputs.flow), run(doubled_grid(outputs.flow)), outputs.flow.solver


def copier_outputs(train_data: Tensor, config: EvalConfig, *, device: Any = None, cache_dir: Any = None,
                   progress: Callable[[int], None] | None = None) -> FlowOutputs:
    """The exact empirical flow of ``train_data`` on the evaluation seeds: the ideal copier's map.
    ``progress(n)`` gets samples done."""
    return flow_outputs(EmpiricalDenoiser(train_data.to(device)), shape=tuple(train_data.shape[1:]),
                        num_samples=config.num_samples, seed=config.seed, flow=config.flow,
                        batch_size=config.batch_size, device=device, cache_dir=cache_dir, progress=progress)


def evaluate_student(
    student: torch.nn.Module,
    *,
    teacher_outputs: FlowOutputs,
    train_data: Tensor,
    test_data: Tensor,
    config: EvalConfig,
    descriptor: Descriptor | NamedDescriptors = identity,
    device: Any = None,
    cache_dir: Any = None,
    copier: FlowOutputs | None = None,
    teacher: Callable | None = None,
) -> dict[str, Any]:
    """E_gen = PFD(student, teacher), E_mem = PFD(student, empirical of train_data), losses, copy share.

    ``teacher_outputs`` are the teacher's pixel-space outputs on the evaluation seeds; the
    student's map is computed once and used for every comparison. ``descriptor`` may name several
    spaces (:class:`NamedDescriptors`): each gets its errors under ``spaces[name]``, and the
    primary one's are also at the top level. ``copier`` (the empirical flow of train_data on the
    evaluation seeds) is computed (and cached in ``cache_dir``) when not given. ``teacher`` (the
    denoiser behind ``teacher_outputs``) is needed when ``config.error_estimate`` is on.
    """
    if config.error_estimate and teacher is None:
        raise PFDistError("EvalConfig.error_estimate needs the teacher denoiser (teacher=...) to rerun its map.")
    shape = teacher_outputs.shape
    device = torch.device(device) if device is not None else next(student.parameters()).device
    student = accelerate(student, config.accel)
    student_outputs = flow_outputs(student, shape=shape, num_samples=config.num_samples, seed=config.seed,
                                   flow=config.flow, batch_size=config.batch_size, device=device,
                                   cache_dir=cache_dir)
    if copier is None:
        copier = copier_outputs(train_data, config, device=device, cache_dir=cache_dir)
    named = NamedDescriptors.of(check_spaces(descriptor))
    refined = None
    if config.error_estimate:
        maps = ((student, student_outputs), (teacher, teacher_outputs),
                (EmpiricalDenoiser(train_data.to(device)), copier))
        refined = tuple(doubled_outputs(m, outs, config, device) for m, outs in maps)
    spaces = {name: space_errors(student_outputs.values, teacher_outputs.values, copier.values, train_data, psi,
                                 seed=config.seed, nfe=(student_outputs.nfe, teacher_outputs.nfe, copier.nfe),
                                 batch_size=config.batch_size, doubled=refined)
              for name, psi in named.items()}
    sigma_data = float(getattr(student, "sigma_data", 0.5))
    losses = {
        name: mean_loss(student, data.to(device), sigma_data=sigma_data, seed=config.loss_seed, repeats=config.loss_repeats)
        for name, data in (("train_loss", train_data), ("test_loss", test_data))
    }
    return {**spaces[named.primary], "descriptor": named.primary, "spaces": spaces, **losses}
