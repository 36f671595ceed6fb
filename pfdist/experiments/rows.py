"""Rows of a run's tables from its units' results files, every descriptor space side by side.

The primary space (the preset's first descriptor) fills the unsuffixed columns (``e_gen``,
``e_mem``, ``mem_ratio``, ``e_bias``, ...); every other space ``s`` adds the same columns suffixed
``_s`` (``e_gen_pixels``, ``e_gen_pixels_stderr``, ...). Apart from finished students' final maps
and the copier's (cached on disk by the units), no model is run here.

With ``spaces`` given (``pfdist rescore``) every error is recomputed from those cached pixel maps
in the new spaces instead of read from the results files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

import torch

from pfdist.atomic import atomic_write_text
from pfdist.descriptors import NamedDescriptors
from pfdist.flows import flow_outputs
from pfdist.protocol import copier_outputs, read_results, space_errors
from pfdist.protocol.student import load_student

POINT = ["e_gen", "e_gen_stderr", "e_gen_ci_low", "e_gen_ci_high", "e_mem", "e_mem_stderr", "mem_ratio",
         "mem_ratio_ci_low", "mem_ratio_ci_high"]
SOLVER_ERROR = ["e_gen_solver_error", "e_mem_solver_error"]  # when the eval config asks for error_estimate


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


def point_values(entry: dict) -> dict:
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


def spread(values_by_space: dict[str, dict], columns: list[str], primary: str) -> dict:
    """{space: {col: v}} -> one row dict with suffixed columns for the non-primary spaces."""
    row = {}
    for space, values in values_by_space.items():
        row.update(dict(zip(suffixed(columns, space, primary), (values.get(c) for c in columns))))
    return row


class Reader:
    """What a study's ``write`` reads: the units' results, their errors per space (read, or recomputed
    when rescoring), their cached maps; and where to write (``out_dir``)."""

    def __init__(self, ctx: Any, spaces: NamedDescriptors | None = None, out_dir: Path | None = None):
        self.ctx, self.rescore = ctx, spaces is not None
        self.spaces = spaces if spaces is not None else ctx.descriptors
        self.primary = self.spaces.primary
        self.out_dir = Path(out_dir) if out_dir is not None else ctx.run_dir

    @property
    def point(self) -> list[str]:
        """Per-space columns of a point: POINT, and the solver errors when the eval asks for them."""
        return POINT + (SOLVER_ERROR if self.ctx.preset.eval.error_estimate else [])

    def columns(self, base: list[str], per_space: list[str], tail: list[str]) -> list[str]:
        return columns_for(base, per_space, tail, self.spaces)

    def write_csv(self, name: str, columns: list[str], rows: list[dict]) -> Path:
        return write_csv(self.out_dir / name, columns, rows)

    def result(self, unit) -> dict | None:
        return read_results(self.ctx.unit_dir(unit), self.ctx.key(unit))

    def finished(self, units: list) -> list[tuple[Any, dict]]:
        """(unit, its results record) for each finished unit, in order (unfinished ones have no row yet)."""
        return [(unit, rec) for unit in units if (rec := self.result(unit)) is not None]

    def student_values(self, unit) -> torch.Tensor:
        return student_outputs(self.ctx, unit)

    def copier_values(self, unit) -> torch.Tensor:
        ctx = self.ctx
        return copier_outputs(ctx.train_data(unit), ctx.preset.eval, device=ctx.device, cache_dir=ctx.cache).values

    def recorded(self, record: dict) -> dict[str, dict]:
        """{space: POINT values} as a results record (or one history entry) holds them."""
        spaces = record.get("spaces") or {self.primary: record}
        return {name: point_values(spaces[name]) for name in self.spaces if name in spaces}

    def errors(self, unit, rec: dict) -> dict[str, dict]:
        """{space: POINT values} of a finished unit: read from its record, or recomputed (rescore)."""
        if not self.rescore:
            return self.recorded(rec)
        ev, ctx = self.ctx.preset.eval, self.ctx
        s, t, c = self.student_values(unit), ctx.teacher_outputs.values, self.copier_values(unit)
        return {name: point_values(space_errors(s, t, c, ctx.train_data(unit), psi, seed=ev.seed,
                                                batch_size=ev.batch_size))
                for name, psi in self.spaces.items()}

    def spread(self, values_by_space: dict[str, dict], columns: list[str]) -> dict:
        return spread(values_by_space, columns, self.primary)

    def point_row(self, unit, rec: dict) -> dict:
        """A point's error columns, every space side by side."""
        return spread(self.errors(unit, rec), self.point, self.primary)


def student_outputs(ctx: Any, unit: Any) -> torch.Tensor:
    """A finished student's pixel outputs on the evaluation seeds (cached by its evaluation)."""
    ev = ctx.preset.eval
    student = load_student(ctx.unit_dir(unit), device=ctx.device)
    return flow_outputs(student, shape=ctx.shape, num_samples=ev.num_samples, seed=ev.seed, flow=ev.flow,
                        batch_size=ev.batch_size, device=ctx.device, cache_dir=ctx.cache).values
