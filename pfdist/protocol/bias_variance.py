"""Bias-variance decomposition of E_gen over students on independent datasets (docs/method.md, §5).

With K students and the 1/K mean m(x_T) = mean_k Psi(Phi_k(x_T)), the plug-in terms

    E_bias^2 = E_x |Psi(Phi_data(x)) - m(x)|^2,   E_var = mean_k E_x |Psi(Phi_k(x)) - m(x)|^2

satisfy mean_k E_gen_k^2 = E_bias^2 + E_var exactly (the cross term sums to zero over k), but
with few students they are biased: E[plug-in E_var] = (K-1)/K Var and E[plug-in E_bias^2] =
Bias^2 + Var/K. The unbiased estimates are

    E_var_unbiased = K/(K-1) E_var,      E_bias^2_unbiased = E_bias^2 - E_var_unbiased / K,

which obey the same identity (their sum is the plug-in sum). E_bias^2_unbiased can be negative
when the bias is small against the variance; ``e_bias_unbiased`` is then 0. Accumulated in float64.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from pfdist import checks
from pfdist import distributed
from pfdist.atomic import atomic_write_json
from pfdist.errors import PFDistError
from pfdist.flows import flow_outputs
from pfdist.nets import NetSpec
from pfdist.ode import data_shape
from pfdist.protocol.evaluate import EvalConfig
from pfdist.protocol.student import load_student, student_net, teacher_map, teacher_student
from pfdist.descriptors import Descriptor, check_descriptor, describe, identity
from pfdist.training import TrainConfig, derive_seed

SEED_MODES = ("shared", "per_student")


def student_train_config(train_config: TrainConfig, index: int, seeds: str = "shared") -> TrainConfig:
    """Training settings of student ``index``: the same initialisation and noise seeds for every
    student ("shared": E_var is the variance over datasets alone) or its own ("per_student": data
    plus training variance). Student 0 keeps ``train_config.seed`` either way."""
    if seeds not in SEED_MODES:
        raise PFDistError(f"seeds must be one of {SEED_MODES} (got {seeds!r}).")
    if seeds == "shared" or index == 0:
        return train_config
    return replace(train_config, seed=derive_seed(train_config.seed, "student", index))


@dataclass(frozen=True)
class BiasVariance:
    e_bias: float  # sqrt of the squared bias (PFD units)
    e_var: float  # squared units, as in the paper
    e_gen_sq: list[float]  # E_gen_k^2 per student
    mean_e_gen_sq: float
    identity_gap: float  # mean_e_gen_sq - (e_bias^2 + e_var)
    k: int
    num_samples: int
    e_bias_sq_unbiased: float  # e_bias^2 - e_var_unbiased / k (may be < 0)
    e_var_unbiased: float  # e_var * k / (k - 1)

    @property
    def e_bias_unbiased(self) -> float:
        return math.sqrt(max(self.e_bias_sq_unbiased, 0.0))

    def to_dict(self) -> dict:
        return {**asdict(self), "e_bias_unbiased": self.e_bias_unbiased}


def decompose(teacher: Tensor, students: Sequence[Tensor], *, batch_size: int = 1024) -> BiasVariance:
    """teacher: (M, *feature), students: K tensors (M, *feature), same seeds -> BiasVariance."""
    k = len(students)
    if k < 2:
        raise PFDistError(f"bias-variance needs at least 2 students (got {k}).")
    if any(s.shape != teacher.shape for s in students):
        raise PFDistError("every student's outputs must have the teacher's shape (same seeds, same descriptor).")
    m = teacher.shape[0]
    bias_sq, var, gen_sq = 0.0, 0.0, torch.zeros(k, dtype=torch.float64)
    for i in range(0, m, batch_size):
        t = teacher[i : i + batch_size].double().flatten(1)
        s = torch.stack([x[i : i + batch_size].double().flatten(1) for x in students])  # (K, b, F)
        mean = s.mean(0)
        bias_sq += float(((t - mean) ** 2).sum())
        var += float(((s - mean) ** 2).sum()) / k
        gen_sq += ((s - t) ** 2).sum((1, 2))
    bias_sq, var, gen_sq = bias_sq / m, var / m, gen_sq / m
    mean_gen_sq = float(gen_sq.mean())
    var_u = var * k / (k - 1)
    return BiasVariance(math.sqrt(bias_sq), var, gen_sq.tolist(), mean_gen_sq, mean_gen_sq - (bias_sq + var), k, m,
                        bias_sq - var_u / k, var_u)


def bias_variance(
    teacher: Callable,
    n: int,
    net_config: NetSpec | dict,
    train_config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    k: int = 4,
    shape: Sequence[int] | None = None,
    eval_config: EvalConfig = EvalConfig(),
    descriptor: Descriptor = identity,
    device: Any = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    seeds: str = "shared",
) -> dict[str, Any]:
    """Train K students on independent datasets (indices 0..K-1) and decompose their E_gen.

    ``seeds``: "shared" (default) trains every student from the same initialisation and noise
    seeds, so E_var is the variance due to the data alone; "per_student" gives each its own
    (data plus training variance). Each student is an independent unit in ``out_dir/student-<i>``
    (resumable); the report is ``out_dir/bias_variance.json``.
    """
    checks.size("k", k, checks.MAX_STUDENTS, checks.STUDENTS_WHY, lo=2)
    if seeds not in SEED_MODES:
        raise PFDistError(f"seeds must be one of {SEED_MODES} (got {seeds!r}).")
    shape = tuple(shape or data_shape(teacher) or ())
    if not shape:
        raise PFDistError("pass shape=...: the teacher does not say its data shape.")
    net = student_net(net_config, shape)
    desc = check_descriptor(descriptor)
    t_out = teacher_map(teacher, shape, eval_config, device=device, cache_dir=cache_dir)
    records, outputs = [], []
    for i in range(k):
        sub = Path(out_dir) / f"student-{i}"
        rec = teacher_student(teacher, n, net, student_train_config(train_config, i, seeds), sub, shape=shape, eval_config=eval_config,
                              dataset_index=i, descriptor=desc, teacher_outputs=t_out, device=device,
                              cache_dir=cache_dir, progress=progress)
        student = load_student(sub, device=device)
        s_out = flow_outputs(student, shape=shape, num_samples=eval_config.num_samples, seed=eval_config.seed,
                             flow=eval_config.flow, batch_size=eval_config.batch_size, device=device,
                             cache_dir=cache_dir)
        records.append(rec)
        outputs.append(describe(s_out.values, desc, eval_config.batch_size))
    bv = decompose(describe(t_out.values, desc, eval_config.batch_size), outputs)
    report = {"n": n, "params": records[0]["params"], "net_config": records[0]["net_config"], "seeds": seeds,
              **bv.to_dict(),
              "e_gen": [r["e_gen"]["pfd"] for r in records], "students": [f"student-{i}" for i in range(k)]}
    if distributed.is_main():  # under torchrun every rank has the report; rank 0 writes it
        atomic_write_json(Path(out_dir) / "bias_variance.json", report, checksum=True)
    return report
