"""Tidy CSV tables from the units' results files, one row per point, every descriptor space side by side.

The primary space (the preset's first descriptor) fills the unsuffixed columns (``e_gen``,
``e_mem``, ``mem_ratio``, ``e_bias``, ...); every other space ``s`` adds the same columns suffixed
``_s`` (``e_gen_pixels``, ``e_gen_pixels_stderr``, ...). ``copier.csv`` is the ideal copier: the
exact empirical flow of each scaling training set, compared with the teacher. Apart from finished
students' final maps and the copier's (cached on disk by the units), no model is run here.

With ``spaces`` given (``pfdist rescore``) every error is recomputed from those cached pixel maps
in the new spaces instead of read from the results files; training dynamics cannot be (their
intermediate maps are not kept).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

from pfdist.atomic import atomic_write_text
from pfdist.descriptors import NamedDescriptors
from pfdist.flows import flow_outputs
from pfdist.metric import PFDResult, squared_distances
from pfdist.protocol import copier_outputs, decompose, read_results, space_errors, student_train_config
from pfdist.descriptors import describe
from pfdist.protocol.student import load_student

if TYPE_CHECKING:
    from pfdist.experiments.units import Context

POINT = ["e_gen", "e_gen_stderr", "e_gen_ci_low", "e_gen_ci_high", "e_mem", "e_mem_stderr", "mem_ratio",
         "mem_ratio_ci_low", "mem_ratio_ci_high"]
SOLVER_ERROR = ["e_gen_solver_error", "e_mem_solver_error"]  # when the eval config asks for error_estimate
COPIER = ["e_gen", "e_gen_stderr", "e_gen_ci_low", "e_gen_ci_high"]
BV = ["e_bias", "e_var", "e_bias_unbiased", "e_var_unbiased", "e_bias_sq_unbiased", "mean_e_gen_sq", "e_gen",
      "identity_gap"]
SCALING_BASE = ["student", "params", "n"]
SCALING_TAIL = ["train_loss", "test_loss"]
DYNAMICS_BASE = ["student", "params", "n", "seed", "epoch", "images"]
REAL_BASE = ["student", "params", "n", "train_data"]
DYNAMICS_TAIL = ["train_loss", "test_loss", "epoch_train_loss"]
BV_BASE = ["student", "params", "n", "k", "seeds"]


def suffixed(columns: list[str], space: str, primary: str) -> list[str]:
    """Column names of a non-primary space: ``e_gen_stderr`` -> ``e_gen_pixels_stderr``, ``e_bias`` -> ``e_bias_pixels``."""
    if space == primary:
        return list(columns)
    out = []
    for c in columns:
        for stem in ("e_gen", "e_mem", "mem_ratio"):
            if c[len(stem):] in ("_stderr", "_ci_low", "_ci_high", "_solver_error") and c.startswith(stem):
                out.append(f"{stem}_{space}{c[len(stem):]}")
                break
        else:
            out.append(f"{c}_{space}")
    return out


def columns_for(base: list[str], per_space: list[str], tail: list[str], spaces: Iterable[str]) -> list[str]:
    spaces = list(spaces)
    cols = base + per_space + tail
    for s in spaces[1:]:
        cols += suffixed(per_space, s, spaces[0])
    return cols


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return atomic_write_text(path, buf.getvalue())


def _point_values(entry: dict) -> dict:
    """POINT columns of one space's errors (e_gen, e_mem, mem_ratio dicts)."""
    return {
        "e_gen": entry["e_gen"]["pfd"], "e_gen_stderr": entry["e_gen"]["stderr"],
        "e_gen_ci_low": entry["e_gen"]["ci95"][0], "e_gen_ci_high": entry["e_gen"]["ci95"][1],
        "e_mem": entry["e_mem"]["pfd"], "e_mem_stderr": entry["e_mem"]["stderr"],
        "mem_ratio": entry["mem_ratio"]["value"], "mem_ratio_ci_low": entry["mem_ratio"]["ci95"][0],
        "mem_ratio_ci_high": entry["mem_ratio"]["ci95"][1],
        "e_gen_solver_error": entry["e_gen"].get("solver_error"),
        "e_mem_solver_error": entry["e_mem"].get("solver_error"),
    }


