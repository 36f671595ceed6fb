"""Distilled few-step students: the half-way N (N½) of E_gen and its verdicts, each with its
statistic, error and rule.

- **N½** (:func:`crossing`, :data:`CROSSING_RULE`): the statistic is log2 of the N where E_gen,
  interpolated linearly in log2 N, first reaches the mean of its values at the smallest and the
  largest N; its error is the interval of the same crossing by E_gen ∓ 2 standard errors; a curve
  whose fall is not larger than 2 combined standard errors has none.
- **fewer samples** (:func:`fewer_samples_finding`): distilled against data-distilled students
  of the same label, per steps value; one kind generalizes from fewer samples when its N½
  interval lies wholly below the other's.
- **steps** (:func:`steps_finding`): E_gen at the most steps against the fewest, per student at
  one N; a change larger than 2 combined standard errors counts as falls / rises, else flat.

Rows are dicts as read back from ``distill.csv`` / ``distill_steps.csv`` / ``scaling.csv``
(``student``, ``params``, ``n``, ``e_gen``, ``e_gen_stderr`` and, for distilled rows, ``steps``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pfdist.analysis.findings import Finding

SIGNIFICANT_SE = 2.0  # a difference counts when larger than 2 combined standard errors
NOT_PUBLIC = "not public for distilled students"

CROSSING_RULE = (
    "N½: where E_gen, interpolated linearly in log2 N, first reaches the mean of its values at the smallest and the "
    "largest N; the interval is the same crossing of E_gen − 2 SE and E_gen + 2 SE (a grid end when one never "
    "crosses). A curve whose fall is not larger than 2 combined standard errors has no N½. One kind of student "
    "generalizes from fewer samples at a size when its interval lies wholly below the other's.")


@dataclass(frozen=True)
class Crossing:
    """log2 of the N where E_gen crosses half-way between its first and last values, with the
    interval of the same crossing by E_gen -/+ 2 standard errors (None: no significant fall)."""

    student: str
    params: int
    steps: int | None  # None: a data-distilled student (scaling.csv)
    log2_n: float | None
    interval: tuple[float, float] | None


def steps_label(s: int) -> str:
    """``"1 step"``, ``"4 steps"``."""
    return f"{s} step" + ("s" if s != 1 else "")


def curves(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows by (params, student, steps) (steps None for data-distilled rows), smallest model first."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["params"], r["student"], r.get("steps")), []).append(r)
    return {k: sorted(out[k], key=lambda r: r["n"]) for k in sorted(out, key=lambda k: (k[0], k[1], k[2] or 0))}


def crossing(rows: list[dict[str, Any]], steps: int | None) -> Crossing:
    """N½ of one curve (rows of one student and steps value) by :data:`CROSSING_RULE`."""
    g = sorted(rows, key=lambda r: r["n"])
    x = [math.log2(r["n"]) for r in g]
    e = [r["e_gen"] for r in g]
    se = [r.get("e_gen_stderr") or 0.0 for r in g]
    head = (g[0]["student"], int(g[0]["params"]), steps)
    if len(g) < 2 or e[0] - e[-1] <= SIGNIFICANT_SE * math.hypot(se[0], se[-1]):
        return Crossing(*head, None, None)
    mid = (e[0] + e[-1]) / 2

    def first_below(curve: list[float]) -> float:
        for i, v in enumerate(curve):
            if v <= mid:
                return x[0] if i == 0 else x[i - 1] + (curve[i - 1] - mid) / (curve[i - 1] - v) * (x[i] - x[i - 1])
        return x[-1]

    lower = first_below([v - SIGNIFICANT_SE * s for v, s in zip(e, se)])
    upper = first_below([v + SIGNIFICANT_SE * s for v, s in zip(e, se)])
    return Crossing(*head, first_below(e), (lower, upper))


def fewer_samples_finding(crossings: list[Crossing], has_scaling: bool) -> Finding:
    """Distilled against data-distilled students of the same label, per steps value (CROSSING_RULE)."""
    name = "which generalizes from fewer samples: distilled or data-distilled"
    data = {c.student: c for c in crossings if c.steps is None}
    pairs = [(c, data[c.student]) for c in crossings if c.steps is not None and c.student in data]
    if not has_scaling or not pairs:
        why = "no scaling study" if not has_scaling else "no scaling student with a distilled student's label"
        return Finding(name, NOT_PUBLIC, why, "not measured")
    parts, answers = [], []
    for d, t in pairs:
        if d.interval is None or t.interval is None:
            answer = "no N½"
        elif d.interval[1] < t.interval[0]:
            answer = "distilled"
        elif d.interval[0] > t.interval[1]:
            answer = "data-distilled"
        else:
            answer = "not resolved"
        answers.append(answer)
        parts.append(f"{d.student} {steps_label(d.steps)}: N½ {_show(d)} vs data {_show(t)}: {answer}")
    decided = {a for a in answers if a in ("distilled", "data-distilled")}
    verdict = (f"{decided.pop()} from fewer samples" if len(decided) == 1 and "not resolved" not in answers
               else "mixed" if len(decided) > 1 else "partly resolved" if decided else "not resolved")
    return Finding(name, NOT_PUBLIC, "; ".join(parts), verdict)


def _show(c: Crossing) -> str:
    return "no fall" if c.log2_n is None else f"2^{c.log2_n:.2f} [{c.interval[0]:.2f}, {c.interval[1]:.2f}]"


def steps_finding(rows: list[dict[str, Any]] | None) -> Finding:
    """E_gen at the most steps against the fewest, per student: a change beyond 2 combined SE counts."""
    name = "distilled: E_gen against steps at fixed N"
    if not rows:
        return Finding(name, NOT_PUBLIC, "no steps sweep", "not measured")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["params"], r["student"]), []).append(r)
    parts, moves = [], []
    for (_, label), g in sorted(groups.items()):
        g = sorted(g, key=lambda r: r["steps"])
        a, b = g[0], g[-1]
        se = math.hypot(a.get("e_gen_stderr") or 0.0, b.get("e_gen_stderr") or 0.0)
        move = ("falls" if a["e_gen"] - b["e_gen"] > SIGNIFICANT_SE * se
                else "rises" if b["e_gen"] - a["e_gen"] > SIGNIFICANT_SE * se else "flat")
        moves.append(move)
        trend = " → ".join(f"{r['e_gen']:.3g} ({steps_label(r['steps'])})" for r in g)
        parts.append(f"{label}, N = {a['n']}: {trend} ({move}; 2 SE = {SIGNIFICANT_SE * se:.2g})")
    verdict = f"{moves[0]} with more steps" if len(set(moves)) == 1 else "mixed"
    return Finding(name, NOT_PUBLIC, "; ".join(parts), verdict)
