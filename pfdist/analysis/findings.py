"""The paper's findings, one row each: what the paper reports and what a run measured.

Every row is computed from the run's tables and fits (never typed in), with a verdict that says
whether the finding reproduced and on what evidence:

- **floor**: E_gen falls from its value at the smallest N to a floor at the largest N, and the
  floor is higher for smaller models. "Falls" is a drop larger than 2 combined standard errors
  for every size; the ordering is checked between neighbouring sizes.
- **E_mem**: E_mem rises with N and saturates earlier in N than E_gen reaches its floor.
  Saturation: the first N where E_mem is within 10% of its range of its maximum; E_gen's floor:
  the first N where E_gen is within 10% of its range of its minimum (per size).
- **copier**: the ideal copier's E_gen across N in the primary space: max/min with its 95% interval
  (:class:`pfdist.analysis.spaces.Plateau`); flat when the interval reaches 1.1 or below, not flat when
  all of it is above, no verdict without standard errors.
- **collapse**: α of E_gen's collapse on N / |θ|^α in each space with its 95% interval. In the
  primary space the verdict is :func:`pfdist.analysis.collapse_report`'s (its rules: the interval
  excludes 0 and holds 0.5, and an F-test does not reject one α for all sizes), shown with α
  without each size and between neighbouring sizes; in the others, and when the scaling table
  cannot be refitted, a CI that excludes 0 shows a collapse and 0.5 is inside it or not. A
  degenerate fit (:attr:`CollapseFit.degenerate`) gives no verdict.
- **early learning** / **double descent**: the detectors of :mod:`pfdist.analysis.dynamics` on
  the mean curve over training seeds, with their significance threshold.
- **bias-variance**: at the largest N, bias and variance from the smallest to the largest model
  (unbiased finite-K estimates when present).

Only the main architecture family of the scaling table enters (see
:func:`pfdist.analysis.collapse.collapse_rows`); other families are controls.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from pfdist.analysis.collapse import CollapseFit, collapse_rows
from pfdist.analysis.collapse_report import CollapseReport, collapse_report
from pfdist.analysis.dynamics import DynamicsReport
from pfdist.analysis.spaces import Plateau
from pfdist.errors import PFDistError

SIGNIFICANT_SE = 2.0
SATURATION = 0.1


@dataclass(frozen=True)
class Finding:
    finding: str
    paper: str
    measured: str
    verdict: str  # "reproduced", "partly", "not reproduced" or "not measured"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _g(v: float) -> str:
    return f"{v:.3g}"


def _by_size(rows: Sequence[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    sizes: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        sizes.setdefault(int(r["params"]), []).append(r)
    return [(p, sorted(g, key=lambda r: r["n"])) for p, g in sorted(sizes.items())]


def _size(p: int) -> str:
    return f"{p / 1e6:.2g} M" if p >= 1e6 else f"{p / 1e3:.3g} k"


def _first_n_within(g: list[dict[str, Any]], col: str, target: float, scale: float) -> int:
    return next(r["n"] for r in g if abs(r[col] - target) <= SATURATION * scale)


def floor_finding(rows: Sequence[dict[str, Any]]) -> Finding:
    paper = "1.22 → 0.75–0.82, higher floor for smaller models"
    sizes = _by_size(collapse_rows(rows))
    if not sizes or any(len(g) < 2 for _, g in sizes):
        return Finding("E_gen falls to a floor, higher for smaller models", paper, "no scaling table", "not measured")
    falls, floors = [], []
    for _, g in sizes:
        a, b = g[0], g[-1]
        se = math.hypot(a.get("e_gen_stderr", 0.0) or 0.0, b.get("e_gen_stderr", 0.0) or 0.0)
        falls.append(a["e_gen"] - b["e_gen"] > SIGNIFICANT_SE * se)
        floors.append(b["e_gen"])
    ordered = sum(x > y for x, y in zip(floors, floors[1:]))
    start = " / ".join(_g(g[0]["e_gen"]) for _, g in sizes)
    measured = (f"N = {sizes[0][1][0]['n']}: {start} → N = {sizes[0][1][-1]['n']}: "
                f"{' / '.join(_g(f) for f in floors)} (|θ| {_size(sizes[0][0])} … {_size(sizes[-1][0])}); "
                f"falls for {sum(falls)} of {len(falls)} sizes, floors ordered for {ordered} of {len(floors) - 1} "
                "neighbouring pairs")
    if all(falls) and ordered == len(floors) - 1:
        verdict = "reproduced"
    elif any(falls):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    return Finding("E_gen falls to a floor, higher for smaller models", paper, measured, verdict)


def memorization_finding(rows: Sequence[dict[str, Any]]) -> Finding:
    name = "E_mem rises and saturates earlier in N than E_gen falls"
    paper = "0.92 → 1.19, saturating 2^3–2^4 earlier in N"
    sizes = _by_size(collapse_rows(rows))
    if not sizes or any(len(g) < 3 for _, g in sizes):
        return Finding(name, paper, "no scaling table with ≥ 3 N per size", "not measured")
    rises, earlier, parts = [], [], []
    for p, g in sizes:
        mem = [r["e_mem"] for r in g]
        gen = [r["e_gen"] for r in g]
        se = math.hypot(g[0].get("e_mem_stderr", 0.0) or 0.0, g[-1].get("e_mem_stderr", 0.0) or 0.0)
        rises.append(max(mem) - mem[0] > SIGNIFICANT_SE * se)
        n_mem = _first_n_within(g, "e_mem", max(mem), max(mem) - min(mem))
        n_gen = _first_n_within(g, "e_gen", min(gen), max(gen) - min(gen))
        earlier.append(n_mem < n_gen)
        parts.append(f"{_size(p)}: {_g(mem[0])} → {_g(max(mem))}, saturates at N = {n_mem}, E_gen floor at N = {n_gen}")
    measured = "; ".join(parts)
    if all(rises) and all(earlier):
        verdict = "reproduced"
    elif any(rises) and any(earlier):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    return Finding(name, paper, measured, verdict)


def copier_finding(plateaus: dict[str, Plateau] | None, primary: str) -> Finding:
    name = f"a copier sits on a flat plateau ({primary} space)"
    paper = "unrelated images ≈ 1.22 (SSCD), every size"
    p = (plateaus or {}).get(primary)
    if p is None:
        return Finding(name, paper, "no copier table", "not measured")
    measured = f"ideal copier E_gen {_g(p.low)} (N = {p.n_low}) … {_g(p.high)} (N = {p.n_high}), {p.describe()}"
    verdict = {"flat": "reproduced", "not flat": "not reproduced"}.get(p.verdict, "not measured")
    return Finding(name, paper, measured, verdict)


def scaling_collapse_report(rows: Sequence[dict[str, Any]]) -> CollapseReport | None:
    """:func:`collapse_report` of E_gen on the main family's rows; None when it cannot be fitted."""
    rows = collapse_rows(rows)
    if not rows:
        return None
    try:
        return collapse_report([r["n"] for r in rows], [r["params"] for r in rows], [r["e_gen"] for r in rows],
                               [r.get("e_gen_stderr", float("nan")) for r in rows])
    except PFDistError:
        return None