def _spread(values_by_space: dict[str, dict], columns: list[str], primary: str) -> dict:
    """{space: {col: v}} -> one row dict with suffixed columns for the non-primary spaces."""
    row = {}
    for space, values in values_by_space.items():
        row.update(dict(zip(suffixed(columns, space, primary), (values.get(c) for c in columns))))
    return row


class Tables:
    """Writes scaling.csv, dynamics.csv, bias_variance.csv and copier.csv for one run."""

    def __init__(self, ctx: "Context", spaces: NamedDescriptors | None = None, out_dir: Path | None = None):
        self.ctx, self.rescore = ctx, spaces is not None
        self.spaces = spaces if spaces is not None else ctx.descriptors
        self.primary = self.spaces.primary
        self.out_dir = Path(out_dir) if out_dir is not None else ctx.run_dir

    @property
    def point(self) -> list[str]:
        """Per-space columns of a point: POINT, and the solver errors when the eval asks for them.

        (Empty when rescored: the estimate reruns the maps, which rescoring does not.)"""
        return POINT + (SOLVER_ERROR if self.ctx.preset.eval.error_estimate else [])

    def result(self, unit) -> dict | None:
        return read_results(self.ctx.unit_dir(unit), self.ctx.key(unit))

    def student_values(self, unit) -> torch.Tensor:
        return student_outputs(self.ctx, unit)

    def copier_values(self, unit) -> torch.Tensor:
        ctx = self.ctx
        return copier_outputs(ctx.train_data(unit), ctx.preset.eval, device=ctx.device, cache_dir=ctx.cache).values

    def errors(self, unit, rec: dict) -> dict[str, dict]:
        """{space: POINT values} of a finished unit: read from its record, or recomputed (rescore)."""
        if not self.rescore:
            spaces = rec.get("spaces") or {self.primary: rec}
            return {name: _point_values(spaces[name]) for name in self.spaces if name in spaces}
        ev, ctx = self.ctx.preset.eval, self.ctx
        s, t, c = self.student_values(unit), ctx.teacher_outputs.values, self.copier_values(unit)
        return {name: _point_values(space_errors(s, t, c, ctx.train_data(unit), psi, seed=ev.seed,
                                                 batch_size=ev.batch_size))
                for name, psi in self.spaces.items()}

    def write(self) -> list[Path]:
        preset, written = self.ctx.preset, []
        if preset.scaling:
            written += self.scaling()
        if preset.dynamics and not self.rescore:
            written.append(self.dynamics())
        if preset.bias_variance:
            written.append(self.bias_variance())
        if getattr(preset, "real_vs_synthetic", None) and not self.rescore:
            written.append(self.real_vs_synthetic())
        return written

    def scaling(self) -> list[Path]:
        from pfdist.experiments.units import Unit

        s = self.ctx.preset.scaling
        rows = []
        for st in s.students:
            for n in s.ns:
                unit = Unit("scaling", st, n, s.train)
                if (rec := self.result(unit)) is None:
                    continue
                rows.append({"student": st.label, "params": rec["params"], "n": n, "train_loss": rec["train_loss"],
                             "test_loss": rec["test_loss"],
                             **_spread(self.errors(unit, rec), self.point, self.primary)})
        cols = columns_for(SCALING_BASE, self.point, SCALING_TAIL, self.spaces)
        return [write_csv(self.out_dir / "scaling.csv", cols, rows), self.copier()]

    def copier(self) -> Path:
        """E_gen of the exact empirical flow of each scaling training set (nested sets, dataset 0)."""
        from pfdist.experiments.units import Unit

        ctx, s, ev = self.ctx, self.ctx.preset.scaling, self.ctx.preset.eval
        rows = []
        for n in s.ns:
            unit = Unit("scaling", s.students[0], n, s.train)
            c = self.copier_values(unit)
            values = {}
            for name, psi in self.spaces.items():
                d2 = squared_distances(describe(c, psi, ev.batch_size), describe(ctx.teacher_outputs.values, psi,
                                                                                   ev.batch_size))
                r = PFDResult.from_per_sample(d2, seed=ev.seed)
                values[name] = {"e_gen": r.value, "e_gen_stderr": r.stderr, "e_gen_ci_low": r.ci[0],
                                "e_gen_ci_high": r.ci[1]}
            rows.append({"student": "ideal copier", "n": n, **_spread(values, COPIER, self.primary)})
        cols = columns_for(["student", "n"], COPIER, [], self.spaces)
        return write_csv(self.out_dir / "copier.csv", cols, rows)

    def dynamics(self) -> Path:
        from pfdist.experiments.units import Unit

        d = self.ctx.preset.dynamics
        rows = []
        for n in d.ns:
            for seed in d.seeds:
                rec = self.result(Unit("dynamics", d.student, n, replace(d.train, seed=seed), 0, d.eval_epochs))
                for h in (rec or {}).get("history", []):
                    spaces = h.get("spaces") or {self.primary: h}
                    values = {name: _point_values(spaces[name]) for name in self.spaces if name in spaces}
                    rows.append({"student": d.student.label, "params": rec["params"], "n": n, "seed": seed,
                                 "epoch": h["epoch"], "images": h["images"], "train_loss": h["train_loss"],
                                 "test_loss": h["test_loss"], "epoch_train_loss": h["epoch_train_loss"],
                                 **_spread(values, self.point, self.primary)})
        cols = columns_for(DYNAMICS_BASE, self.point, DYNAMICS_TAIL, self.spaces)
        return write_csv(self.out_dir / "dynamics.csv", cols, rows)

    def real_vs_synthetic(self) -> Path:
        """Students trained on N real images next to the same students on N teacher samples."""
        from pfdist.experiments.units import Unit

        r = self.ctx.preset.real_vs_synthetic
        rows = []
        for st in r.students:
            for n in r.ns:
                for source in (r.data, "teacher"):
                    if (rec := self.result(Unit("real_vs_synthetic", st, n, r.train, source=source))) is None:
                        continue
                    spaces = rec.get("spaces") or {self.primary: rec}
                    values = {name: _point_values(spaces[name]) for name in self.spaces if name in spaces}
                    rows.append({"student": st.label, "params": rec["params"], "n": n, "train_data": source,
                                 "train_loss": rec["train_loss"], "test_loss": rec["test_loss"],
                                 **_spread(values, self.point, self.primary)})
        cols = columns_for(REAL_BASE, self.point, SCALING_TAIL, self.spaces)
        return write_csv(self.out_dir / "real_vs_synthetic.csv", cols, rows)

    def bias_variance(self) -> Path:
        from pfdist.experiments.units import Unit

        b, ctx, ev = self.ctx.preset.bias_variance, self.ctx, self.ctx.preset.eval
        rows = []
        for st in b.students:
            for n in b.ns:
                units = [Unit("bias_variance", st, n, student_train_config(b.train, i, b.seeds), i) for i in range(b.k)]
                recs = [self.result(u) for u in units]
                if any(r is None for r in recs):
                    continue
                outs = [self.student_values(u) for u in units]
                values = {}
                for name, psi in self.spaces.items():
                    bv = decompose(describe(ctx.teacher_outputs.values, psi, ev.batch_size),
                                   [describe(o, psi, ev.batch_size) for o in outs])
                    values[name] = {**bv.to_dict(), "e_gen": bv.mean_e_gen_sq ** 0.5}
                rows.append({"student": st.label, "params": recs[0]["params"], "n": n, "k": b.k, "seeds": b.seeds,
                             **_spread(values, BV, self.primary)})
        return write_csv(self.out_dir / "bias_variance.csv", columns_for(BV_BASE, BV, [], self.spaces), rows)


def write_tables(ctx: "Context", *, spaces: NamedDescriptors | None = None, out_dir: Path | None = None) -> list[Path]:
    """The run's CSV tables (see the module docstring); ``spaces`` recomputes them in other spaces."""
    return Tables(ctx, spaces, out_dir).write()


def student_outputs(ctx: "Context", unit: Any) -> torch.Tensor:
    """A finished student's pixel outputs on the evaluation seeds (cached by its evaluation)."""
    ev = ctx.preset.eval
    student = load_student(ctx.unit_dir(unit), device=ctx.device)
    return flow_outputs(student, shape=ctx.shape, num_samples=ev.num_samples, seed=ev.seed, flow=ev.settings(),
                        batch_size=ev.batch_size, device=ctx.device, cache_dir=ctx.cache).values
