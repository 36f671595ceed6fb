"""Experiment configs: frozen, JSON round-trippable, hashed into run and unit identities."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from pfdist import checks
from pfdist.descriptors import check_spec
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.protocol import SEED_MODES, EvalConfig
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

    def __post_init__(self) -> None:
        _distinct("scaling", self.ns, self.students)


@dataclass(frozen=True)
class Dynamics:
    """E_gen, E_mem and losses against epochs, for one student at N in each regime, trained once
    per seed in ``seeds`` (replicates: detection runs on the mean curve, with its between-seed
    interval)."""

    ns: tuple[int, ...]
    student: Student
    train: TrainConfig
    eval_epochs: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        seeds = tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds):
            raise PFDistError(f"Dynamics: seeds must be distinct ints >= 0, at least one; got {self.seeds!r}.")
        object.__setattr__(self, "seeds", seeds)
        _distinct("dynamics", self.ns, (self.student,))
        last = self.train.epochs
        late = [e for e in self.eval_epochs if not _is_int(e) or not 0 <= e <= last]
        if late:
            raise PFDistError(f"dynamics.eval_epochs {late} are not epochs of this training (0 .. {last}); "
                              f"use epochs in [0, {last}] or raise dynamics.train.epochs.")


@dataclass(frozen=True)
class RealVsSynthetic:
    """Students trained on N real training images (``data``, a name in ``pfdist.data.REAL_DATA``)
    next to the same students trained on N teacher samples: E_mem and copy share side by side."""

    ns: tuple[int, ...]
    students: tuple[Student, ...]
    train: TrainConfig
    data: str = "digits"

    def __post_init__(self) -> None:
        from pfdist.data import REAL_DATA

        if self.data not in REAL_DATA:
            raise PFDistError(f"RealVsSynthetic: unknown real data {self.data!r}; choose one of {sorted(REAL_DATA)}.")
        _distinct("real_vs_synthetic", self.ns, self.students)


@dataclass(frozen=True)
class BiasVarianceStudy:
    """K students per (N, size) on independent datasets; ``seeds``: "shared" initialisation and
    training noise for the K students (variance over data alone) or "per_student" (data + training)."""

    ns: tuple[int, ...]
    students: tuple[Student, ...]
    train: TrainConfig
    k: int = 4
    seeds: str = "shared"

    def __post_init__(self):
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 2:
            raise PFDistError(f"bias_variance.k must be an integer >= 2 (got {self.k!r}).")
        checks.size("bias_variance.k", self.k, checks.MAX_STUDENTS, checks.STUDENTS_WHY, lo=2)
        if self.seeds not in SEED_MODES:
            raise PFDistError(f"bias_variance.seeds must be one of {SEED_MODES} (got {self.seeds!r}).")
        _distinct("bias_variance", self.ns, self.students)


STUDIES = ("scaling", "dynamics", "bias_variance", "real_vs_synthetic")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # one path component: never "..", "/x" or "a/b"


@dataclass(frozen=True)
class Preset:
    """Everything one ``pfdist reproduce`` run does. ``teacher`` is a spec dict or a file path.

    ``descriptors``: the spaces every error is measured in (specs of ``pfdist.descriptors.specs``),
    the first one primary (tables' unsuffixed columns, figures, fits); the others get columns
    suffixed with their name. A kernel descriptor is fitted on teacher samples at the start of the
    run and saved in the run directory.
    """

    name: str
    teacher: Any
    eval: EvalConfig
    scaling: Scaling | None = None
    dynamics: Dynamics | None = None
    bias_variance: BiasVarianceStudy | None = None
    real_vs_synthetic: RealVsSynthetic | None = None
    workers: int = 1
    notes: str = ""
    descriptors: tuple = ("pixels",)

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise PFDistError(f"preset name {self.name!r} is not a plain name: it names the default run directory "
                              "runs/<name>, so use letters, digits, '.', '_' and '-' (starting with a letter or "
                              "digit, at most 64), e.g. \"my-run\"; choose the directory itself with --out.")
        if all(getattr(self, study) is None for study in STUDIES):
            raise PFDistError(f"preset {self.name!r} has no study; give at least one of {', '.join(STUDIES)}.")
        if isinstance(self.descriptors, (str, dict)) or not self.descriptors:
            raise PFDistError("Preset.descriptors must be a non-empty list of descriptor specs, e.g. "
                              '["pixels"] or [{"type": "kernel"}, "pixels"].')
        specs = tuple(check_spec(s) for s in self.descriptors)
        names = [s["name"] for s in specs]
        if len(set(names)) != len(names):
            raise PFDistError(f"descriptor names must be distinct (got {names}); give one a \"name\".")
        object.__setattr__(self, "descriptors", specs)

    @property
    def spaces(self) -> tuple[str, ...]:
        """Descriptor names, primary first."""
        return tuple(s["name"] for s in self.descriptors)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["descriptors"] = list(self.descriptors)
        d["eval"] = self.eval.to_dict()
        for name in STUDIES:
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
        # Fields added later are left out at their defaults, so older run directories keep their key.
        if d["real_vs_synthetic"] is None:
            del d["real_vs_synthetic"]
        if d["dynamics"] is not None and tuple(d["dynamics"]["seeds"]) == (0,):
            del d["dynamics"]["seeds"]
        return content_hash("preset/v1", d)

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        """A preset from the form of :meth:`to_dict` (a parsed JSON file): missing keys take their
        defaults (an EvalConfig / TrainConfig field, ``workers``, ``notes``, an absent study);
        unknown keys, missing required ones and wrong types are refused with a PFDistError."""
        d = _fields(d, "preset", {"name", "teacher"}, {"eval", "scaling", "dynamics", "bias_variance", "real_vs_synthetic",
                                                  "workers", "notes", "descriptors"})
        if not isinstance(d["name"], str) or not d["name"]:
            raise PFDistError(f"preset: name must be a non-empty string (got {d['name']!r}).")
        if not isinstance(d["teacher"], (str, dict)):
            raise PFDistError("preset: teacher must be a distribution spec (object) or a file path (string).")
        d["eval"] = _eval(d.get("eval", {}))
        if d.get("scaling") is not None:
            s = _fields(d["scaling"], "scaling", {"ns", "students"}, {"train"})
            d["scaling"] = Scaling(_ns(s["ns"], "scaling"), _students(s["students"], "scaling"), _train(s, "scaling"))
        if d.get("dynamics") is not None:
            s = _fields(d["dynamics"], "dynamics", {"ns", "student", "eval_epochs"}, {"train", "seeds"})
            d["dynamics"] = Dynamics(_ns(s["ns"], "dynamics"), _students([s["student"]], "dynamics")[0],
                                     _train(s, "dynamics"), _ints(s["eval_epochs"], "dynamics.eval_epochs", 0),
                                     _ints(s.get("seeds", [0]), "dynamics.seeds", 0))
        if d.get("bias_variance") is not None:
            s = _fields(d["bias_variance"], "bias_variance", {"ns", "students"}, {"train", "k", "seeds"})
            k = s.get("k", 4)
            if not _is_int(k) or k < 2:
                raise PFDistError(f"bias_variance.k must be an integer >= 2 (got {k!r}).")
            d["bias_variance"] = BiasVarianceStudy(_ns(s["ns"], "bias_variance"), _students(s["students"], "bias_variance"),
                                                   _train(s, "bias_variance"), k, s.get("seeds", "shared"))
        if d.get("real_vs_synthetic") is not None:
            s = _fields(d["real_vs_synthetic"], "real_vs_synthetic", {"ns", "students"}, {"train", "data"})
            d["real_vs_synthetic"] = RealVsSynthetic(_ns(s["ns"], "real_vs_synthetic"),
                                                     _students(s["students"], "real_vs_synthetic"),
                                                     _train(s, "real_vs_synthetic"), s.get("data", "digits"))
        if not _is_int(d.get("workers", 1)) or d.get("workers", 1) < 1:
            raise PFDistError(f"preset: workers must be an integer >= 1 (got {d['workers']!r}).")
        if not isinstance(d.get("notes", ""), str):
            raise PFDistError("preset: notes must be a string.")
        if "descriptors" in d:
            if not isinstance(d["descriptors"], (list, tuple)):
                raise PFDistError('preset: descriptors must be a list of descriptor specs, e.g. [{"type": "kernel"}, "pixels"].')
            d["descriptors"] = tuple(d["descriptors"])
        return cls(**d)

    def replace(self, **changes: Any) -> "Preset":
        return replace(self, **changes)


def _distinct(where: str, ns: tuple, students: tuple) -> None:
    """Each N and each student once: a repeat would give duplicate rows in the tables."""
    for what, items in (("ns", list(ns)), ("student labels", [s.label for s in students]),
                        ("student nets", [json.dumps(s.net, sort_keys=True) for s in students])):
        repeated = sorted({str(v) for v in items if items.count(v) > 1})
        if repeated:
            raise PFDistError(f"{where}: {what} must be distinct; {', '.join(repeated)} repeated.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fields(d: Any, where: str, required: set[str], optional: set[str]) -> dict:
    if not isinstance(d, dict):
        raise PFDistError(f"{where} must be an object with keys {sorted(required | optional)} (got {type(d).__name__}).")
    unknown, missing = sorted(set(d) - required - optional), sorted(required - set(d))
    if unknown:
        raise PFDistError(f"{where}: unknown keys {unknown}; valid keys are {sorted(required | optional)}.")
    if missing:
        raise PFDistError(f"{where}: missing required keys {missing}.")
    return dict(d)


def _ints(items: Any, where: str, low: int) -> tuple[int, ...]:
    if not isinstance(items, (list, tuple)) or not items or not all(_is_int(v) and v >= low for v in items):
        raise PFDistError(f"{where} must be a non-empty list of integers >= {low} (got {items!r}).")
    return tuple(items)


def _ns(items: Any, where: str) -> tuple[int, ...]:
    return _ints(items, f"{where}.ns", 1)


def _students(items: Any, where: str) -> tuple[Student, ...]:
    if not isinstance(items, (list, tuple)) or not items:
        raise PFDistError(f"{where}: students must be a non-empty list of {{'label': ..., 'net': {{...}}}}.")
    out = []
    for s in items:
        s = _fields(s, f"{where} student", {"label", "net"}, set())
        if not isinstance(s["label"], str) or not isinstance(s["net"], dict):
            raise PFDistError(f"{where} student: label must be a string and net an object (got {s!r}).")
        out.append(Student(s["label"], s["net"]))
    return tuple(out)


def _train(study: dict, where: str) -> TrainConfig:
    train = study.get("train", {})
    if not isinstance(train, dict):
        raise PFDistError(f"{where}.train must be an object of TrainConfig fields.")
    return TrainConfig.from_dict(train)


def _eval(d: Any) -> EvalConfig:
    d = _fields(d, "eval", set(), set(EvalConfig.keys()))
    try:
        return EvalConfig.from_dict(d)
    except TypeError as e:
        raise PFDistError(f"eval: {e}.") from None
