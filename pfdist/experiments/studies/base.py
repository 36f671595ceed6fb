"""What every study is made of: the Study interface, a unit of work, and the config readers.

A study is a room (one module in this package): its frozen config, the units of work it needs,
the rows and columns of its tables (built from those same units), the analysis of those rows,
its figures, its report section and its findings rows. The registry
(:data:`pfdist.experiments.studies.STUDIES`) lists them; presets, tables, the analysis, the report
and the figures iterate over it, so adding a study is one module and one registry line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.training import TrainConfig

Block = tuple  # a report block: ("h2"|"p"|"pre", text) | ("table", header, rows); see pfdist.report


@dataclass(frozen=True)
class Student:
    """A student family member: a label for tables and its network config (shape filled in later)."""

    label: str
    net: dict


@dataclass(frozen=True)
class Unit:
    """One student to train and evaluate; its directory is named by the hash of what determines its result."""

    experiment: str  # the study's name
    student: Student
    n: int
    train: TrainConfig
    dataset_index: int = 0
    eval_epochs: tuple[int, ...] = ()
    source: str = "teacher"  # "teacher" (its samples) or a real data name (pfdist.data.REAL_DATA)
    options: tuple = ()  # a study's own settings of this unit, as (name, value) pairs (e.g. a distillation method)


@dataclass
class RunData:
    """What the analysis of a run reads: its tables' rows by file name, its descriptor names
    (primary first), and the results of the studies analysed before (registry order)."""

    run_dir: Path
    spaces: tuple[str, ...]
    rows: dict[str, list[dict[str, Any]]]
    results: dict[str, Any]
    rescored: list[dict[str, Any]] = field(default_factory=list)  # summaries of `pfdist rescore` in other spaces

    def space_rows(self, table: str, space: str) -> list[dict[str, Any]]:
        """A table's rows with ``space``'s columns under the primary names (``e_gen_pixels`` -> ``e_gen``)."""
        rows = self.rows.get(table) or []
        if space == self.primary:
            return list(rows)
        out = []
        for r in rows:
            row = {k: v for k, v in r.items() if not any(k.startswith(stem) for stem in ("e_", "mem_ratio"))}
            for k, v in r.items():
                for stem in ("e_gen", "e_mem", "mem_ratio"):
                    if k == f"{stem}_{space}" or k.startswith(f"{stem}_{space}_"):
                        row[stem + k[len(stem) + len(space) + 1:]] = v
            out.append(row)
        return out

    @property
    def primary(self) -> str:
        return self.spaces[0]


class Study:
    """One study. Subclasses set ``name``, ``tables`` and ``captions`` and implement the methods;
    the defaults say "this study has no such part"."""

    name: ClassVar[str]
    tables: ClassVar[dict[str, tuple[str, ...]]] = {}  # the CSV files it writes, in order: {name: required columns}
    captions: ClassVar[dict[str, str]] = {}  # figure file stem -> caption
    rescorable: ClassVar[bool] = True  # its errors can be recomputed from cached maps (pfdist rescore)
    keyed_when_absent: ClassVar[bool] = False  # the studies of the first preset format stay in the key as null
    in_preset: ClassVar[bool] = True  # a key of the preset of its own (else it derives from another study's config)

    # Config ------------------------------------------------------------------------------------
    def config(self, preset: Any) -> Any:
        """This study's config in ``preset`` (None when the preset does not run it)."""
        return preset.studies.get(self.name)

    def from_dict(self, d: Any) -> Any:
        """Its config from the preset file's form; a study with no key of its own has none to read."""
        raise PFDistError(f"the {self.name} study has no config of its own in a preset (it runs with another study).")

    def to_dict(self, config: Any) -> dict:
        d = asdict(config)
        d["train"] = config.train.to_dict()
        return d

    def key_dict(self, config: Any) -> dict:
        """The part of the preset's identity this config makes (fields added later left out at their defaults)."""
        return self.to_dict(config)

    def check_preset(self, preset: Any, config: Any) -> None:
        """Refuse, when the preset is built, a config that does not fit the rest of the preset
        (another study it needs, a descriptor it names). Default: nothing to check."""

    # Work --------------------------------------------------------------------------------------
    def units(self, config: Any) -> list[Unit]:
        return []

    def unit_key(self, ctx: Any, unit: Unit) -> str:
        """Everything that determines the unit's result, hashed (its directory's name). Default: a
        student trained on N samples and evaluated by :func:`pfdist.protocol.teacher_student`."""
        return ctx.student_key(unit)

    def run_unit(self, ctx: Any, unit: Unit, progress: Any = None) -> dict:
        """Train and evaluate one unit in ``ctx.unit_dir(unit)`` (resuming); its results record."""
        return ctx.train_student(unit, progress)

    def check_unit(self, ctx: Any, unit: Unit) -> None:
        """Refuse now what the unit would refuse later (nothing is computed or written)."""
        ctx.check_student(unit)

    def write(self, reader: Any, config: Any) -> list[Path]:
        """Its CSV tables from the units' results (``reader``: :class:`pfdist.experiments.rows.Reader`)."""
        return []

    # Analysis ----------------------------------------------------------------------------------
    def analyze(self, run: RunData) -> Any:
        """Fits and verdicts from its rows (None when it has none)."""
        return None

    def figures(self, result: Any, run: RunData, out_dir: Path) -> list[Path]:
        return []

    def summary(self, result: Any, run: RunData) -> list[str]:
        """Sentences for the report's "What this run shows"."""
        return []

    def report(self, result: Any, run: RunData) -> list[Block]:
        """Its report section."""
        return []

    def findings(self, result: Any, run: RunData) -> list:
        """Its rows of the findings table (:class:`pfdist.analysis.findings.Finding`), "not measured"
        when ``result`` is None."""
        return []

    def summary_json(self, result: Any, run: RunData) -> dict:
        """What it adds to summary.json."""
        return {}


