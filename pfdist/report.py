"""A run's report, in Markdown and HTML, built from one list of blocks so both say the same.

It leads with what the run shows (in which descriptor space, the ideal copier's plateau, the
collapse in each space, the dynamics and bias-variance in one line each, and a comparison with
the paper), then the details: the fitted collapse (alpha with its interval, midpoint, plateaus,
fit quality), the detected training dynamics per run, the bias-variance table with the identity
check mean(E_gen^2) = E_bias^2 + E_var and the unbiased finite-K estimates, compute and wall
times, the figures with captions and the config. The HTML embeds its images (one file to share).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from pfdist.analysis.collapse import CollapseFit
from pfdist.analysis.dynamics import DynamicsReport
from pfdist.analysis.findings import Finding, largest_n_bias_variance
from pfdist.analysis.spaces import Plateau
from pfdist.atomic import atomic_write_text

# The identity holds exactly with the 1/K mean; this tolerance only absorbs CSV rounding.
IDENTITY_RTOL = 1e-4

Block = tuple  # ("h1"|"h2"|"p"|"pre", text) | ("table", header, rows) | ("img", src, caption, data URI or None)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _wall_time(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h {rest // 60:02d}m {rest % 60:02d}s ({seconds:.1f} s)"


def _collapse_blocks(fit: CollapseFit | None, quantity: str = "E_gen") -> list[Block]:
    blocks: list[Block] = [("h2", f"Memorization to generalization: collapse fit of {quantity}")]
    if fit is None:
        return blocks + [("p", "Not fitted (no scaling results, or too few sizes or points).")]
    pct = f"{100 * fit.confidence:g}%"
    if fit.degenerate:
        blocks.append(("p", f"Degenerate fit: {'; '.join(fit.degenerate)}. The model does not describe these points "
                            "(the optimum sits on the bounds); the values below are where the fit stopped, not "
                            "estimates, and the figure does not draw it."))
    blocks.append(("p", f"Model: {quantity} = low_s + (high − low_s) · sigmoid(−(log2 N − α log2|θ| − m) / w), "
                        f"{'one floor per size' if fit.per_size_floor else 'one shared floor'}; "
                        f"{pct} profile-likelihood intervals. Paper: α ≈ 0.5 (collapse in N / √|θ|)."))
    rows = [
        ("α", f"{fit.alpha:.4f}", f"[{fit.alpha_ci[0]:.4f}, {fit.alpha_ci[1]:.4f}]"),
        ("midpoint m (log2(N / |θ|^α))", f"{fit.midpoint:.4g}",
         f"[{fit.midpoint_ci[0]:.4g}, {fit.midpoint_ci[1]:.4g}]"),
        ("width w (octaves of N)", f"{fit.width:.4g}", ""),
        ("memorization plateau (high)", f"{fit.plateau_high:.4g}", ""),
        *((f"generalization floor, |θ| = {p:,}", f"{low:.4g}", "") for p, low in zip(fit.sizes, fit.plateau_low)),
        ("R²", f"{fit.r2:.4f}", ""),
        ("RMSE", f"{fit.rmse:.4g}", ""),
        ("points / sizes", f"{fit.n_points} / {fit.n_sizes}", ""),
    ]
    header = ("quantity", "value (degenerate fit)" if fit.degenerate else "value", f"{pct} interval")
    return blocks + [("table", header, rows)]


def _dynamics_blocks(dynamics: dict[str, DynamicsReport] | None) -> list[Block]:
    blocks: list[Block] = [("h2", "Training dynamics")]
    if not dynamics:
        return blocks + [("p", "No dynamics results.")]
    rows = []
    for key, r in dynamics.items():
        dd = r.double_descent
        dd_text = ("" if dd is None else f"{dd.first_min_value:.4g} @ {dd.first_min_epoch:g} → peak "
                   f"{dd.peak_value:.4g} @ {dd.peak_epoch:g} → {dd.second_min_value:.4g} @ {dd.second_min_epoch:g}")
        rows.append((key, r.kind, f"{r.min_epoch:g}", _fmt(r.min_value), f"{_fmt(r.raw_min_value)} @ {r.raw_min_epoch:g}",
                     _fmt(r.final_value), _fmt(r.depth), _fmt(r.threshold), dd_text, r.reason))
    header = ("run", "detected", "min epoch (smoothed curve)", "E_gen there", "raw min E_gen @ epoch", "final E_gen",
              "depth", "threshold", "double descent (E_gen @ epoch)", "reason")
    return blocks + [("table", header, rows)]


def _bias_variance_blocks(rows: Sequence[dict[str, Any]] | None, space: str = "") -> list[Block]:
    blocks: list[Block] = [("h2", f"Bias and variance{f' ({space} space)' if space else ''}")]
    if not rows:
        return blocks + [("p", "No bias-variance results.")]
    table, worst = [], 0.0
    unbiased = "e_var_unbiased" in rows[0]
    for r in sorted(rows, key=lambda r: (r["params"], r["n"])):
        total = r["e_bias"] ** 2 + r["e_var"]
        rel = abs(r["mean_e_gen_sq"] - total) / max(abs(r["mean_e_gen_sq"]), 1e-300)
        worst = max(worst, rel)
        extra = (_fmt(r["e_bias_unbiased"]), _fmt(r["e_var_unbiased"])) if unbiased else ()
        table.append((r["student"], f"{r['params']:,}", r["n"], r["k"], _fmt(r["e_bias"]), _fmt(r["e_var"]), *extra,
                      _fmt(r["mean_e_gen_sq"]), _fmt(total), f"{rel:.1e}", _fmt(r["e_gen"])))
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


def _real_vs_synthetic_blocks(rows: Sequence[dict[str, Any]] | None) -> list[Block]:
    """Students trained on N real images next to the same students on N teacher samples."""
    if not rows:
        return []
    pairs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["params"], r["student"], r["n"]), {})["synthetic" if r["train_data"] == "teacher"
                                                                  else "real"] = r
    table = []
    for (params, student, n), p in sorted(pairs.items()):
        real, syn = p.get("real", {}), p.get("synthetic", {})
        table.append((student, f"{params:,}", n, _fmt(real.get("e_mem", math.nan)), _fmt(syn.get("e_mem", math.nan)),
                      _fmt(real.get("mem_ratio", math.nan)), _fmt(syn.get("mem_ratio", math.nan)),
                      _fmt(real.get("e_gen", math.nan)), _fmt(syn.get("e_gen", math.nan))))
    header = ("student", "|θ|", "N", "E_mem real", "E_mem synthetic", "copy share real", "copy share synthetic",
              "E_gen real", "E_gen synthetic")
    return [("h2", "Real vs synthetic training data"),
            ("p", "The same students trained on N real training images or on N teacher samples; E_mem and the "
                  "copy share refer to each student's own training set, E_gen to the teacher."),
            ("table", header, table)]


def _solver_error_blocks(rows: Sequence[dict[str, Any]] | None, teacher: dict[str, Any] | None = None) -> list[Block]:
    """The teacher map's discretisation error (every run), and E_gen and E_mem with their
    Monte-Carlo intervals beside each student's, when estimated (eval error_estimate)."""
    rows = [r for r in rows or () if isinstance(r.get("e_gen_solver_error"), float)]
    blocks: list[Block] = []
    if teacher is not None:
        value = teacher.get("solver_error")
        said = (f"{_fmt(value)} (RMS over the first {teacher['num_seeds']} evaluation seeds of |Phi_grid - Phi_exact|, "
                "estimated by rerunning the map with doubled steps, Richardson)" if value is not None
                else f"not estimated ({teacher.get('reason', 'no estimate')})")
        blocks += [("h2", "Discretisation error"),
                   ("p", f"The teacher's map on the evaluation grid ({teacher['solver']}, {teacher['steps']} steps): "
                         f"{said}. Every E below is a PFD of solved maps; the Monte-Carlo intervals do not include "
                         "this error, which moves E_gen by at most the teacher's plus the student's (docs/method.md, "
                         "§2). Setting the eval config's error_estimate: true estimates each student's too.")]
    if not rows:
        return blocks
    if not blocks:
        blocks.append(("h2", "Discretisation error"))
    table = [(r["student"], r["n"], _fmt(r["e_gen"]), f"[{_fmt(r['e_gen_ci_low'])}, {_fmt(r['e_gen_ci_high'])}]",
              _fmt(r["e_gen_solver_error"]), _fmt(r["e_mem"]), _fmt(r["e_mem_solver_error"])) for r in rows]
    return blocks + [
            ("p", "Each E is a PFD of solved maps; its solver error (each map rerun with doubled steps on the first "
                  "128 seeds, Richardson) bounds how far it is from the PFD of the exact maps, beside the Monte-Carlo "
                  "interval, which does not include it (docs/method.md, §2)."),
            ("table", ("student", "N", "E_gen", "E_gen 95% CI", "E_gen solver error", "E_mem", "E_mem solver error"),
             table)]


