"""Distilled few-step students: memorization -> generalization, steps, bias-variance and dynamics.

Each unit distills one student with :func:`pfdist.distill` from the teacher's PF-ODE map on the
evaluation grid, on the N pairs of training set ``dataset_index`` (their outputs are the teacher
samples a data-distilled student of size N trains on), then scores its few-step map on the
evaluation seeds in every descriptor space (:func:`pfdist.protocol.space_errors`): E_gen = PFD to
the teacher's map, E_mem = PFD to the exact empirical flow of its N pair outputs (the ideal copier
of that training set), and the copy share.

Tables: ``distill.csv`` (every student x N x steps; the collapse of E_gen on N / |θ|^α per steps
value, and the N where E_gen crosses half-way between its plateaus against the scaling study's
data-distilled students of the same label), and for the optional parts ``distill_steps.csv``
(E_gen against steps at one N), ``distill_bias_variance.csv`` (K students on independent pair
sets 1..K with their own seeds, at one N) and ``distill_dynamics.csv`` (E_gen against epochs,
by distilling to each evaluation epoch in turn from the previous checkpoint: a constant learning
rate makes that the same run as one uninterrupted distillation). Findings: each rule is stated
where it is computed (:mod:`pfdist.analysis.distill`); numbers of the paper for distilled students
are not public. A unit's work and the tables' rows are in
:mod:`pfdist.experiments.studies.distill_units`; the figure is :func:`pfdist.plots.plot_distill`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pfdist import checks
from pfdist.analysis.collapse import CollapseFit, fit_scaling
from pfdist.analysis.distill import (CROSSING_RULE, NOT_PUBLIC, Crossing, crossing, curves, fewer_samples_finding,
                                     steps_finding, steps_label)
from pfdist.analysis.dynamics import DynamicsReport, detect_run_dynamics
from pfdist.analysis.findings import (Finding, bias_variance_finding, collapse_finding, double_descent_finding,
                                      early_learning_finding, floor_finding, memorization_finding,
                                      scaling_collapse_report)
from pfdist.errors import PFDistError
from pfdist.experiments.studies.base import (Block, RunData, Student, Study, Unit, distinct, fields_of, ints, ns_of,
                                             students_of, train_of)
from pfdist.experiments.studies.bias_variance import (COLUMNS as BV_COLUMNS, GRAM_COLUMNS, bias_variance_blocks,
                                                      read_grams)
from pfdist.experiments.studies.distill_units import (bv_rows, distil, dynamics_rows, evaluate, evaluations,
                                                     final_loss, param_count, point_rows)
from pfdist.experiments.studies.dynamics import dynamics_blocks
from pfdist.experiments.studies.scaling import collapse_blocks
from pfdist.hashing import content_hash
from pfdist.protocol.bias_variance import student_train_config
from pfdist.protocol.few_step import METHODS
from pfdist.report import fmt
from pfdist.training import TrainConfig

TABLE, STEPS, BV, DYNAMICS = "distill.csv", "distill_steps.csv", "distill_bias_variance.csv", "distill_dynamics.csv"
BV_GRAMS = "distill_bias_variance_gram.csv"  # the K students' residual Gram matrices: the intervals refit from them
BASE = ["student", "params", "n", "steps", "method"]


@dataclass(frozen=True)
class StepsSweep:
    """E_gen against the number of steps, every student at one N."""

    n: int
    steps: tuple[int, ...]


@dataclass(frozen=True)
class Spread:
    """Bias and variance at one N: K students of each size with ``steps`` steps, on pair sets 1..K,
    each with its own initialisation and training-noise seed."""

    n: int
    k: int = 3
    steps: int = 1


@dataclass(frozen=True)
class Epochs:
    """E_gen against epochs for one student at each N, evaluated at ``eval_epochs`` (constant lr)."""

    ns: tuple[int, ...]
    student: Student
    train: TrainConfig
    eval_epochs: tuple[int, ...]
    steps: int = 1


@dataclass(frozen=True)
class Distill:
    """Distilled students: every student on every N with every number of steps (``method``: one of
    :data:`pfdist.protocol.few_step.METHODS`), and the optional parts (module doc)."""

    ns: tuple[int, ...]
    students: tuple[Student, ...]
    train: TrainConfig
    steps: tuple[int, ...] = (1, 4)
    method: str = "regression"
    sweep: StepsSweep | None = None
    bias_variance: Spread | None = None
    dynamics: Epochs | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PFDistError(f"distill.method must be one of {list(METHODS)} (got {self.method!r}).")
        object.__setattr__(self, "ns", ns_of(self.ns, "distill"))
        object.__setattr__(self, "steps", ints(self.steps, "distill.steps", 1))
        object.__setattr__(self, "students", tuple(self.students))
        distinct("distill", self.ns, self.students)
        if len(set(self.steps)) != len(self.steps):
            raise PFDistError(f"distill.steps must be distinct (got {list(self.steps)}).")
        if self.sweep is not None:
            ints([self.sweep.n], "distill.sweep.n", 1)
            ints(self.sweep.steps, "distill.sweep.steps", 1)
        if self.bias_variance is not None:
            ints([self.bias_variance.n], "distill.bias_variance.n", 1)
            checks.size("distill.bias_variance.k", self.bias_variance.k, checks.MAX_STUDENTS, checks.STUDENTS_WHY, lo=2)
            ints([self.bias_variance.steps], "distill.bias_variance.steps", 1)
        if self.dynamics is not None:
            self._check_dynamics(self.dynamics)

    def _check_dynamics(self, d: Epochs) -> None:
        ns_of(d.ns, "distill.dynamics")
        ints([d.steps], "distill.dynamics.steps", 1)
        late = [e for e in ints(d.eval_epochs, "distill.dynamics.eval_epochs", 0) if e > d.train.epochs]
        if late:
            raise PFDistError(f"distill.dynamics.eval_epochs must be epochs of its training (0 .. {d.train.epochs}); "
                              f"got {list(d.eval_epochs)}.")
        if d.train.lr_schedule != "constant" or self.method == "progressive":
            raise PFDistError("distill.dynamics distils to each evaluation epoch from the previous checkpoint, which "
                              "is one uninterrupted run only with a constant learning rate and one training round: "
                              "set dynamics.train.lr_schedule to \"constant\" and a method other than progressive.")


@dataclass(frozen=True)
class DistillResult:
    rows: list[dict[str, Any]]
    fits: dict[int, tuple[CollapseFit | None, CollapseFit | None]]  # steps -> (E_gen, copy share), primary space
    crossings: list[Crossing]  # distilled, then data-distilled students of the same labels
    steps_rows: list[dict[str, Any]] | None
    bv_rows: list[dict[str, Any]] | None
    bv_grams: dict[tuple[str, int], Any]  # (student, N) -> the K students' Gram matrix, primary space
    dynamics: dict[str, DynamicsReport] | None  # per (student, N)
    verdicts: dict[str, Any] | None  # per (student, N): pfdist.analysis.DynamicsVerdict


class DistillStudy(Study):
    name = "distill"
    tables = {TABLE: ("student", "params", "n", "steps", "e_gen", "e_gen_stderr", "e_mem", "e_mem_stderr",
                      "mem_ratio"),
              STEPS: ("student", "params", "n", "steps", "e_gen", "e_gen_stderr"),
              BV: ("student", "params", "n", "steps", "k", "e_bias", "e_var", "mean_e_gen_sq", "e_gen"),
              DYNAMICS: ("student", "params", "n", "steps", "epoch", "e_gen", "e_gen_stderr", "e_mem"),
              BV_GRAMS: tuple(GRAM_COLUMNS)}
    captions = {"distill": "Distilled students: E_gen, E_mem and the copy share (95% Wilson intervals) against log2 N "
                           "per size (colour) and number of steps (marker); last panel: E_gen against steps at one "
                           "N. Dashed, same colour: data-distilled students of the same labels (scaling study), "
                           "when run."}

    # Config ------------------------------------------------------------------------------------
    def from_dict(self, d: Any) -> Distill:
        s = fields_of(d, "distill", {"ns", "students"}, {"train", "steps", "method", "sweep", "bias_variance",
                                                         "dynamics"})
        sweep = bv = dyn = None
        if s.get("sweep") is not None:
            w = fields_of(s["sweep"], "distill.sweep", {"n", "steps"}, set())
            sweep = StepsSweep(w["n"], ints(w["steps"], "distill.sweep.steps", 1))
        if s.get("bias_variance") is not None:
            b = fields_of(s["bias_variance"], "distill.bias_variance", {"n"}, {"k", "steps"})
            bv = Spread(b["n"], b.get("k", 3), b.get("steps", 1))
        if s.get("dynamics") is not None:
            y = fields_of(s["dynamics"], "distill.dynamics", {"ns", "student", "eval_epochs"}, {"train", "steps"})
            dyn = Epochs(ns_of(y["ns"], "distill.dynamics"), students_of([y["student"]], "distill.dynamics")[0],
                         train_of(y, "distill.dynamics"), ints(y["eval_epochs"], "distill.dynamics.eval_epochs", 0),
                         y.get("steps", 1))
        return Distill(ns_of(s["ns"], "distill"), students_of(s["students"], "distill"), train_of(s, "distill"),
                       ints(s.get("steps", [1, 4]), "distill.steps", 1), s.get("method", "regression"), sweep, bv, dyn)

    def to_dict(self, config: Distill) -> dict:
        from dataclasses import asdict

        d = {**asdict(replace(config, sweep=None, bias_variance=None, dynamics=None)), "train": config.train.to_dict()}
        d["sweep"] = None if config.sweep is None else asdict(config.sweep)
        d["bias_variance"] = None if config.bias_variance is None else asdict(config.bias_variance)
        dyn = config.dynamics
        d["dynamics"] = None if dyn is None else {**asdict(replace(dyn, train=None)), "train": dyn.train.to_dict()}
        return d

    # Work --------------------------------------------------------------------------------------
    def unit(self, config: Distill, student: Student, n: int, steps: int, train: TrainConfig | None = None,
             dataset_index: int = 0, eval_epochs: tuple[int, ...] = ()) -> Unit:
        return Unit(self.name, student, n, train or config.train, dataset_index, tuple(eval_epochs),
                    options=(("method", config.method), ("steps", steps)))

    def grid_units(self, config: Distill) -> list[Unit]:
        return [self.unit(config, st, n, s) for st in config.students for s in config.steps for n in config.ns]

    def sweep_units(self, config: Distill) -> list[Unit]:
        w = config.sweep
        return [] if w is None else [self.unit(config, st, w.n, s) for st in config.students for s in w.steps]

    def bv_units(self, config: Distill) -> list[Unit]:
        b = config.bias_variance
        if b is None:
            return []
        return [self.unit(config, st, b.n, b.steps, student_train_config(config.train, i, "per_student"), i)
                for st in config.students for i in range(1, b.k + 1)]

    def dynamics_units(self, config: Distill) -> list[Unit]:
        d = config.dynamics
        return [] if d is None else [self.unit(config, d.student, n, d.steps, d.train, 0, tuple(sorted(d.eval_epochs)))
                                     for n in d.ns]

    def units(self, config: Distill) -> list[Unit]:
        return (self.grid_units(config) + self.sweep_units(config) + self.bv_units(config)
                + self.dynamics_units(config))

    def unit_key(self, ctx: Any, unit: Unit) -> str:
        """A student's key (teacher, N, network, training, evaluation, dataset, descriptors, eval
        epochs) and the distillation's method and steps."""
        return content_hash("distill/v1", ctx.student_key(unit), dict(unit.options))

    def check_unit(self, ctx: Any, unit: Unit) -> None:
        from pfdist.maps import ode_map
        from pfdist.protocol.distill import check_distill

        ctx.check_student(unit)
        o = dict(unit.options)
        try:
            check_distill(ode_map(ctx.teacher, ctx.preset.eval.flow), method=o["method"], steps=o["steps"],
                          num_pairs=unit.n, net=ctx.net_config(unit.student).config, train=unit.train, seed=unit.train.seed)
        except PFDistError as e:
            raise PFDistError(f"distill student {unit.student.label!r}, {o['steps']} steps: {e}") from None

    def run_unit(self, ctx: Any, unit: Unit, progress: Any = None) -> dict:
        """Distil (resuming from the unit's checkpoint), evaluate, write results.json last."""
        from pfdist.atomic import atomic_write_json
        from pfdist.lock import DirectoryLock
        from pfdist.protocol import read_results
        from pfdist.protocol.student import RESULTS

        out, key = ctx.unit_dir(unit), ctx.key(unit)
        if (done := read_results(out, key)) is not None:
            return done
        with DirectoryLock(out):
            if (done := read_results(out, key)) is not None:  # finished by another process while we waited
                return done
            t0 = time.perf_counter()
            history = evaluations(ctx, unit, key, progress)
            student = distil(ctx, unit, unit.train.epochs, progress)
            train_s = time.perf_counter() - t0
            o = dict(unit.options)
            record = {"key": key, "n": unit.n, "params": param_count(student), "method": o["method"],
                      "steps": o["steps"], "dataset_index": unit.dataset_index,
                      "net_config": ctx.net_config(unit.student).config,
                      "train_config": unit.train.to_dict(), "eval_config": ctx.preset.eval.to_dict(),
                      **evaluate(ctx, unit, student, ctx.cache), "distill_loss": final_loss(out),
                      "eval_epochs": list(unit.eval_epochs), "history": history,
                      "wall_s": {"total": time.perf_counter() - t0, "train": train_s}}
            atomic_write_json(out / RESULTS, record, checksum=True)
        return record

    def write(self, reader, config: Distill) -> list[Path]:
        cols = reader.columns(BASE, reader.point, ["distill_loss"])
        written = [reader.write_csv(TABLE, cols, point_rows(reader, self.grid_units(config)))]
        if config.sweep is not None:
            written.append(reader.write_csv(STEPS, cols, point_rows(reader, self.sweep_units(config))))
        if config.bias_variance is not None:
            rows, grams = bv_rows(reader, self.bv_units(config), config.bias_variance.k)
            written += [reader.write_csv(BV, reader.columns(BASE + ["k", "seeds"], BV_COLUMNS, []), rows),
                        reader.write_csv(BV_GRAMS, GRAM_COLUMNS, grams)]
        if config.dynamics is not None and not reader.rescore:  # the intermediate maps are not kept
            written.append(reader.write_csv(DYNAMICS, reader.columns(BASE + ["epoch", "images"], reader.point, []),
                                            dynamics_rows(reader, self.dynamics_units(config))))
        return written

    # Analysis ----------------------------------------------------------------------------------
    def analyze(self, run: RunData) -> DistillResult | None:
        if TABLE not in run.rows:
            return None
        rows, steps_rows, bv_rows, dyn = (_int_steps(run.rows.get(t)) for t in (TABLE, STEPS, BV, DYNAMICS))
        fits = {s: fit_scaling([r for r in rows if r["steps"] == s]) for s in sorted({r["steps"] for r in rows})}
        crossings = [crossing(g, steps) for (_, _, steps), g in curves(rows).items()]
        labels = {r["student"] for r in rows}
        data = [r for r in run.rows.get("scaling.csv", []) if r["student"] in labels]
        crossings += [crossing(g, None) for g in curves(data).values()]
        reports, verdicts = _judge_dynamics(run, rows, dyn) if dyn else (None, None)
        grams = read_grams(run.rows.get(BV_GRAMS), run.primary)
        return DistillResult(rows, fits, crossings, steps_rows, bv_rows, grams, reports, verdicts)

    def figures(self, result: DistillResult | None, run: RunData, out_dir: Path) -> list[Path]:
        if result is None or not result.rows:
            return []
        from pfdist.plots import plot_distill

        return plot_distill(result.rows, out_dir, steps_rows=result.steps_rows, data_rows=run.rows.get("scaling.csv"))

    def findings(self, result: DistillResult | None, run: RunData) -> list:
        if result is None:
            return [Finding("distilled few-step students (MtoG, steps, bias-variance, dynamics)", NOT_PUBLIC,
                            "no distill study", "not measured")]
        out = []
        for s, (fit, _) in result.fits.items():
            rows = [r for r in result.rows if r["steps"] == s]
            report = scaling_collapse_report(rows)
            for f in (floor_finding(rows), memorization_finding(rows), collapse_finding({run.primary: fit}, report)):
                out.append(replace(f, finding=f"distilled, {steps_label(s)}: {f.finding}",
                                   paper=f"data-distilled: {f.paper}; {NOT_PUBLIC}"))
        out += [fewer_samples_finding(result.crossings, "scaling.csv" in run.rows), steps_finding(result.steps_rows)]
        dyn = [early_learning_finding(result.verdicts), double_descent_finding(result.verdicts)]
        for f in (bias_variance_finding(result.bv_rows, result.bv_grams), *dyn):
            out.append(replace(f, finding=f"distilled: {f.finding}", paper=f"data-distilled: {f.paper}; {NOT_PUBLIC}"))
        return out

    def summary(self, result: DistillResult | None, run: RunData) -> list[str]:
        if result is None:
            return []
        parts = []
        for s, (fit, _) in result.fits.items():
            parts.append(f"{steps_label(s)}: " + (
                "no collapse fit" if fit is None else "degenerate fit" if fit.degenerate
                else f"α = {fit.alpha:.3f} (95% CI {fit.alpha_ci[0]:.3f}–{fit.alpha_ci[1]:.3f})"))
        verdict = fewer_samples_finding(result.crossings, "scaling.csv" in run.rows).verdict
        return [f"Distilled students, collapse of E_gen on N / |θ|^α ({run.primary} space): " + "; ".join(parts)
                + f". Which generalizes from fewer samples: {verdict}."]

    def report(self, result: DistillResult | None, run: RunData) -> list[Block]:
        if result is None:
            return []
        blocks: list[Block] = [("h2", "Distilled few-step students"), ("p", (
            "Each student is distilled from the teacher's map on its N pairs (docs/distillation.md); E_gen is its "
            "PFD to the teacher's map, E_mem its PFD to the exact empirical flow of its N pair outputs, on the "
            "evaluation seeds."))]
        for s, (fit, copy_fit) in result.fits.items():
            blocks += collapse_blocks(fit, f"E_gen of {steps_label(s)} distilled students ({run.primary} space)")
        blocks += [("h2", "Distilled vs data-distilled: N where E_gen is half-way between its plateaus"),
                   ("p", CROSSING_RULE),
                   ("table", ("student", "|θ|", "students", "log2 N½", "interval (E_gen ∓ 2 SE)"),
                    [(c.student, f"{c.params:,}",
                      "data-distilled" if c.steps is None else f"distilled, {steps_label(c.steps)}",
                      "no significant fall" if c.log2_n is None else f"{c.log2_n:.2f}",
                      "" if c.interval is None else f"[{c.interval[0]:.2f}, {c.interval[1]:.2f}]")
                     for c in result.crossings])]
        if result.steps_rows:
            blocks += [("h2", "Distilled students: E_gen against steps"),
                       ("table", ("student", "N", "steps", "E_gen", "E_gen 95% CI", "E_mem", "copy share"),
                        [(r["student"], r["n"], r["steps"], fmt(r["e_gen"]),
                          f"[{fmt(r['e_gen_ci_low'])}, {fmt(r['e_gen_ci_high'])}]", fmt(r["e_mem"]),
                          fmt(r["mem_ratio"]))
                         for r in sorted(result.steps_rows, key=lambda r: (r["params"], r["steps"]))])]
        if result.bv_rows:
            bv = bias_variance_blocks(result.bv_rows, run.primary)
            blocks += [("h2", f"Distilled students: bias and variance ({run.primary} space)"), *bv[1:]]
        if result.dynamics:
            blocks += [("h2", "Distilled students: training dynamics"), *dynamics_blocks(result.dynamics)[1:]]
        return blocks

    def summary_json(self, result: DistillResult | None, run: RunData) -> dict:
        if result is None:
            return {}
        return {"distill_collapse_alpha": {str(s): None if f is None else {"alpha": f.alpha, "ci95": list(f.alpha_ci)}
                                           for s, (f, _) in result.fits.items()}}


