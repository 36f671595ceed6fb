"""Training dynamics: E_gen, E_mem and losses against epochs, for one student at N in each regime.

Each N is trained once per seed in ``seeds`` (replicates: detection runs on the mean curve, with
its between-seed interval). Table ``dynamics.csv``: one row per (N, seed, evaluated epoch).
Analysis: early learning and epoch-wise double descent (:mod:`pfdist.analysis.dynamics`).
Not rescorable: the intermediate maps are not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pfdist.analysis.dynamics import DynamicsReport, detect_run_dynamics, mean_over_seeds
from pfdist.analysis.findings import double_descent_finding, early_learning_finding
from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.experiments.studies.base import (Block, RunData, Student, Study, Unit, distinct, fields_of, group_rows, ints,
                                             ns_of, students_of, train_of)
from pfdist.report import fmt
from pfdist.training import TrainConfig

TABLE = "dynamics.csv"
BASE = ["student", "params", "n", "seed", "epoch", "images"]
TAIL = ["train_loss", "test_loss", "epoch_train_loss"]


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
        seeds = tuple(checks.integer(f"dynamics.seeds[{i}]", v, lo=0) for i, v in enumerate(self.seeds))
        if not seeds or len(set(seeds)) != len(seeds):
            raise PFDistError(f"Dynamics: seeds must be distinct ints >= 0, at least one; got {self.seeds!r}.")
        object.__setattr__(self, "seeds", seeds)
        distinct("dynamics", self.ns, (self.student,))
        last = self.train.epochs
        late = [e for e in self.eval_epochs if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= last]
        if late:
            raise PFDistError(f"dynamics.eval_epochs {late} are not epochs of this training (0 .. {last}); "
                              f"use epochs in [0, {last}] or raise dynamics.train.epochs.")


@dataclass(frozen=True)
class DynamicsResult:
    rows: list[dict[str, Any]]
    reports: dict[str, DynamicsReport] | None  # per (student, N), on the mean curve over seeds
    verdicts: dict[str, Any]  # per (student, N): pfdist.analysis.DynamicsVerdict (regime and loss judged)


class DynamicsStudy(Study):
    name = "dynamics"
    tables = {TABLE: ("student", "params", "n", "epoch", "e_gen", "e_gen_stderr", "e_mem", "e_mem_stderr",
                      "train_loss", "test_loss")}
    rescorable = False
    keyed_when_absent = True
    captions = {"dynamics": "E_gen, E_mem and losses against training epochs, one row per N (memorization, transition "
                            "and generalization regimes). Markers: detected early-learning minimum or double descent."}

    def from_dict(self, d: Any) -> Dynamics:
        s = fields_of(d, "dynamics", {"ns", "student", "eval_epochs"}, {"train", "seeds"})
        return Dynamics(ns_of(s["ns"], "dynamics"), students_of([s["student"]], "dynamics")[0], train_of(s, "dynamics"),
                        ints(s["eval_epochs"], "dynamics.eval_epochs", 0), ints(s.get("seeds", [0]), "dynamics.seeds", 0))

    def key_dict(self, config: Dynamics) -> dict:
        d = self.to_dict(config)
        if tuple(d["seeds"]) == (0,):  # added later: left out at its default
            del d["seeds"]
        return d

    def units(self, config: Dynamics) -> list[Unit]:
        return [Unit(self.name, config.student, n, replace(config.train, seed=seed), 0, config.eval_epochs)
                for n in config.ns for seed in config.seeds]

    def write(self, reader, config: Dynamics) -> list[Path]:
        rows = []
        for unit in self.units(config):
            rec = reader.result(unit)
            for h in (rec or {}).get("history", []):
                rows.append({"student": unit.student.label, "params": rec["params"], "n": unit.n,
                             "seed": unit.train.seed, "epoch": h["epoch"], "images": h["images"],
                             "train_loss": h["train_loss"], "test_loss": h["test_loss"],
                             "epoch_train_loss": h["epoch_train_loss"],
                             **reader.spread(reader.recorded(h), reader.point)})
        return [reader.write_csv(TABLE, reader.columns(BASE, reader.point, TAIL), rows)]

    def analyze(self, run: RunData) -> DynamicsResult | None:
        from pfdist.analysis.dynamics import dynamics_key, judge_dynamics

        rows = run.rows.get(TABLE)
        if not rows:
            return None
        verdicts = {dynamics_key(student, n): judge_dynamics(group, **plateaus(run, student))
                    for (student, n), group in group_rows(rows, "student", "n").items()}
        reports = detect_run_dynamics(rows)
        return DynamicsResult(rows, reports, {key: verdicts[key] for key in reports})

    def figures(self, result: DynamicsResult | None, run: RunData, out_dir: Path) -> list[Path]:
        from pfdist.plots import plot_dynamics  # matplotlib: only when drawing

        if result is None:
            return []
        return plot_dynamics(mean_over_seeds(result.rows), result.reports, out_dir, spaces=run.spaces)

    def findings(self, result: DynamicsResult | None, run: RunData) -> list:
        verdicts = result.verdicts if result is not None else None
        return [early_learning_finding(verdicts), double_descent_finding(verdicts)]

    def summary(self, result: DynamicsResult | None, run: RunData) -> list[str]:
        if result is None or not result.reports:
            return []
        return [f"Training dynamics (E_gen in {run.primary} space): "
                + "; ".join(f"{k}: {r.kind} ({result.verdicts[k].regime.label} regime)" for k, r in result.reports.items())
                + "."]

    def report(self, result: DynamicsResult | None, run: RunData) -> list[Block]:
        return dynamics_blocks(result.reports if result is not None else None)


STUDY = DynamicsStudy()


def plateaus(run: RunData, student: str) -> dict[str, tuple[float, float]]:
    """The copy share's plateaus for the regime of a dynamics run: the same student's copy share
    (95% interval) at the smallest and largest N of the scaling table when it has that student,
    else the share's own limits 0 and 1 (pfdist.analysis.regime)."""
    rows = sorted((r for r in run.rows.get("scaling.csv") or [] if r["student"] == student), key=lambda r: r["n"])
    if len(rows) < 2 or "mem_ratio_ci_low" not in rows[0]:
        return {}
    high, low = rows[0], rows[-1]
    memorization = (high["mem_ratio_ci_low"], high["mem_ratio_ci_high"])
    generalization = (low["mem_ratio_ci_low"], low["mem_ratio_ci_high"])
    if not generalization[1] < memorization[0]:  # the plateaus overlap: no transition between them to place a run in
        return {}
    return {"memorization": memorization, "generalization": generalization}


def dynamics_blocks(reports: dict[str, DynamicsReport] | None) -> list[Block]:
    blocks: list[Block] = [("h2", "Training dynamics")]
    if not reports:
        return blocks + [("p", "No dynamics results.")]
    rows = []
    for key, r in reports.items():
        dd = r.double_descent
        dd_text = ("" if dd is None else f"{dd.first_min_value:.4g} @ {dd.first_min_epoch:g} → peak "
                   f"{dd.peak_value:.4g} @ {dd.peak_epoch:g} → {dd.second_min_value:.4g} @ {dd.second_min_epoch:g}")
        rows.append((key, r.kind, f"{r.min_epoch:g}", fmt(r.min_value), f"{fmt(r.raw_min_value)} @ {r.raw_min_epoch:g}",
                     fmt(r.final_value), fmt(r.depth), fmt(r.threshold), dd_text, r.reason))
    header = ("run", "detected", "min epoch (smoothed curve)", "E_gen there", "raw min E_gen @ epoch", "final E_gen",
              "depth", "threshold", "double descent (E_gen @ epoch)", "reason")
    return blocks + [("table", header, rows)]