FIGURE_CAPTIONS = {
    "scaling": "E_gen, E_mem and the copy share (95% Wilson intervals) against log2 N for every student size, one "
               "row per descriptor space (primary first). Dashed black: the ideal copier, the exact empirical flow "
               "of each training set, i.e. perfect memorization.",
    "collapse": "The same points against the collapse coordinate log2(N / |θ|^α) with the fitted α (dashed: fitted "
                "curve; dotted: fitted midpoint); the copy share's own collapse, and E_gen in the other spaces at "
                "their own fitted α.",
    "dynamics": "E_gen, E_mem and losses against training epochs, one row per N (memorization, transition and "
                "generalization regimes). Markers: detected early-learning minimum or double descent.",
    "bias_variance": "E_bias and E_var against N per size (solid: plug-in, dashed: unbiased finite-K estimates), and "
                     "at the largest N the decomposition E_bias² + E_var of mean E_gen².",
    "samples": "Samples of the teacher and of the students at the smallest and largest N, on the same seeds.",
}


def _summary_blocks(spaces: Sequence[str], collapse: CollapseFit | None, copy_collapse: CollapseFit | None,
                    space_fits: dict[str, CollapseFit | None] | None, plateaus: dict[str, Plateau] | None,
                    dynamics: dict[str, DynamicsReport] | None, bias_variance_rows: Sequence[dict] | None,
                    config: dict[str, Any]) -> list[Block]:
    """'What this run shows', leading with the primary space, and a short comparison with the paper."""
    blocks: list[Block] = [("h2", "What this run shows")]
    primary = spaces[0] if spaces else "pixels"
    specs = {(s if isinstance(s, str) else s.get("name")): s for s in config.get("descriptors", [])}
    spec = specs.get(primary)
    if isinstance(spec, dict) and spec.get("type") == "kernel":
        rule = spec["bandwidth_rule"]
        width = ("half the median nearest-neighbour distance of teacher samples" if rule == "median_nn/2"
                 else f"{rule} (median_nn: the median nearest-neighbour distance of teacher samples)")
        how = (f"random Fourier features of an RBF kernel, {spec['num_features']} features, bandwidth {width}: "
               "a saturating space like the paper's SSCD")
    else:
        how = "pixel space" if primary == "pixels" else f"the {primary} descriptor"
    blocks.append(("p", f"Errors are measured first in {primary} space ({how})"
                        + (f", and also in {', '.join(spaces[1:])} (table columns suffixed "
                           f"{', '.join('_' + s for s in spaces[1:])})." if len(spaces) > 1 else ".")))
    if plateaus:
        parts = [f"{p.space}: {p.low:.3g}–{p.high:.3g} ({p.describe()})" for p in plateaus.values()]
        text = "The ideal copier (the exact empirical flow of each training set) scores E_gen " + "; ".join(parts) + " across N."
        flat = [p for p in plateaus.values() if p.verdict == "flat"]
        falling = [p for p in plateaus.values() if p.verdict == "not flat"]
        if flat and falling:
            text += (f" A pure copier improves with N in {', '.join(p.space for p in falling)} only because training "
                     "points fill the space, so there E_gen cannot tell memorization from generalization; in "
                     f"{', '.join(p.space for p in flat)} it stays on a plateau and a falling E_gen means generalization.")
        blocks.append(("p", text))
    fits = dict(space_fits or {})
    if collapse is not None:
        fits[primary] = collapse
    lines = []
    for space in spaces:
        f = fits.get(space)
        if f is None:
            lines.append(f"{space}: no collapse fit")
            continue
        if f.degenerate:
            lines.append(f"{space}: degenerate fit ({'; '.join(f.degenerate)})")
            continue
        lines.append(f"{space}: α = {f.alpha:.3f} (95% CI {f.alpha_ci[0]:.3f}–{f.alpha_ci[1]:.3f}), R² = {f.r2:.3f}, "
                     f"plateau {f.plateau_high:.3g} → floors {', '.join(f'{v:.3g}' for v in f.plateau_low)}")
    if copy_collapse is not None and copy_collapse.degenerate:
        lines.append(f"copy share ({primary}): degenerate fit ({'; '.join(copy_collapse.degenerate)})")
    elif copy_collapse is not None:
        c = copy_collapse
        lines.append(f"copy share ({primary}): α = {c.alpha:.3f} (95% CI {c.alpha_ci[0]:.3f}–{c.alpha_ci[1]:.3f}), "
                     f"R² = {c.r2:.3f}")
    if lines:
        blocks.append(("p", "Collapse of E_gen on N / |θ|^α: " + "; ".join(lines) + "."))
    if dynamics:
        blocks.append(("p", "Training dynamics (E_gen in " + primary + " space): "
                            + "; ".join(f"{k}: {r.kind}" for k, r in dynamics.items()) + "."))
    if bias_variance_rows:
        n_max, top, kind, bias, var = largest_n_bias_variance(bias_variance_rows)
        fmt = ", ".join(f"{r['student']} {b:.3g} / {v:.3g}" for r, b, v in zip(top, bias, var))
        other = " (the plug-in values are in the bias-variance table)" if kind == "unbiased" else ""
        blocks.append(("p", f"Bias / variance at N = {n_max} ({primary} space, {kind} estimates as in the findings "
                            f"row{other}, smallest model first): {fmt}."))
    blocks += [("h2", "Comparison with the paper"), ("p", _paper_comparison(primary, collapse, plateaus))]
    return blocks