STUDY = DistillStudy()


# Analysis -----------------------------------------------------------------------------------------

def _judge_dynamics(run: RunData, rows: list[dict], dyn: list[dict]) -> tuple[dict, dict]:
    """The dynamics detector per (student, N) and its verdicts (:func:`pfdist.analysis.dynamics.judge_dynamics`,
    the distillation loss as the training loss), the regime placed between the copy share's plateaus
    of the same student and steps in ``distill.csv`` (as the dynamics study does with ``scaling.csv``)."""
    from pfdist.analysis.dynamics import dynamics_key, judge_dynamics
    from pfdist.experiments.studies.dynamics import plateaus

    runs: dict[tuple, list[dict]] = {}
    for r in dyn:
        loss = r.get("distill_loss")
        runs.setdefault((r["student"], r["n"], r["steps"]), []).append(
            {**r, "distill_loss": math.nan if loss is None else loss})
    verdicts = {}
    for (student, n, steps), group in runs.items():
        same = replace(run, rows={"scaling.csv": [r for r in rows if r["steps"] == steps]})
        verdicts[dynamics_key(student, n)] = judge_dynamics(group, loss_column="distill_loss",
                                                            **plateaus(same, student))
    reports = detect_run_dynamics(dyn)
    return reports, {key: verdicts[key] for key in reports}


def _int_steps(rows: list[dict] | None) -> list[dict] | None:
    """Rows as read back (numbers as floats) with ``steps`` an integer again."""
    return None if rows is None else [{**r, "steps": int(r["steps"])} for r in rows]
