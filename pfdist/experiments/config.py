"""Experiment configs: frozen, JSON round-trippable, hashed into run and unit identities."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from pfdist.hashing import content_hash
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig


@dataclass(frozen=True)
class Student:
    """A student family member: a label for tables and its network config (shape filled in later)."""

    label: str
    net: dict


@dataclass(frozen=True)
class Scaling:
    """Memorization -> generalization: every student size on every N (nested training sets)."""

    ns: tuple[int, ...]
    students: tuple[Student, ...]
    train: TrainConfig


@dataclass(frozen=True)
class Dynamics:
    """E_gen, E_mem and losses against epochs, for one student at N in each regime."""

    ns: tuple[int, ...]
    student: Student
    train: TrainConfig
    eval_epochs: tuple[int, ...]


@dataclass(frozen=True)
class BiasVarianceStudy:
    """K students per (N, size) on independent datasets."""

    ns: tuple[int, ...]
    students: tuple[Student, ...]
    train: TrainConfig
    k: int = 4


@dataclass(frozen=True)
class Preset:
    """Everything one ``pfdist reproduce`` run does. ``teacher`` is a spec dict or a file path."""

    name: str
    teacher: Any
    eval: EvalConfig
    scaling: Scaling | None = None
    dynamics: Dynamics | None = None
    bias_variance: BiasVarianceStudy | None = None
    workers: int = 1
    notes: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eval"] = self.eval.to_dict()
        for name in ("scaling", "dynamics", "bias_variance"):
            part = getattr(self, name)
            if part is not None:
                d[name]["train"] = part.train.to_dict()
        return d

    def key(self) -> str:
        """Identity of the science (not of how it is run: workers and notes are left out)."""
        d = self.to_dict()
        d.pop("workers")
        d.pop("notes")
        d.pop("name")
        return content_hash("preset/v1", d)

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        d = dict(d)
        d["eval"] = EvalConfig(**d["eval"])

        def students(items):
            return tuple(Student(**s) for s in items)

        if d.get("scaling"):
            s = d["scaling"]
            d["scaling"] = Scaling(tuple(s["ns"]), students(s["students"]), TrainConfig.from_dict(s["train"]))
        if d.get("dynamics"):
            s = d["dynamics"]
            d["dynamics"] = Dynamics(tuple(s["ns"]), Student(**s["student"]), TrainConfig.from_dict(s["train"]),
                                     tuple(s["eval_epochs"]))
        if d.get("bias_variance"):
            s = d["bias_variance"]
            d["bias_variance"] = BiasVarianceStudy(tuple(s["ns"]), students(s["students"]),
                                                   TrainConfig.from_dict(s["train"]), s["k"])
        return cls(**d)

    def replace(self, **changes: Any) -> "Preset":
        return replace(self, **changes)