def _paper_comparison(primary: str, collapse: CollapseFit | None, plateaus: dict[str, Plateau] | None) -> str:
    text = ("The paper measures in SSCD space (unit descriptors, PFD in [0, 2]), where unrelated images sit near 1.22, "
            "E_gen falls from that plateau to a floor of 0.75–0.82 as N grows, E_mem saturates earlier, and curves of "
            "all sizes collapse on N / √|θ| (α ≈ 0.5). ")
    if collapse is not None and collapse.degenerate:
        text += f"Here the {primary}-space collapse fit is degenerate ({'; '.join(collapse.degenerate)}): no α to compare."
    elif collapse is not None:
        inside = collapse.alpha_ci[0] <= 0.5 <= collapse.alpha_ci[1]
        text += (f"Here the {primary}-space plateau is "
                 f"{collapse.plateau_high:.3g} and α = {collapse.alpha:.2f}, "
                 + ("whose interval holds 0.5 (whether one α fits every size is the findings row's collapse test)."
                    if inside else "whose interval does not include 0.5: the transition "
                    "shifts with model size at a different rate at this scale than the paper reports for U-Nets on CIFAR-10."))
    else:
        text += "This run has no collapse fit to compare."
    if plateaus and primary in plateaus:
        text += (f" The ideal copier's {primary}-space E_gen ({plateaus[primary].low:.3g}–{plateaus[primary].high:.3g}) "
                 "plays the role of the paper's 'unrelated images' level.")
    return text


