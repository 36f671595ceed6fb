"""A run's report, in Markdown and HTML, built from one list of blocks so both say the same.

It leads with what the run shows (in which descriptor space, then each study's sentences), the
findings table, compute and wall times, then each study's section (built by the study, see
``pfdist.experiments.studies``), the teacher's discretisation error, the figures with captions
and the config. The HTML embeds its images (one file to share). Nothing here knows a study.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from pfdist.analysis.findings import Finding
from pfdist.atomic import atomic_write_text

Block = tuple  # ("h1"|"h2"|"p"|"pre", text) | ("table", header, rows) | ("img", src, caption, data URI or None)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _wall_time(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h {rest // 60:02d}m {rest % 60:02d}s ({seconds:.1f} s)"


def _teacher_error_blocks(teacher: dict[str, Any] | None) -> list[Block]:
    """The teacher map's discretisation error (every run)."""
    if teacher is None:
        return []
    value = teacher.get("solver_error")
    said = (f"{fmt(value)} (RMS over the first {teacher['num_seeds']} evaluation seeds of |Phi_grid - Phi_exact|, "
            "estimated by rerunning the map with doubled steps, Richardson)" if value is not None
            else f"not estimated ({teacher.get('reason', 'no estimate')})")
    return [("h2", "Discretisation error"),
            ("p", f"The teacher's map on the evaluation grid ({teacher['solver']}, {teacher['steps']} steps): "
                  f"{said}. Every E is a PFD of solved maps; the Monte-Carlo intervals do not include "
                  "this error, which moves E_gen by at most the teacher's plus the student's (docs/method.md, "
                  "§2). Setting the eval config's error_estimate: true estimates each student's too.")]


def _space_sentence(spaces: Sequence[str], config: dict[str, Any]) -> str:
    """In which descriptor space the errors are measured, primary first."""
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
    return (f"Errors are measured first in {primary} space ({how})"
            + (f", and also in {', '.join(spaces[1:])} (table columns suffixed "
               f"{', '.join('_' + s for s in spaces[1:])})." if len(spaces) > 1 else "."))


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
    wall_time_s: float,
    figures: Sequence[str | os.PathLike] = (),
    spaces: Sequence[str] = (),
    summary: Sequence[str] = (),
    findings: Sequence[Finding] | None = None,
    sections: Sequence[Block] = (),
    captions: dict[str, str] | None = None,
    timing: dict[str, Any] | None = None,
    counts: dict[str, int] | None = None,
    teacher_solver_error: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write run_dir/report.md (figures linked relative to run_dir) and run_dir/report.html (figures
    embedded). ``spaces``: descriptor names, primary first; ``summary``: the studies' sentences for
    "What this run shows"; ``sections``: their report blocks; ``captions``: figure stem -> caption;
    ``timing`` / ``counts``: compute and unit counts."""
    run_dir = Path(run_dir)
    title = f"pfdist report: {run_dir.resolve().name}"
    spaces = tuple(spaces) or tuple((s if isinstance(s, str) else s.get("name")) for s in config.get("descriptors", [])) \
        or ("pixels",)
    blocks: list[Block] = [("h1", title), ("h2", "What this run shows"), ("p", _space_sentence(spaces, config))]
    blocks += [("p", line) for line in summary]
    if findings:
        blocks += [("h2", "Findings: paper vs measured"),
                   ("p", "Each row is computed from this run's tables and fits (pfdist.analysis.findings says how); "
                         "the paper's values are in SSCD space on CIFAR-10 with U-Net students."),
                   ("table", ("finding", "paper", "this run", "verdict"),
                    [(f.finding, f.paper, f.measured, f.verdict) for f in findings])]
    blocks += _timing_blocks(wall_time_s, timing, counts)
    blocks += list(sections)
    blocks += _teacher_error_blocks(teacher_solver_error)
    if figures:
        blocks.append(("h2", "Figures"))
        for fig in figures:
            fig = Path(fig)
            rel = Path(os.path.relpath(fig.resolve(), run_dir.resolve())).as_posix()
            caption = (captions or {}).get(fig.stem, fig.stem)
            blocks.append(("img", rel, f"{fig.stem}: {caption}", _embed(fig)))
    blocks += [("h2", "Config"), ("pre", json.dumps(config, indent=2, sort_keys=True, default=str))]
    md = atomic_write_text(run_dir / "report.md", _markdown(blocks))
    page = atomic_write_text(run_dir / "report.html", _html(blocks, title))
    return md, page
