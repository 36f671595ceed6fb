"""Bias and variance: K students per (N, size), each trained on an independent dataset.

``seeds``: "shared" initialisation and training noise for the K students (variance over data
alone) or "per_student" (data + training). Table ``bias_variance.csv``: one row per (student, N)
with E_bias and E_var (plug-in and unbiased finite-K estimates) and the identity
mean(E_gen²) = E_bias² + E_var (:func:`pfdist.protocol.decompose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfdist import checks
from pfdist.analysis.findings import bias_variance_finding, largest_n_bias_variance
from pfdist.errors import PFDistError
from pfdist.experiments.studies.base import (Block, RunData, Student, Study, Unit, distinct, fields_of, ns_of,
                                             students_of, train_of)
from pfdist.protocol import SEED_MODES, decompose, student_train_config
from pfdist.descriptors import describe
from pfdist.report import fmt
from pfdist.training import TrainConfig

TABLE = "bias_variance.csv"
GRAMS = "bias_variance_gram.csv"  # the students' residual Gram matrices: every term and interval recomputes from them
BASE = ["student", "params", "n", "k", "seeds"]
COLUMNS = ["e_bias", "e_var", "e_bias_unbiased", "e_var_unbiased", "e_bias_sq_unbiased", "mean_e_gen_sq", "e_gen",
           "identity_gap", "e_bias_unbiased_ci_low", "e_bias_unbiased_ci_high", "e_var_unbiased_ci_low",
           "e_var_unbiased_ci_high"]
GRAM_COLUMNS = ["student", "params", "n", "space", "i", "j", "g"]
# The identity holds exactly with the 1/K mean; this tolerance only absorbs CSV rounding.
IDENTITY_RTOL = 1e-4


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
        checks.size("bias_variance.k", self.k, checks.MAX_STUDENTS, checks.STUDENTS_WHY, lo=2)
        if self.seeds not in SEED_MODES:
            raise PFDistError(f"bias_variance.seeds must be one of {SEED_MODES} (got {self.seeds!r}).")
        distinct("bias_variance", self.ns, self.students)


class BiasVariance(Study):
    name = "bias_variance"
    tables = {TABLE: ("student", "params", "n", "k", "e_bias", "e_var", "mean_e_gen_sq", "e_gen"),
              GRAMS: tuple(GRAM_COLUMNS)}
    keyed_when_absent = True
    captions = {"bias_variance": "E_bias and E_var against N per size (solid: plug-in, dashed: unbiased finite-K "
                                 "estimates), and at the largest N the decomposition E_bias² + E_var of mean E_gen²."}

    def from_dict(self, d: Any) -> BiasVarianceStudy:
        s = fields_of(d, "bias_variance", {"ns", "students"}, {"train", "k", "seeds"})
        return BiasVarianceStudy(ns_of(s["ns"], "bias_variance"), students_of(s["students"], "bias_variance"),
                                 train_of(s, "bias_variance"), s.get("k", 4), s.get("seeds", "shared"))

    def units(self, config: BiasVarianceStudy) -> list[Unit]:
        return [Unit(self.name, st, n, student_train_config(config.train, i, config.seeds), i)
                for st in config.students for n in config.ns for i in range(config.k)]

    def write(self, reader, config: BiasVarianceStudy) -> list[Path]:
        units, rows, grams = self.units(config), [], []
        for group in (units[i:i + config.k] for i in range(0, len(units), config.k)):
            recs = [reader.result(u) for u in group]
            if any(r is None for r in recs):
                continue
            head = {"student": group[0].student.label, "params": recs[0]["params"], "n": group[0].n}
            values, by_space = decomposition(reader, [reader.student_values(u) for u in group])
            grams += gram_rows(head, by_space)
            rows.append({**head, "k": config.k, "seeds": config.seeds, **reader.spread(values, COLUMNS)})
        return [reader.write_csv(TABLE, reader.columns(BASE, COLUMNS, []), rows),
                reader.write_csv(GRAMS, GRAM_COLUMNS, grams)]

    def analyze(self, run: RunData) -> list[dict[str, Any]] | None:
        return run.rows.get(TABLE)

    def grams(self, run: RunData) -> dict[tuple[str, int], Any]:
        return read_grams(run.rows.get(GRAMS), run.primary)

    def figures(self, result: list[dict[str, Any]] | None, run: RunData, out_dir: Path) -> list[Path]:
        from pfdist.plots import plot_bias_variance  # matplotlib: only when drawing

        return plot_bias_variance(result, out_dir, space=run.primary) if result else []

    def findings(self, result: list[dict[str, Any]] | None, run: RunData) -> list:
        return [bias_variance_finding(result, self.grams(run) if result else None)]

    def summary(self, result: list[dict[str, Any]] | None, run: RunData) -> list[str]:
        if not result:
            return []
        n_max, top, kind, bias, var = largest_n_bias_variance(result)
        values = ", ".join(f"{r['student']} {b:.3g} / {v:.3g}" for r, b, v in zip(top, bias, var))
        other = " (the plug-in values are in the bias-variance table)" if kind == "unbiased" else ""
        return [f"Bias / variance at N = {n_max} ({run.primary} space, {kind} estimates as in the findings "
                f"row{other}, smallest model first): {values}."]

    def report(self, result: list[dict[str, Any]] | None, run: RunData) -> list[Block]:
        return bias_variance_blocks(result, run.primary)


STUDY = BiasVariance()


def gram_rows(head: dict[str, Any], by_space: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a Gram table (``GRAM_COLUMNS``) for one group of K students: ``head`` (student,
    params, N) and each space's (K, K) matrix, one row per entry."""
    return [{**head, "space": name, "i": i, "j": j, "g": float(gram[i, j])}
            for name, gram in by_space.items() for i in range(len(gram)) for j in range(len(gram))]