def _timing_blocks(wall_time_s: float, timing: dict[str, Any] | None, counts: dict[str, int] | None) -> list[Block]:
    blocks: list[Block] = [("h2", "Compute")]
    parts = []
    if counts:
        parts.append(f"{counts['units']} units of work: {counts['students']} distinct students "
                     f"({counts['shared']} shared between experiments, trained once)"
                     + (f"; {counts['trained_now']} trained by this invocation." if "trained_now" in counts else "."))
    if timing and timing.get("unit_compute_s"):
        parts.append(f"Compute time of the run: {_wall_time(timing['unit_compute_s'])} summed over students; "
                     + (f"wall time of the invocations that trained them: {_wall_time(timing['training_wall_s'])}. "
                        if timing.get("training_wall_s") else ""))
    parts.append(f"Measured wall time of this invocation: {_wall_time(wall_time_s)}.")
    return blocks + [("p", " ".join(parts))]


def _markdown(blocks: list[Block]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = []
    for b in blocks:
        if b[0] == "h1":
            out.append(f"# {b[1]}")
        elif b[0] == "h2":
            out.append(f"## {b[1]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "pre":
            out.append(f"```\n{b[1]}\n```")
        elif b[0] == "img":
            out.append(f"![{Path(b[1]).stem}]({b[1]})\n\n*{b[2]}*")
        elif b[0] == "table":
            out.append("\n".join(["| " + " | ".join(cell(h) for h in b[1]) + " |",
                                  "|" + "---|" * len(b[1])]
                                 + ["| " + " | ".join(cell(v) for v in row) + " |" for row in b[2]]))
    return "\n\n".join(out) + "\n"


def _html(blocks: list[Block], title: str) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "p"):
            body.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
        elif b[0] == "pre":
            body.append(f"<pre>{e(b[1])}</pre>")
        elif b[0] == "img":
            src = b[3] if len(b) > 3 and b[3] else e(b[1])  # a data: URI when the image could be read
            body.append(f'<figure><img src="{src}" alt="{e(b[2])}"><figcaption>{e(b[2])}</figcaption></figure>')
        elif b[0] == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _embed(path: Path) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def write_report(
    run_dir: str | os.PathLike,
    *,
    config: dict[str, Any],
    collapse: CollapseFit | None,
    dynamics: dict[str, DynamicsReport] | None,
    bias_variance_rows: Sequence[dict[str, Any]] | None,
    wall_time_s: float,
    figures: Sequence[str | os.PathLike],
    copy_collapse: CollapseFit | None = None,
    real_vs_synthetic_rows: Sequence[dict[str, Any]] | None = None,
    spaces: Sequence[str] = (),
    space_fits: dict[str, CollapseFit | None] | None = None,
    plateaus: dict[str, Plateau] | None = None,
    timing: dict[str, Any] | None = None,
    counts: dict[str, int] | None = None,
    findings: Sequence[Finding] | None = None,
    scaling_rows: Sequence[dict[str, Any]] | None = None,
    teacher_solver_error: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write run_dir/report.md (figures linked relative to run_dir) and run_dir/report.html (figures
    embedded). ``spaces``: descriptor names, primary first; ``space_fits``: E_gen collapse per space;
    ``plateaus``: the ideal copier per space; ``timing`` / ``counts``: compute and unit counts."""
    run_dir = Path(run_dir)
    title = f"pfdist report: {run_dir.resolve().name}"
    spaces = tuple(spaces) or tuple((s if isinstance(s, str) else s.get("name")) for s in config.get("descriptors", [])) \
        or ("pixels",)
    blocks: list[Block] = [("h1", title)]
    blocks += _summary_blocks(spaces, collapse, copy_collapse, space_fits, plateaus, dynamics, bias_variance_rows, config)
    if findings:
        blocks += [("h2", "Findings: paper vs measured"),
                   ("p", "Each row is computed from this run's tables and fits (pfdist.analysis.findings says how); "
                         "the paper's values are in SSCD space on CIFAR-10 with U-Net students."),
                   ("table", ("finding", "paper", "this run", "verdict"),
                    [(f.finding, f.paper, f.measured, f.verdict) for f in findings])]
    blocks += _timing_blocks(wall_time_s, timing, counts)
    blocks += _collapse_blocks(collapse, f"E_gen ({spaces[0]} space)")
    for space, fit in (space_fits or {}).items():
        if space != spaces[0]:
            blocks += _collapse_blocks(fit, f"E_gen ({space} space)")
    if copy_collapse is not None:
        blocks += _collapse_blocks(copy_collapse, f"the memorization ratio (copy share, {spaces[0]} space)")
    blocks += _dynamics_blocks(dynamics)
    blocks += _bias_variance_blocks(bias_variance_rows, spaces[0])
    blocks += _real_vs_synthetic_blocks(real_vs_synthetic_rows)
    blocks += _solver_error_blocks(scaling_rows, teacher_solver_error)
    if figures:
        blocks.append(("h2", "Figures"))
        for fig in figures:
            fig = Path(fig)
            rel = Path(os.path.relpath(fig.resolve(), run_dir.resolve())).as_posix()
            caption = FIGURE_CAPTIONS.get(fig.stem, fig.stem)
            blocks.append(("img", rel, f"{fig.stem}: {caption}", _embed(fig)))
    blocks += [("h2", "Config"), ("pre", json.dumps(config, indent=2, sort_keys=True, default=str))]
    md = atomic_write_text(run_dir / "report.md", _markdown(blocks))
    page = atomic_write_text(run_dir / "report.html", _html(blocks, title))
    return md, page
