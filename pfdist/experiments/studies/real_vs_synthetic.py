"""Real vs synthetic training data: students trained on N real training images (``data``, a name
in ``pfdist.data.REAL_DATA``) next to the same students trained on N teacher samples.

Table ``real_vs_synthetic.csv``: one row per (student, N, training data); E_mem and the copy share
refer to each student's own training set, E_gen to the teacher. Not rescorable here (rescoring
covers the teacher-sample studies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfdist.errors import PFDistError
from pfdist.experiments.studies.base import (Block, RunData, Student, Study, Unit, distinct, fields_of, ns_of,
                                             students_of, train_of)
from pfdist.report import fmt
from pfdist.training import TrainConfig

TABLE = "real_vs_synthetic.csv"
BASE = ["student", "params", "n", "train_data"]
TAIL = ["train_loss", "test_loss"]


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
        distinct("real_vs_synthetic", self.ns, self.students)


class RealVsSyntheticStudy(Study):
    name = "real_vs_synthetic"
    tables = {TABLE: ("student", "params", "n", "train_data", "e_gen", "e_mem", "mem_ratio")}
    rescorable = False

    def from_dict(self, d: Any) -> RealVsSynthetic:
        s = fields_of(d, "real_vs_synthetic", {"ns", "students"}, {"train", "data"})
        return RealVsSynthetic(ns_of(s["ns"], "real_vs_synthetic"), students_of(s["students"], "real_vs_synthetic"),
                               train_of(s, "real_vs_synthetic"), s.get("data", "digits"))

    def units(self, config: RealVsSynthetic) -> list[Unit]:
        return [Unit(self.name, st, n, config.train, source=source)
                for st in config.students for n in config.ns for source in (config.data, "teacher")]

    def write(self, reader, config: RealVsSynthetic) -> list[Path]:
        rows = [{"student": unit.student.label, "params": rec["params"], "n": unit.n, "train_data": unit.source,
                 "train_loss": rec["train_loss"], "test_loss": rec["test_loss"],
                 **reader.spread(reader.recorded(rec), reader.point)}
                for unit, rec in reader.finished(self.units(config))]
        return [reader.write_csv(TABLE, reader.columns(BASE, reader.point, TAIL), rows)]

    def analyze(self, run: RunData) -> list[dict[str, Any]] | None:
        return run.rows.get(TABLE)

    def report(self, result: list[dict[str, Any]] | None, run: RunData) -> list[Block]:
        return real_vs_synthetic_blocks(result)

    def findings(self, result: list[dict[str, Any]] | None, run: RunData) -> list:
        from pfdist.analysis.findings import real_vs_synthetic_finding

        return [real_vs_synthetic_finding(result)]


STUDY = RealVsSyntheticStudy()


def real_vs_synthetic_blocks(rows: list[dict[str, Any]] | None) -> list[Block]:
    """Students trained on N real images next to the same students on N teacher samples."""
    if not rows:
        return []
    pairs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["params"], r["student"], r["n"]), {})["synthetic" if r["train_data"] == "teacher"
                                                                  else "real"] = r
    table = []
    for (params, student, n), p in sorted(pairs.items()):
        real, syn = p.get("real", {}), p.get("synthetic", {})
        table.append((student, f"{params:,}", n, *(fmt(side.get(col, math.nan)) for col in ("e_mem", "mem_ratio", "e_gen")
                                                    for side in (real, syn))))
    header = ("student", "|θ|", "N", "E_mem real", "E_mem synthetic", "copy share real", "copy share synthetic",
              "E_gen real", "E_gen synthetic")
    return [("h2", "Real vs synthetic training data"),
            ("p", "The same students trained on N real training images or on N teacher samples; E_mem and the "
                  "copy share refer to each student's own training set, E_gen to the teacher."),
            ("table", header, table)]
