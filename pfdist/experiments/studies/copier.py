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
from pfdist.experiments.studies.base import Block, RunData, Study, Unit
from pfdist.experiments.studies.scaling import STUDY as SCALING
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

    def report(self, result: dict[str, Plateau] | None, run: RunData) -> list:
        return sensitivity_blocks(run, result)

    def summary_json(self, result: dict[str, Plateau] | None, run: RunData) -> dict:
        return {"copier_plateau": {s: {"low": p.low, "high": p.high, "max_over_min": p.ratio,
                                       "ci95": list(p.ratio_ci), "verdict": p.verdict}
                                   for s, p in (result or {}).items()}}


STUDY = CopierStudy()


def sensitivity_blocks(run: RunData, plateaus: dict[str, Plateau] | None) -> list[Block]:
    """Ψ is a knob: α, the floors and the copier's flatness in every space the run was scored in
    (its descriptors, then each ``pfdist rescore``), one row per space."""
    entries = []
    scaling = run.results.get("scaling")
    if scaling is not None:
        summary = {**SCALING.summary_json(scaling, run), **STUDY.summary_json(plateaus, run)}
        for space in run.spaces:
            entries.append((space, "this run", summary["collapse_alpha"].get(space), summary["floors"].get(space),
                            summary["copier_plateau"].get(space)))
    for r in run.rescored:
        name = r.get("descriptor", {}).get("name", "?")
        spec = r.get("descriptor", {})
        how = spec.get("bandwidth_rule", spec.get("type", ""))
        entries.append((name, f"rescore ({how})", (r.get("collapse_alpha") or {}).get(name),
                        (r.get("floors") or {}).get(name), (r.get("copier_plateau") or {}).get(name)))
    if len(entries) < 2:
        return []
    rows = []
    for space, source, alpha, floors_, plateau in entries:
        a = "–" if not alpha else f"{alpha['alpha']:.3f} [{alpha['ci95'][0]:.3f}, {alpha['ci95'][1]:.3f}]"
        f = "–" if not floors_ else " / ".join(f"{x['value']:.3g}" for x in floors_)
        c = "–" if not plateau else (f"{plateau['max_over_min']:.3f}" + (
            f" [{plateau['ci95'][0]:.3f}, {plateau['ci95'][1]:.3f}] {plateau['verdict']}" if plateau.get("ci95") else ""))
        rows.append((space, source, a, f, c))
    return [("h2", "Ψ is a knob: the findings in every scored space"),
            ("p", "α of E_gen's collapse (95% CI), each size's floor (smallest model first) and the ideal copier's "
                  "max/min E_gen across N (95% CI; flat when the interval reaches 1.1) in each descriptor space "
                  "the run was scored in: its own, then each `pfdist rescore` found in rescore/."),
            ("table", ("space", "scored by", "α", "floors", "copier max/min"), rows)]
