"""Figures from results files. Plots read rows and fits; they never run a model.

Every function returns the PNG paths it wrote; files are written atomically. Figures are built on
the Agg canvas directly (no pyplot, no global backend state).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pfdist.analysis.collapse import CollapseFit, collapse_x
from pfdist.analysis.distill import curves as distill_curves, steps_label
from pfdist.analysis.dynamics import DynamicsReport, dynamics_key
from pfdist.atomic import atomic_write
from pfdist.errors import PFDistError

Rows = Sequence[dict[str, Any]]

# The columns each figure draws.
SCALING = ("student", "params", "n", "e_gen", "e_gen_stderr", "e_mem", "e_mem_stderr", "mem_ratio")
DYNAMICS = ("student", "params", "n", "epoch", "e_gen", "e_gen_stderr", "e_mem", "e_mem_stderr", "train_loss",
            "test_loss")
BIAS_VARIANCE = ("student", "params", "n", "e_bias", "e_var", "mean_e_gen_sq")


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _require(rows: Rows, columns: tuple[str, ...], figure: str) -> None:
    if not rows:
        raise PFDistError(f"no rows to plot for {figure}")
    missing = sorted({c for c in columns if c not in rows[0]})
    if missing:
        raise PFDistError(f"rows for {figure} lack columns {', '.join(missing)}; read them with read_rows")


def _by_student(rows: Rows, sort_key: str) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """[(student, params, rows sorted by sort_key)], smallest model first."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["params"], row["student"]), []).append(row)
    return [(s, p, sorted(g, key=lambda r: r[sort_key])) for (p, s), g in sorted(groups.items())]


def _colors(k: int) -> list:
    from matplotlib import colormaps

    return [colormaps["viridis"](v) for v in np.linspace(0.0, 0.85, max(k, 1))]


def _col(rows: Rows, name: str) -> np.ndarray:
    return np.array([r[name] for r in rows], dtype=float)


def _errorbar(ax, x, rows: Rows, name: str, **kw) -> None:
    err = _col(rows, f"{name}_stderr") if f"{name}_stderr" in rows[0] else None
    ax.errorbar(x, _col(rows, name), yerr=err, marker="o", ms=3, capsize=2, **kw)


def _space_label(space: str | None) -> str:
    return f" ({space})" if space else ""


def _copy_share(ax, x, rows: Rows, name: str, **kw) -> None:
    """The copy share with its 95% Wilson interval as asymmetric error bars."""
    y = _col(rows, name)
    if f"{name}_ci_low" in rows[0]:
        err = np.vstack([y - _col(rows, f"{name}_ci_low"), _col(rows, f"{name}_ci_high") - y])
        ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", ms=3, capsize=2, **kw)
    else:
        ax.plot(x, y, "o-", ms=3, **kw)


def _copier_line(ax, copier_rows: Rows | None, col: str) -> None:
    if copier_rows and col in copier_rows[0]:
        g = sorted(copier_rows, key=lambda r: r["n"])
        ax.errorbar(np.log2(_col(g, "n")), _col(g, col), yerr=_col(g, f"{col}_stderr") if f"{col}_stderr" in g[0]
                    else None, color="black", ls="--", marker="x", ms=4, lw=1, capsize=2, label="ideal copier")


