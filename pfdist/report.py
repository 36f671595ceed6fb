"""A run's report, in Markdown and HTML, built from one list of blocks so both say the same.

It gathers the fitted collapse (alpha with its interval, midpoint, plateaus, fit quality), the
detected training dynamics per run, the bias-variance table with the identity check
mean(E_gen^2) = E_bias^2 + E_var, the measured wall time, the figures and the config.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from pfdist.analysis.collapse import CollapseFit
from pfdist.analysis.dynamics import DynamicsReport
from pfdist.atomic import atomic_write_text

# The identity holds exactly with the 1/K mean; this tolerance only absorbs CSV rounding.
IDENTITY_RTOL = 1e-4

Block = tuple  # ("h1"|"h2"|"p"|"pre", text) | ("table", header, rows) | ("img", src, alt)


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
    return blocks + [("table", ("quantity", "value", f"{pct} interval"), rows)]


def _dynamics_blocks(dynamics: dict[str, DynamicsReport] | None) -> list[Block]:
    blocks: list[Block] = [("h2", "Training dynamics")]
    if not dynamics:
        return blocks + [("p", "No dynamics results.")]
    rows = []
    for key, r in dynamics.items():
        dd = r.double_descent
        dd_text = ("" if dd is None else f"{dd.first_min_value:.4g} @ {dd.first_min_epoch:g} → peak "
                   f"{dd.peak_value:.4g} @ {dd.peak_epoch:g} → {dd.second_min_value:.4g} @ {dd.second_min_epoch:g}")
        rows.append((key, r.kind, f"{r.min_epoch:g}", _fmt(r.min_value), _fmt(r.final_value), _fmt(r.depth),
                     _fmt(r.threshold), dd_text, r.reason))
    header = ("run", "detected", "min epoch", "min E_gen", "final E_gen", "depth", "threshold",
              "double descent (E_gen @ epoch)", "reason")
    return blocks + [("table", header, rows)]


def _bias_variance_blocks(rows: Sequence[dict[str, Any]] | None) -> list[Block]:
    blocks: list[Block] = [("h2", "Bias and variance")]
    if not rows:
        return blocks + [("p", "No bias-variance results.")]
    table, worst = [], 0.0
    for r in sorted(rows, key=lambda r: (r["params"], r["n"])):
        total = r["e_bias"] ** 2 + r["e_var"]
        rel = abs(r["mean_e_gen_sq"] - total) / max(abs(r["mean_e_gen_sq"]), 1e-300)
        worst = max(worst, rel)
        table.append((r["student"], f"{r['params']:,}", r["n"], r["k"], _fmt(r["e_bias"]), _fmt(r["e_var"]),
                      _fmt(r["mean_e_gen_sq"]), _fmt(total), f"{rel:.1e}", _fmt(r["e_gen"])))
    header = ("student", "|θ|", "N", "K", "E_bias", "E_var", "mean E_gen²", "E_bias² + E_var", "rel. diff",
              "E_gen")
    verdict = "holds" if worst <= IDENTITY_RTOL else "VIOLATED"
    return blocks + [
        ("table", header, table),
        ("p", f"Identity check mean(E_gen²) = E_bias² + E_var: largest relative difference {worst:.2e} "
              f"(tolerance {IDENTITY_RTOL:g}): {verdict}."),
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
            out.append(f"![{b[2]}]({b[1]})")
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
            body.append(f'<figure><img src="{e(b[1])}" alt="{e(b[2])}"><figcaption>{e(b[2])}</figcaption></figure>')
        elif b[0] == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 6px}"
             "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


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
) -> tuple[Path, Path]:
    """Write run_dir/report.md and run_dir/report.html; figures are linked relative to run_dir."""
    run_dir = Path(run_dir)
    title = f"pfdist report: {run_dir.resolve().name}"
    blocks: list[Block] = [("h1", title), ("p", f"Measured wall time: {_wall_time(wall_time_s)}.")]
    blocks += _collapse_blocks(collapse)
    if copy_collapse is not None:
        blocks += _collapse_blocks(copy_collapse, "the memorization ratio (copy share)")
    blocks += _dynamics_blocks(dynamics)
    blocks += _bias_variance_blocks(bias_variance_rows)
    blocks += _real_vs_synthetic_blocks(real_vs_synthetic_rows)
    if figures:
        blocks.append(("h2", "Figures"))
        for fig in figures:
            rel = Path(os.path.relpath(Path(fig).resolve(), run_dir.resolve())).as_posix()
            blocks.append(("img", rel, Path(fig).stem))
    blocks += [("h2", "Config"), ("pre", json.dumps(config, indent=2, sort_keys=True, default=str))]
    md = atomic_write_text(run_dir / "report.md", _markdown(blocks))
    page = atomic_write_text(run_dir / "report.html", _html(blocks, title))
    return md, page
