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
from pfdist.analysis.dynamics import DynamicsVerdict
from pfdist.analysis.floors import floor_order, floor_verdict, floors
from pfdist.analysis.saturation import memorization_gap, saturation_verdict
from pfdist.analysis.spaces import Plateau
from pfdist.errors import PFDistError



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


def _size(p: int) -> str:
    return f"{p / 1e6:.2g} M" if p >= 1e6 else f"{p / 1e3:.3g} k"


def _per_size(name: str, paper: str, statistic: Callable, rows: Sequence[dict[str, Any]],
              missing: str) -> tuple[list, Finding | None]:
    """``statistic`` of the main family's rows, or the "not measured" row saying why not."""
    rows = collapse_rows(rows)
    try:
        result = statistic(rows) if rows else []
    except PFDistError as e:
        return [], Finding(name, paper, f"not measurable: {e}", "not measured")
    return result, (None if result else Finding(name, paper, missing, "not measured"))


def floor_finding(rows: Sequence[dict[str, Any]], others: dict[str, Sequence[dict[str, Any]]] | None = None) -> Finding:
    """Floors with their 95% intervals and the order of neighbouring sizes (:mod:`pfdist.analysis.floors`);
    ``others``: {space: the rows in that space's columns}, whose floors are stated after (the verdict
    is the primary space's)."""
    name = "E_gen falls to a floor, higher for smaller models"
    paper = "1.22 → 0.75–0.82, higher floor for smaller models"
    sizes, unmeasured = _per_size(name, paper, floors, rows, "no scaling table")
    if unmeasured is not None:
        return unmeasured
    order = floor_order(sizes)
    measured = (f"N = {sizes[0].n_first}: {' / '.join(_g(f.first) for f in sizes)} → floors "
                + "; ".join(f"{_size(f.params)}: {f.describe()}" for f in sizes)
                + f"; falls (drop > 1.96 combined SE) for {sum(f.falls for f in sizes)} of {len(sizes)} sizes; "
                + "neighbouring floors (smaller − larger, ± SE): " + ", ".join(o.describe() for o in order))
    for space, space_rows in (others or {}).items():
        try:
            measured += f"; {space}: floors {' / '.join(_g(f.value) for f in floors(collapse_rows(space_rows)))}"
        except PFDistError:
            measured += f"; {space}: no floors"
    return Finding(name, paper, measured, floor_verdict(sizes))


def memorization_finding(rows: Sequence[dict[str, Any]]) -> Finding:
    """E_mem's rise and where it saturates against where E_gen reaches its floor, the gap in octaves
    with its range on the N grid (:mod:`pfdist.analysis.saturation`)."""
    name = "E_mem rises and saturates earlier in N than E_gen falls"
    paper = "0.92 → 1.19, saturating 2^3–2^4 earlier in N"
    gaps, unmeasured = _per_size(name, paper, memorization_gap, rows, "no scaling table with ≥ 3 N per size")
    if unmeasured is not None:
        return unmeasured
    measured = "; ".join(f"{_size(g.params)}: {'rises' if g.rises else 'does not rise'}, {g.describe()}" for g in gaps)
    return Finding(name, paper, measured, saturation_verdict(gaps))


def copier_finding(plateaus: dict[str, Plateau] | None, primary: str) -> Finding:
    """A check of the descriptor space Ψ, not a finding of the paper: in a space where a pure copier's
    E_gen stays flat across N, a falling E_gen means generalization (the paper's SSCD is such a space)."""
    name = f"check of Ψ: an ideal copier sits on a flat plateau ({primary} space)"
    paper = "(a check of the space, not a finding; SSCD: unrelated images ≈ 1.22)"
    p = (plateaus or {}).get(primary)
    if p is None:
        return Finding(name, paper, "no copier table", "not measured")
    measured = f"ideal copier E_gen {_g(p.low)} (N = {p.n_low}) … {_g(p.high)} (N = {p.n_high}), {p.describe()}"
    for space, q in (plateaus or {}).items():
        if space != primary:
            ci = f" (95% CI {q.ratio_ci[0]:.3f}–{q.ratio_ci[1]:.3f})" if math.isfinite(q.ratio_ci[0]) else ""
            measured += f"; {space}: max/min {q.ratio:.3f}{ci}, {q.verdict}"
    verdict = {"flat": "check passed", "not flat": "check failed"}.get(p.verdict, "not measured")
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


def _dynamics_finding(verdicts: dict[str, DynamicsVerdict] | None, name: str, paper: str, shape: str,
                      describe: Callable[[str, DynamicsVerdict], str]) -> Finding:
    """One row over every dynamics run, judged by :func:`pfdist.analysis.judge_dynamics`: reproduced
    when a run in the shape's regime shows it with the training loss still falling; not reproduced
    when runs were in that regime and none did; not measured when no run was in it."""
    if not verdicts:
        return Finding(name, paper, "no dynamics runs", "not measured")
    said = {key: getattr(v, shape) for key, v in verdicts.items()}
    parts = [describe(key, v) if said[key] == "detected" else f"{key}: {said[key]} ({_why(v, shape)})"
             for key, v in verdicts.items()]
    judged = [x for x in said.values() if x in ("detected", "not detected")]
    verdict = ("reproduced" if "detected" in judged else "not reproduced" if judged else "not measured")
    return Finding(name, paper, "; ".join(parts), verdict)