def plot_scaling(rows: Rows, fit: CollapseFit | None, out_dir: str | os.PathLike,
                 copy_fit: CollapseFit | None = None, *, spaces: Sequence[str] = ("",),
                 copier_rows: Rows | None = None, space_fits: dict[str, CollapseFit | None] | None = None) -> list[Path]:
    """E_gen, E_mem, copy share vs log2 N per size, one row of panels per descriptor space (primary
    first), with the ideal copier (exact empirical flow of each training set) as a reference; with
    a fit, the MtoG collapse too (primary space, copy share, and E_gen in the other spaces)."""
    _require(rows, SCALING, "scaling")
    spaces = [s for i, s in enumerate(spaces) if i == 0 or f"e_gen_{s}" in rows[0]] or [""]
    groups = _by_student(rows, "n")
    colors = _colors(len(groups))
    fig = Figure(figsize=(13, 3.6 * len(spaces)), layout="constrained")
    axes = fig.subplots(len(spaces), 3, squeeze=False)
    for i, (space, ax_row) in enumerate(zip(spaces, axes)):
        suffix = "" if i == 0 else f"_{space}"
        for (student, params, g), c in zip(groups, colors):
            label = f"{student} ({params:,})"
            log_n = np.log2(_col(g, "n"))
            _errorbar(ax_row[0], log_n, g, f"e_gen{suffix}", color=c, label=label)
            _errorbar(ax_row[1], log_n, g, f"e_mem{suffix}", color=c, label=label)
            _copy_share(ax_row[2], log_n, g, f"mem_ratio{suffix}", color=c, label=label)
        _copier_line(ax_row[0], copier_rows, f"e_gen{suffix}")
        for ax, name in zip(ax_row, ("E_gen", "E_mem", "copy share (95% CI)")):
            ax.set(xlabel="log2 N", ylabel=name + _space_label(space))
            ax.grid(alpha=0.3)
        ax_row[0].legend(fontsize=7, title="student (|θ|)", title_fontsize=7)
    paths = [_save(fig, Path(out_dir) / "scaling.png")]
    if fit is None:
        return paths

    others = [(s, f) for s, f in (space_fits or {}).items() if s != spaces[0] and f is not None]
    fig = collapse_figure(groups, fit, copy_fit, others, spaces[0])
    paths.append(_save(fig, Path(out_dir) / "collapse.png"))
    return paths