def _report_text(r: CollapseReport) -> str:
    sizes = sorted(r.fit.sizes)
    loo = ", ".join(f"{_size(k)}: {e.alpha:.2f}" for k, e in sorted(r.leave_one_out.items()))
    pairs = " → ".join(f"{r.pairwise[(a, b)].alpha:.2f}" for a, b in zip(sizes, sizes[1:]))
    return (f"{r.describe()}, {r.fit.n_sizes} sizes" + (f"; α without {loo}" if loo else "")
            + f"; α between neighbouring sizes {pairs}; {r.reason}")


def collapse_finding(fits: dict[str, CollapseFit | None], report: CollapseReport | None = None) -> Finding:
    """``report``: the primary space's :func:`collapse_report`; when given it decides the verdict."""
    name = "E_gen collapses on N / |θ|^α"
    paper = "α ≈ 0.5"
    parts, verdicts = [], []
    for i, (space, f) in enumerate(fits.items()):
        if i == 0 and report is not None:
            parts.append(f"{space}: {_report_text(report)}")
            verdicts.append(report.verdict)
            continue
        if f is None:
            parts.append(f"{space}: no fit")
            verdicts.append("not measured")
            continue
        if f.degenerate:
            parts.append(f"{space}: degenerate fit ({'; '.join(f.degenerate)})")
            verdicts.append("not measured")
            continue
        lo, hi = f.alpha_ci
        parts.append(f"{space}: α = {f.alpha:.2f} (95% CI {lo:.2f}–{hi:.2f}, {f.n_sizes} sizes, R² = {f.r2:.3f})"
                     + ("" if lo > 0 else ", CI includes 0") + (", includes 0.5" if lo <= 0.5 <= hi else ""))
        verdicts.append("reproduced" if lo > 0 and lo <= 0.5 <= hi else "partly" if lo > 0 else "not reproduced")
    # The primary space (listed first) decides; the others are shown for comparison.
    return Finding(name, paper, "; ".join(parts) or "no scaling table", verdicts[0] if verdicts else "not measured")