def group_rows(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by the values of ``keys``, groups and rows in table order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


# Config readers shared by the studies' from_dict -------------------------------------------------


def distinct(where: str, ns: tuple, students: tuple) -> None:
    """Each N and each student once: a repeat would give duplicate rows in the tables."""
    for what, items in (("ns", list(ns)), ("student labels", [s.label for s in students]),
                        ("student nets", [json.dumps(s.net, sort_keys=True) for s in students])):
        repeated = sorted({str(v) for v in items if items.count(v) > 1})
        if repeated:
            raise PFDistError(f"{where}: {what} must be distinct; {', '.join(repeated)} repeated.")


def fields_of(d: Any, where: str, required: set[str], optional: set[str]) -> dict:
    """``d`` as a dict with exactly the keys ``required`` and some of ``optional``; else one clear error."""
    if not isinstance(d, dict):
        raise PFDistError(f"{where} must be an object with keys {sorted(required | optional)} (got {type(d).__name__}).")
    unknown, missing = sorted(set(d) - required - optional), sorted(required - set(d))
    if unknown:
        raise PFDistError(f"{where}: unknown keys {unknown}; valid keys are {sorted(required | optional)}.")
    if missing:
        raise PFDistError(f"{where}: missing required keys {missing}.")
    return dict(d)


def ints(items: Any, where: str, low: int) -> tuple[int, ...]:
    """A non-empty list of integers >= ``low``, as a tuple."""
    if not isinstance(items, (list, tuple)) or not items:
        raise PFDistError(f"{where} must be a non-empty list of integers >= {low} (got {items!r}).")
    return tuple(checks.integer(f"{where}[{i}]", v, lo=low) for i, v in enumerate(items))


def ns_of(items: Any, where: str) -> tuple[int, ...]:
    return ints(items, f"{where}.ns", 1)


def students_of(items: Any, where: str) -> tuple[Student, ...]:
    if not isinstance(items, (list, tuple)) or not items:
        raise PFDistError(f"{where}: students must be a non-empty list of {{'label': ..., 'net': {{...}}}}.")
    out = []
    for s in items:
        s = fields_of(s, f"{where} student", {"label", "net"}, set())
        if not isinstance(s["label"], str) or not isinstance(s["net"], dict):
            raise PFDistError(f"{where} student: label must be a string and net an object (got {s!r}).")
        out.append(Student(s["label"], s["net"]))
    return tuple(out)


def train_of(study: dict, where: str) -> TrainConfig:
    train = study.get("train", {})
    if not isinstance(train, dict):
        raise PFDistError(f"{where}.train must be an object of TrainConfig fields.")
    return TrainConfig.from_dict(train)