def collapse_figure(groups: list, fit: CollapseFit, copy_fit: CollapseFit | None,
                    others: Sequence[tuple[str, CollapseFit]], space: str) -> Figure:
    """The MtoG collapse on a grid of panels, two per row (E_gen, E_mem, copy share, E_gen in the
    other spaces), each with its legend. A degenerate fit (``CollapseFit.degenerate``) is not drawn:
    its panel plots against the E_gen fit's coordinate (log2 N when that one is degenerate too)."""
    base = fit.alpha if fit.ok else 0.0
    panels = [("e_gen", fit, "E_gen (dashed: fit)" + _space_label(space), _errorbar),
              ("e_mem", None, "E_mem" + _space_label(space), _errorbar)]
    if copy_fit is not None:
        panels.append(("mem_ratio", copy_fit, "copy share" + _space_label(space), _copy_share))
    panels += [(f"e_gen_{s}", f, f"E_gen ({s})", _errorbar) for s, f in others]
    rows = -(-len(panels) // 2)
    fig = Figure(figsize=(12.8, 4.4 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False).ravel()
    colors = _colors(len(groups))
    for ax, (col, f, name, draw) in zip(axes, panels):
        alpha = f.alpha if f is not None and f.ok else base
        for (student, params, g), c in zip(groups, colors):
            draw(ax, collapse_x(_col(g, "n"), params, alpha), g, col, color=c, label=student,
                 ls="none" if f is not None else "-")
            if f is not None and f.ok and params in f.sizes:  # a control family is not fitted
                log_n = np.linspace(np.log2(_col(g, "n")).min(), np.log2(_col(g, "n")).max(), 200)
                ax.plot(collapse_x(2.0 ** log_n, params, alpha), f.predict(2.0 ** log_n, params), "--", color=c, lw=1)
        if f is None:
            title = ""
        elif f.ok:
            title = f"α = {f.alpha:.2f} ({f.alpha_ci[0]:.2f}–{f.alpha_ci[1]:.2f}), R² = {f.r2:.2f}"
        else:
            title = "degenerate fit, not drawn: " + "; ".join(f.degenerate)
        if col in ("e_gen", "e_mem") and fit.ok:
            ax.axvline(fit.midpoint, color="gray", lw=0.8, ls=":")
        ax.set_title(title, fontsize=9, wrap=True)
        ax.set(xlabel=f"log2(N / |θ|^{alpha:.2f})" if alpha else "log2 N", ylabel=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="student", title_fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(f"E_gen{_space_label(space)} collapses on N / |θ|^α with α = {fit.alpha:.3f} "
                 f"(95% CI {fit.alpha_ci[0]:.3f}–{fit.alpha_ci[1]:.3f}), R² = {fit.r2:.3f}" if fit.ok else
                 f"E_gen{_space_label(space)}: degenerate collapse fit ({'; '.join(fit.degenerate)})", fontsize=11)
    return fig


def _mark(ax, report: DynamicsReport | None) -> None:
    """Hollow markers at a detected early-learning minimum and double-descent minima and peak."""
    if report is None:
        return
    labelled = {h.get_label() for h in ax.get_lines()}

    def mark(x, y, style, color, label):
        ax.plot(x, y, style, color=color, ms=9, mfc="none", label=None if label in labelled else label)
        labelled.add(label)

    if report.early_learning:
        mark(report.min_epoch, report.min_value, "v", "red", "early-learning minimum (smoothed curve)")
    dd = report.double_descent
    if dd is not None:
        mark([dd.first_min_epoch, dd.second_min_epoch], [dd.first_min_value, dd.second_min_value], "s",
             "purple", "double descent: minima")
        mark(dd.peak_epoch, dd.peak_value, "^", "purple", "double descent: peak")


def plot_dynamics(rows: Rows, reports: dict[str, DynamicsReport] | None, out_dir: str | os.PathLike, *,
                  spaces: Sequence[str] = ("",)) -> list[Path]:
    """One row of panels per N: E_gen (primary space), E_gen in the other spaces, E_mem, train/test
    loss against epochs; marks detected shapes. Columns carry headers, the x axis the epoch size."""
    _require(rows, DYNAMICS, "dynamics")
    reports = reports or {}
    ns = sorted({r["n"] for r in rows})
    extra = [s for s in spaces[1:] if f"e_gen_{s}" in rows[0]]
    groups = _by_student(rows, "epoch")
    colors = _colors(len(groups))
    per_epoch = [r["images"] / r["epoch"] for r in rows if r.get("epoch") and r.get("images")]
    unit = f"epoch (1 epoch = {per_epoch[0]:,.0f} images)" if per_epoch else "epoch"
    headers = ([f"E_gen{_space_label(spaces[0])}"] + [f"E_gen ({s})" for s in extra]
               + [f"E_mem{_space_label(spaces[0])}", "loss (solid: train, dashed: test)"])
    fig = Figure(figsize=(4.3 * len(headers), 3.0 * len(ns)), layout="constrained")
    axes = fig.subplots(len(ns), len(headers), squeeze=False)
    for ax, header in zip(axes[0], headers):
        ax.set_title(header, fontsize=10, fontweight="bold")
    for ax_row, n in zip(axes, ns):
        for (student, params, g), c in zip(groups, colors):
            g = [r for r in g if r["n"] == n]
            if not g:
                continue
            epoch = _col(g, "epoch")
            _errorbar(ax_row[0], epoch, g, "e_gen", color=c, label=student)
            for j, space in enumerate(extra, start=1):
                _errorbar(ax_row[j], epoch, g, f"e_gen_{space}", color=c, label=student)
            _errorbar(ax_row[-2], epoch, g, "e_mem", color=c, label=student)
            ax_row[-1].plot(epoch, _col(g, "train_loss"), "-", color=c, label=f"{student} train")
            ax_row[-1].plot(epoch, _col(g, "test_loss"), "--", color=c, label=f"{student} test")
            _mark(ax_row[0], reports.get(dynamics_key(student, n)))
        for ax in ax_row:
            ax.set(xlabel=unit)
            ax.grid(alpha=0.3)
        ax_row[0].set_ylabel(f"N = {n} (log2 N = {np.log2(n):.0f})", fontweight="bold")
        if np.all(_col([r for r in rows if r["n"] == n], "train_loss") > 0):
            ax_row[-1].set_yscale("log")
        ax_row[0].legend(fontsize=7)
    return [_save(fig, Path(out_dir) / "dynamics.png")]


def plot_bias_variance(rows: Rows, out_dir: str | os.PathLike, *, space: str = "") -> list[Path]:
    """E_bias and E_var vs log2 N per size (solid: plug-in, dashed: unbiased finite-K estimates);
    at the largest N, E_bias² + E_var against mean E_gen². Primary space."""
    _require(rows, BIAS_VARIANCE, "bias_variance")
    groups = _by_student(rows, "n")
    colors = _colors(len(groups))
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for (student, params, g), c in zip(groups, colors):
        log_n = np.log2(_col(g, "n"))
        axes[0].plot(log_n, _col(g, "e_bias"), "o-", ms=3, color=c, label=f"{student} ({params:,})")
        axes[1].plot(log_n, _col(g, "e_var"), "o-", ms=3, color=c)
        if "e_var_unbiased" in g[0]:
            axes[0].plot(log_n, _col(g, "e_bias_unbiased"), "o--", ms=3, mfc="none", color=c, lw=1)
            axes[1].plot(log_n, _col(g, "e_var_unbiased"), "o--", ms=3, mfc="none", color=c, lw=1)
    axes[0].set(xlabel="log2 N", ylabel="E_bias" + _space_label(space) + " (dashed: unbiased)")
    axes[1].set(xlabel="log2 N", ylabel="E_var, squared units (dashed: unbiased)")
    axes[0].legend(fontsize=7)
    n_max = max(r["n"] for r in rows)
    top = [(s, next(r for r in g if r["n"] == n_max)) for s, _, g in groups if any(r["n"] == n_max for r in g)]
    x = np.arange(len(top))
    bias_sq = np.array([r["e_bias"] ** 2 for _, r in top])
    var = np.array([r["e_var"] for _, r in top])
    axes[2].bar(x, bias_sq, color="tab:blue", label="E_bias²")
    axes[2].bar(x, var, bottom=bias_sq, color="tab:orange", label="E_var")
    axes[2].plot(x, [r["mean_e_gen_sq"] for _, r in top], "k_", ms=22, mew=2, label="mean E_gen²")
    axes[2].set_xticks(x, [s for s, _ in top])
    axes[2].set(xlabel="student", ylabel="squared units", title=f"N = {n_max}: E_gen² = E_bias² + E_var")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return [_save(fig, Path(out_dir) / "bias_variance.png")]


MARKERS = "osD^v<>p*h"  # one per number of steps


def plot_distill(rows: Rows, out_dir: str | os.PathLike, *, steps_rows: Rows | None = None,
                 data_rows: Rows | None = None) -> list[Path]:
    """E_gen, E_mem and the copy share against log2 N per size (colour) and steps (marker), data-distilled
    students (``data_rows``, scaling.csv) of the same labels dashed; E_gen against steps at one N
    (``steps_rows``). Primary space; draws only."""
    labels = list(dict.fromkeys(r["student"] for r in sorted(rows, key=lambda r: r["params"])))
    colour = dict(zip(labels, _colors(len(labels))))
    steps = sorted({r["steps"] for r in rows})
    fig = Figure(figsize=(17, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    columns = (("e_gen", "E_gen"), ("e_mem", "E_mem"), ("mem_ratio", "copy share"))
    for (_, label, s), g in distill_curves(rows).items():
        x = np.log2([r["n"] for r in g])
        for ax, (col, _) in zip(axes, columns):
            err = ([r.get(f"{col}_stderr") or 0.0 for r in g] if col != "mem_ratio" else  # Wilson interval
                   np.clip([[r[col] - r.get(f"{col}_ci_low", r[col]) for r in g],
                            [r.get(f"{col}_ci_high", r[col]) - r[col] for r in g]], 0, None))
            ax.errorbar(x, [r[col] for r in g], yerr=err, marker=MARKERS[steps.index(s) % len(MARKERS)], ms=4,
                        capsize=2, color=colour[label], label=f"{label}, {steps_label(s)}")
    for (_, label, _), g in distill_curves([r for r in data_rows or [] if r["student"] in colour]).items():
        x = np.log2([r["n"] for r in g])
        for ax, (col, _) in zip(axes, columns):
            ax.plot(x, [r[col] for r in g], ls="--", lw=1, color=colour[label], label=f"{label}, data-distilled")
    for ax, (_, name) in zip(axes, columns):
        ax.set(xlabel="log2 N", ylabel=name)
    axes[0].legend(fontsize=6)
    _steps_panel(axes[3], steps_rows, colour)
    for ax in axes:
        ax.grid(alpha=0.3)
    return [_save(fig, Path(out_dir) / "distill.png")]


def _steps_panel(ax, steps_rows: Rows | None, colour: dict) -> None:
    """E_gen against steps, one line per student at the sweep's N."""
    by_label: dict[str, list[dict]] = {}
    for r in steps_rows or []:
        by_label.setdefault(r["student"], []).append(r)
    for label, g in by_label.items():
        g = sorted(g, key=lambda r: r["steps"])
        ax.errorbar([r["steps"] for r in g], [r["e_gen"] for r in g], yerr=[r.get("e_gen_stderr") or 0.0 for r in g],
                    marker="o", ms=4, capsize=2, color=colour.get(label), label=f"{label}, N = {g[0]['n']}")
    if by_label:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=6)
    ax.set(xlabel="steps", ylabel="E_gen", title="E_gen against steps" + ("" if steps_rows else " (no sweep)"))


def plot_metrics(panels: Sequence[tuple[str, dict[str, tuple[Sequence[float], Sequence[float], str]]]],
                 out_dir: str | os.PathLike, *, emphasis: str = "", space: str = "") -> list[Path]:
    """Several metrics against log2 N on one normalised axis, one panel per student size.

    ``panels``: [(title, {metric label: (log2 N, normalised values, scale)})], already normalised
    (``scale`` "ends": 1 at the smallest N, 0 at the largest, solid; "range": own min–max, dashed);
    ``emphasis``: the label drawn bold black (PFD)."""
    if not panels:
        raise PFDistError("no rows to plot for metrics")
    labels = list(dict.fromkeys(label for _, curves in panels for label in curves))
    from matplotlib import colormaps

    colors = {x: colormaps["tab10"](i) for i, x in enumerate(x for x in labels if x != emphasis)}
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.3 * cols, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (title, curves) in zip(axes, panels):
        for label, (log_n, values, scale) in curves.items():
            bold = label == emphasis
            ax.plot(log_n, values, "o" + ("-" if scale == "ends" else "--"), ms=4 if bold else 3,
                    lw=2.4 if bold else 1.2, color="black" if bold else colors[label], zorder=3 if bold else 2,
                    label=label + ("" if scale == "ends" else " (min–max)"))
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axhline(1, color="0.6", lw=0.6)
        ax.set(xlabel="log2 N", ylabel="normalised value" + _space_label(space), title=title)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return [_save(fig, Path(out_dir) / "metrics.png")]


def _to_unit_range(images: np.ndarray) -> np.ndarray:
    lo, hi = float(images.min()), float(images.max())
    if lo >= 0.0 and hi <= 1.0:
        return images
    if lo >= -1.5 and hi <= 1.5:  # EDM convention [-1, 1]; samples may overshoot a little
        return np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    return (images - lo) / max(hi - lo, 1e-12)


def plot_sample_grid(images: np.ndarray, path: str | os.PathLike, *,
                     rows_labels: Sequence[str] | None = None) -> list[Path]:
    """Tile images (K, C, H, W), C in {1, 3}: values in [0, 1] as is; within [-1.5, 1.5] read as
    [-1, 1] (EDM) and clipped; anything else min-max scaled over the whole grid.

    With ``rows_labels`` the K images fill len(rows_labels) rows in order (e.g. teacher, then each
    student, on the same seeds); otherwise the grid is near square.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise PFDistError(f"images must be (K, C, H, W) with C in (1, 3) and K > 0, got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise PFDistError("images contain NaN or Inf")
    k, c, h, w = images.shape
    n_rows = len(rows_labels) if rows_labels else int(np.ceil(np.sqrt(k)))
    if rows_labels and k % n_rows:
        raise PFDistError(f"{k} images do not fill {n_rows} labelled rows evenly")
    n_cols = int(np.ceil(k / n_rows))
    canvas = np.ones((n_rows * (h + 1) + 1, n_cols * (w + 1) + 1, c))
    tiles = _to_unit_range(images).transpose(0, 2, 3, 1)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, n_cols)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = tile
    fig = Figure(figsize=(max(2.0, 0.6 * n_cols + 1.0), max(2.0, 0.6 * n_rows)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(n_rows)] if rows_labels else [],
                  list(rows_labels) if rows_labels else [])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return [_save(fig, path)]