def _dynamics_finding(dynamics: dict[str, DynamicsReport] | None, name: str, paper: str,
                      describe: Callable[[str, DynamicsReport], str | None]) -> Finding:
    """One row over every dynamics run; ``describe`` gives a detected run's text, None if not detected."""
    if not dynamics:
        return Finding(name, paper, "no dynamics runs", "not measured")
    texts = {key: describe(key, r) for key, r in dynamics.items()}
    parts = [text if text is not None else f"{key}: not detected (threshold {_g(dynamics[key].threshold)})"
             for key, text in texts.items()]
    found = any(text is not None for text in texts.values())
    return Finding(name, paper, "; ".join(parts), "reproduced" if found else "not reproduced")


def early_learning_finding(dynamics: dict[str, DynamicsReport] | None) -> Finding:
    def describe(key: str, r: DynamicsReport) -> str | None:
        if not r.early_learning:
            return None
        return (f"{key}: min {r.minimum_text()} → {_g(r.final_value)} "
                f"(rise {_g(r.depth)} > threshold {_g(r.threshold)})")

    return _dynamics_finding(dynamics, "early learning at the transition", "E_gen min 0.83 @ epoch 85 → 1.08 @ 500",
                             describe)


def double_descent_finding(dynamics: dict[str, DynamicsReport] | None) -> Finding:
    def describe(key: str, r: DynamicsReport) -> str | None:
        d = r.double_descent
        if d is None:
            return None
        return (f"{key}: {_g(d.first_min_value)} @ {d.first_min_epoch:g} → bump {_g(d.peak_value)} @ "
                f"{d.peak_epoch:g} → {_g(d.second_min_value)} @ {d.second_min_epoch:g} "
                f"(each step > threshold {_g(r.threshold)})")

    return _dynamics_finding(dynamics, "epoch-wise double descent", "0.80 → bump 0.84 → 0.76", describe)


def largest_n_bias_variance(rows: Sequence[dict[str, Any]]) -> tuple[int, list[dict], str, list[float], list[float]]:
    """The one answer a run gives for bias and variance: at the largest N, main family, smallest
    model first, the unbiased finite-K estimates when the table has them (else the plug-in ones).
    Returns (N, rows, "unbiased" | "plug-in", biases, variances); the report's summary quotes the same."""
    rows = collapse_rows(rows)
    n_max = max(r["n"] for r in rows)
    top = sorted((r for r in rows if r["n"] == n_max), key=lambda r: r["params"])
    unbiased = "e_var_unbiased" in top[0]
    bias = [r["e_bias_unbiased" if unbiased else "e_bias"] for r in top]
    var = [r["e_var_unbiased" if unbiased else "e_var"] for r in top]
    return n_max, top, "unbiased" if unbiased else "plug-in", bias, var


def bias_variance_finding(rows: Sequence[dict[str, Any]] | None) -> Finding:
    name = "at large N, bias falls and variance rises with model size"
    paper = "bias 0.78 → 0.68, variance 0.063 → 0.099"
    if not rows:
        return Finding(name, paper, "no bias-variance runs", "not measured")
    n_max, top, kind, bias, var = largest_n_bias_variance(rows)
    if len(top) < 2:
        return Finding(name, paper, f"one size at N = {n_max}", "not measured")
    falls, rises = bias[-1] < bias[0], var[-1] > var[0]
    measured = (f"N = {n_max}, K = {top[0]['k']}, {kind} estimates, "
                f"|θ| {_size(top[0]['params'])} … {_size(top[-1]['params'])}: bias {' → '.join(_g(b) for b in bias)}, "
                f"variance {' → '.join(_g(v) for v in var)} (no interval at this K)")
    verdict = "reproduced" if falls and rises else "partly" if falls or rises else "not reproduced"
    return Finding(name, paper, measured, verdict)


def findings(*, scaling_rows: Sequence[dict[str, Any]] | None, fits: dict[str, CollapseFit | None],
             plateaus: dict[str, Plateau] | None, dynamics: dict[str, DynamicsReport] | None,
             bias_variance_rows: Sequence[dict[str, Any]] | None, primary: str) -> list[Finding]:
    """Every finding of the paper against this run (``fits``: E_gen collapse per space, primary first)."""
    rows = list(scaling_rows or [])
    return [
        floor_finding(rows),
        memorization_finding(rows),
        copier_finding(plateaus, primary),
        collapse_finding(fits, scaling_collapse_report(rows) if rows and fits else None),
        early_learning_finding(dynamics),
        double_descent_finding(dynamics),
        bias_variance_finding(bias_variance_rows),
    ]
