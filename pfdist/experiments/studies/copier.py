"""The ideal copier: the exact empirical flow of each scaling training set, compared with the teacher.

It needs no training (its maps are cached by the units) and runs whenever the scaling study does,
on its N. Table ``copier.csv``: E_gen of the copier per N in every space. Analysis: how flat its
E_gen stays across N in each space (:class:`pfdist.analysis.spaces.Plateau`); a space where a pure
copier improves with N cannot tell memorization from generalization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pfdist.analysis.findings import copier_finding
from pfdist.analysis.spaces import Plateau, copier_plateaus
from pfdist.descriptors import describe
from pfdist.experiments.studies.base import RunData, Study, Unit
from pfdist.metric import PFDResult, squared_distances

TABLE = "copier.csv"
COLUMNS = ["e_gen", "e_gen_stderr", "e_gen_ci_low", "e_gen_ci_high"]


class CopierStudy(Study):
    name = "copier"
    tables = {TABLE: ("n", "e_gen")}
    in_preset = False

    def config(self, preset: Any) -> Any:
        return preset.studies.get("scaling")

    def write(self, reader, config) -> list[Path]:
        ctx, ev = reader.ctx, reader.ctx.preset.eval
        teacher = ctx.teacher_outputs.values
        rows = []
        for n in config.ns:
            copier = reader.copier_values(Unit("scaling", config.students[0], n, config.train))
            values = {}
            for name, psi in reader.spaces.items():
                d2 = squared_distances(describe(copier, psi, ev.batch_size), describe(teacher, psi, ev.batch_size))
                r = PFDResult.from_per_sample(d2, seed=ev.seed)
                values[name] = {"e_gen": r.value, "e_gen_stderr": r.stderr, "e_gen_ci_low": r.ci[0],
                                "e_gen_ci_high": r.ci[1]}
            rows.append({"student": "ideal copier", "n": n, **reader.spread(values, COLUMNS)})
        return [reader.write_csv(TABLE, reader.columns(["student", "n"], COLUMNS, []), rows)]

    def analyze(self, run: RunData) -> dict[str, Plateau] | None:
        return copier_plateaus(run.rows[TABLE], run.spaces) if TABLE in run.rows else None

    def findings(self, result: dict[str, Plateau] | None, run: RunData) -> list:
        return [copier_finding(result, run.primary)]

    def summary(self, result: dict[str, Plateau] | None, run: RunData) -> list[str]:
        if not result:
            return []
        parts = [f"{p.space}: {p.low:.3g}–{p.high:.3g} ({p.describe()})" for p in result.values()]
        text = "The ideal copier (the exact empirical flow of each training set) scores E_gen " + "; ".join(parts) + " across N."
        flat = [p for p in result.values() if p.verdict == "flat"]
        falling = [p for p in result.values() if p.verdict == "not flat"]
        if flat and falling:
            text += (f" A pure copier improves with N in {', '.join(p.space for p in falling)} only because training "
                     "points fill the space, so there E_gen cannot tell memorization from generalization; in "
                     f"{', '.join(p.space for p in flat)} it stays on a plateau and a falling E_gen means generalization.")
        return [text]

    def summary_json(self, result: dict[str, Plateau] | None, run: RunData) -> dict:
        return {"copier_plateau": {s: {"low": p.low, "high": p.high, "max_over_min": p.ratio}
                                   for s, p in (result or {}).items()}}


STUDY = CopierStudy()