def read_grams(rows: list[dict[str, Any]] | None, space: str) -> dict[tuple[str, int], Any]:
    """{(student, N): its K students' residual Gram matrix} in ``space`` from a Gram table's rows
    (empty for tables written before the matrices were kept)."""
    import numpy as np

    cells: dict[tuple[str, int], dict[tuple[int, int], float]] = {}
    for r in rows or []:
        if r["space"] == space:
            cells.setdefault((r["student"], r["n"]), {})[int(r["i"]), int(r["j"])] = r["g"]
    out = {}
    for key, c in cells.items():
        k = 1 + max(i for i, _ in c)
        out[key] = np.array([[c[i, j] for j in range(k)] for i in range(k)])
    return out


def decomposition(reader, outputs: list) -> tuple[dict[str, dict], dict[str, Any]]:
    """K students' outputs (pixels, on the evaluation seeds) against the teacher's, in every space:
    ({space: the table's columns, the unbiased terms with their bootstrap intervals over students},
    {space: the students' residual Gram matrix})."""
    from pfdist.analysis.bias_variance import bias_variance_ci, residual_gram

    ev, teacher = reader.ctx.preset.eval, reader.ctx.teacher_outputs.values
    values, grams = {}, {}
    for name, psi in reader.spaces.items():
        t, students = describe(teacher, psi, ev.batch_size), [describe(o, psi, ev.batch_size) for o in outputs]
        bv, grams[name] = decompose(t, students), residual_gram(t, students, batch_size=ev.batch_size)
        ci = bias_variance_ci(grams[name], seed=ev.seed)
        values[name] = {**bv.to_dict(), "e_gen": bv.mean_e_gen_sq ** 0.5,
                        "e_bias_unbiased_ci_low": ci.e_bias_unbiased_ci[0], "e_bias_unbiased_ci_high": ci.e_bias_unbiased_ci[1],
                        "e_var_unbiased_ci_low": ci.e_var_unbiased_ci[0], "e_var_unbiased_ci_high": ci.e_var_unbiased_ci[1]}
    return values, grams


def bias_variance_blocks(rows: list[dict[str, Any]] | None, space: str = "") -> list[Block]:
    blocks: list[Block] = [("h2", f"Bias and variance{f' ({space} space)' if space else ''}")]
    if not rows:
        return blocks + [("p", "No bias-variance results.")]
    table, worst = [], 0.0
    unbiased = "e_var_unbiased" in rows[0]
    for r in sorted(rows, key=lambda r: (r["params"], r["n"])):
        total = r["e_bias"] ** 2 + r["e_var"]
        rel = abs(r["mean_e_gen_sq"] - total) / max(abs(r["mean_e_gen_sq"]), 1e-300)
        worst = max(worst, rel)
        extra = (fmt(r["e_bias_unbiased"]), fmt(r["e_var_unbiased"])) if unbiased else ()
        table.append((r["student"], f"{r['params']:,}", r["n"], r["k"], fmt(r["e_bias"]), fmt(r["e_var"]), *extra,
                      fmt(r["mean_e_gen_sq"]), fmt(total), f"{rel:.1e}", fmt(r["e_gen"])))
    header = ("student", "|θ|", "N", "K", "E_bias", "E_var", *(("E_bias unbiased", "E_var unbiased") if unbiased else ()),
              "mean E_gen²", "E_bias² + E_var", "rel. diff", "E_gen")
    verdict = "holds" if worst <= IDENTITY_RTOL else "VIOLATED"
    seeds = rows[0].get("seeds")
    note = ("" if not seeds else f" Students' initialisation and training-noise seeds: {seeds} "
            f"({'E_var is the variance over training sets alone' if seeds == 'shared' else 'E_var includes the variance of training itself'}).")
    return blocks + [
        ("table", header, table),
        ("p", f"Identity check mean(E_gen²) = E_bias² + E_var: largest relative difference {worst:.2e} "
              f"(tolerance {IDENTITY_RTOL:g}): {verdict}." + (" E_bias and E_var are the plug-in estimates (the "
              "paper's definition with the 1/K mean); the unbiased columns correct their finite-K bias "
              "(K/(K−1) E_var and E_bias² − E_var_unbiased/K; docs/method.md)." if unbiased else "") + note),
    ]