def _why(v: DynamicsVerdict, shape: str) -> str:
    """The part of a verdict's reason about one shape."""
    what = "early learning" if shape == "early_learning" else "double descent"
    return next((part.split(": ", 1)[1] for part in v.reason.split("; ") if part.startswith(what)), v.reason)


def early_learning_finding(verdicts: dict[str, DynamicsVerdict] | None) -> Finding:
    def describe(key: str, v: DynamicsVerdict) -> str:
        r = v.report
        return (f"{key}: min {r.minimum_text()} → {_g(r.final_value)} (rise {_g(r.depth)} > threshold "
                f"{_g(r.threshold)}), {v.early_learning_loss.describe()}, regime {v.regime.describe()}")

    return _dynamics_finding(verdicts, "early learning at the transition", "E_gen min 0.83 @ epoch 85 → 1.08 @ 500",
                             "early_learning", describe)


def double_descent_finding(verdicts: dict[str, DynamicsVerdict] | None) -> Finding:
    def describe(key: str, v: DynamicsVerdict) -> str:
        d, r = v.report.double_descent, v.report
        return (f"{key}: {_g(d.first_min_value)} @ {d.first_min_epoch:g} → bump {_g(d.peak_value)} @ "
                f"{d.peak_epoch:g} → {_g(d.second_min_value)} @ {d.second_min_epoch:g} "
                f"(each step > threshold {_g(r.threshold)}), {v.double_descent_loss.describe()}, "
                f"regime {v.regime.describe()}")

    return _dynamics_finding(verdicts, "epoch-wise double descent", "0.80 → bump 0.84 → 0.76", "double_descent",
                             describe)


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


def bias_variance_finding(rows: Sequence[dict[str, Any]] | None, grams: dict | None = None) -> Finding:
    """At each N, bias and variance from the smallest to the largest model of the main family; with
    the students' Gram matrices (``grams``: {(student, N): (K, K)}), each change has a paired
    bootstrap interval over students and the verdict is :func:`pfdist.analysis.bias_variance_trend`'s
    at the largest N (the paper's claim); without them, the point estimates only ("no interval")."""
    name = "at large N, bias falls and variance rises with model size"
    paper = "bias 0.78 → 0.68, variance 0.063 → 0.099"
    if not rows:
        return Finding(name, paper, "no bias-variance runs", "not measured")
    n_max, top, kind, bias, var = largest_n_bias_variance(rows)
    if len(top) < 2:
        return Finding(name, paper, f"one size at N = {n_max}", "not measured")
    head = (f"K = {top[0]['k']} ({top[0].get('seeds', 'shared')} seeds), {kind} estimates, "
            f"|θ| {_size(top[0]['params'])} … {_size(top[-1]['params'])}")
    at_n = f"N = {n_max}: bias {' → '.join(_g(b) for b in bias)}, variance {' → '.join(_g(v) for v in var)}"
    small, large = top[0]["student"], top[-1]["student"]
    if grams and all((s, n) in grams for s in (small, large) for n in {r["n"] for r in collapse_rows(rows)}):
        from pfdist.analysis.bias_variance import bias_variance_trend

        ns = sorted({r["n"] for r in collapse_rows(rows)})
        trends = {n: bias_variance_trend(grams[small, n], grams[large, n], unbiased=kind == "unbiased") for n in ns}
        parts = "; ".join(f"N = {n}: {t.describe()} → {t.verdict}" for n, t in trends.items())
        return Finding(name, paper, f"{head}; {at_n}; largest minus smallest model, {parts}", trends[n_max].verdict)
    falls, rises = bias[-1] < bias[0], var[-1] > var[0]
    verdict = "reproduced" if falls and rises else "partly" if falls or rises else "not reproduced"
    return Finding(name, paper, f"{head}; {at_n} (no interval: the table has no Gram matrices)", verdict)


def real_vs_synthetic_finding(rows: Sequence[dict[str, Any]] | None) -> Finding:
    """Students trained on N real images against the same students on N teacher samples:
    :func:`pfdist.analysis.compare_real_synthetic`'s rule (E_mem and copy share differences with
    their combined errors, Bonferroni over the tests)."""
    from pfdist.analysis.real_vs_synthetic import compare_real_synthetic

    name = "memorization of real vs synthetic training data"
    paper = "(not in the paper: real CIFAR-10 vs teacher samples is this package's control)"
    if not rows:
        return Finding(name, paper, "no real-vs-synthetic runs", "not measured")
    result = compare_real_synthetic(rows)
    return Finding(name, paper, result.describe(), result.verdict)
