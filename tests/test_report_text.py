"""What a report and its findings rows say about the copier, the collapse, early learning and
bias-variance: one answer each, read the way a new user reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

def _copier_rows(values, stderr):
    return [{"student": "ideal copier", "n": 2 ** (k + 1), "e_gen": v, **({} if stderr is None else {"e_gen_stderr": stderr})}
            for k, v in enumerate(values)]


def test_copier_flatness_is_a_rule_with_its_interval_not_a_hard_cutoff():
    import numpy as np

    from pfdist.analysis.findings import copier_finding
    from pfdist.analysis.spaces import FLAT, copier_plateaus

    rng = np.random.default_rng(0)
    # No effect: a flat copier measured with noise is called flat in (about) every replicate.
    flat = [copier_plateaus(_copier_rows(1.3 + 0.01 * rng.standard_normal(8), 0.01), ["kernel"])["kernel"]
            for _ in range(200)]
    assert sum(p.verdict == "flat" for p in flat) >= 195
    # A known effect: E_gen falling by a factor 1.5 with small errors is not flat.
    steep = copier_plateaus(_copier_rows(np.linspace(1.5, 1.0, 8), 0.005), ["kernel"])["kernel"]
    assert steep.verdict == "not flat" and steep.ratio_ci[0] > FLAT
    assert copier_finding({"kernel": steep}, "kernel").verdict == "check failed"
    # 1.109 just past the cutoff, with errors that cannot tell it from 1.1: flat, with its interval shown.
    edge = copier_plateaus(_copier_rows([1.0, 1.05, 1.109], 0.02), ["kernel"])["kernel"]
    assert edge.ratio == pytest.approx(1.109) and edge.ratio_ci[0] < FLAT < edge.ratio_ci[1]
    row = copier_finding({"kernel": edge}, "kernel")
    assert row.verdict == "check passed" and "95% CI" in row.measured and "flat" in row.measured
    # No standard errors: no verdict rather than a guess.
    bare = copier_plateaus(_copier_rows([1.0, 1.05, 1.109], None), ["kernel"])["kernel"]
    assert bare.verdict == "no interval" and copier_finding({"kernel": bare}, "kernel").verdict == "not measured"


def test_report_summary_and_findings_row_give_the_copier_one_answer():
    from pfdist.analysis.findings import copier_finding
    from pfdist.analysis.spaces import copier_plateaus
    from pfdist.experiments import STUDIES
    from pfdist.experiments.studies import RunData

    plateaus = copier_plateaus(_copier_rows([1.0, 1.05, 1.109], 0.02), ["kernel", "pixels"])
    text = " ".join(STUDIES["copier"].summary(plateaus, RunData(Path("."), ("kernel", "pixels"), {}, {})))
    assert plateaus["kernel"].describe() in text and copier_finding(plateaus, "kernel").verdict == "check passed"


def _share_rows(high: float, alpha: float = 0.5, sizes=(2 ** 12, 2 ** 14, 2 ** 16)):
    """A copy share falling from ``high`` to 0.05 at N ~ |θ|^alpha, three sizes, 9 N each."""
    from scipy.special import expit

    rng = np.random.default_rng(1)
    rows = []
    for p in sizes:
        for k in range(2, 16):
            x = np.log2(2.0 ** k) - alpha * np.log2(p)
            share = 0.05 + (high - 0.05) * expit(-(x - 1.0) / 0.7) + rng.normal(0, 0.005)
            e_gen = 0.8 + 0.4 * expit(-(x - 1.0) / 0.7) + rng.normal(0, 0.005)
            rows.append({"student": f"w{p}", "params": p, "n": 2 ** k, "e_gen": e_gen, "e_gen_stderr": 0.005,
                         "e_gen_pixels": 5 * e_gen, "e_gen_pixels_stderr": 0.025,
                         "e_mem": 1.0 - 0.3 * expit(-x), "e_mem_stderr": 0.005, "mem_ratio": share,
                         "mem_ratio_ci_low": share - 0.01, "mem_ratio_ci_high": share + 0.01,
                         "train_loss": 0.1, "test_loss": 0.2})
    return rows




def test_collapse_fits_on_bounds_or_outside_a_share_range_are_flagged_degenerate():
    from pfdist.analysis import fit_collapse_rows

    good = fit_collapse_rows(_share_rows(0.9), column="mem_ratio")
    assert good.ok and abs(good.alpha - 0.5) < 0.05  # no effect: an ordinary fit is not flagged
    over = fit_collapse_rows(_share_rows(1.09), column="mem_ratio")
    assert not over.ok and any("outside [0, 1]" in r for r in over.degenerate)
    steep = fit_collapse_rows(_share_rows(0.9, alpha=3.0, sizes=(4, 8, 16)), column="mem_ratio")
    assert any(r.startswith("α") and "bound 1.5" in r for r in steep.degenerate)


def test_collapse_figure_is_a_legible_grid_with_legends_and_no_degenerate_fit_drawn(tmp_path):
    from matplotlib.image import imread

    from pfdist.analysis.collapse import fit_collapse_rows, fit_scaling
    from pfdist.experiments.outcome import analyze_run, report_sections, summary_sentences
    from pfdist.experiments.studies import RunData
    from pfdist.plots import _by_student, collapse_figure, plot_scaling
    from pfdist.report import write_report

    rows = _share_rows(1.09)
    fit, copy_fit = fit_scaling(rows)
    assert fit.ok and not copy_fit.ok
    others = [("pixels", fit_collapse_rows(rows, column="e_gen_pixels"))]
    fig = collapse_figure(_by_student(rows, "n"), fit, copy_fit, others, "kernel")
    used = [ax for ax in fig.axes if ax.axison]
    assert len(used) == 4 and len({ax.get_position().y0 for ax in used}) == 2  # 2 x 2, not 4 in a row
    assert all(ax.get_legend() is not None for ax in used)
    share = used[2]
    assert not [ln for ln in share.get_lines() if ln.get_linestyle() == "--"]  # the degenerate fit is not drawn
    assert "degenerate fit" in share.get_title()
    assert [ln for ln in used[0].get_lines() if ln.get_linestyle() == "--"]  # the good one is
    png = plot_scaling(rows, fit, tmp_path, copy_fit=copy_fit)[-1]
    height, width = imread(png).shape[:2]
    # Tick labels as the report's HTML shows them (at most 1100 px wide): at least 9 px tall.
    tick_pt = used[0].get_xticklabels()[0].get_fontsize()
    assert tick_pt * 110 / 72 * min(1.0, 1100 / width) >= 9 and width / height < 2.5
    found = analyze_run(RunData(tmp_path, ("pixels",), {"scaling.csv": rows}, {}))
    md, _ = write_report(tmp_path, config={}, summary=summary_sentences(found), sections=report_sections(found),
                         wall_time_s=1.0, figures=[png])
    text = md.read_text()
    assert "Degenerate fit" in text and "copy share (pixels, Gu et al.): degenerate fit" in text, text


def test_an_early_learning_minimum_picked_on_the_smoothed_curve_says_so_and_gives_the_raw_one():
    from pfdist.analysis import detect_dynamics
    from pfdist.analysis.findings import early_learning_finding
    from pfdist.experiments.studies.dynamics import dynamics_blocks

    epochs = np.arange(0, 82, 4.0)
    y = 1.35 + 0.004 * (epochs - 24) ** 2 / 16  # smooth minimum 1.35 at epoch 24, rising to 1.5+
    y[epochs == 12] = y[epochs == 12] - 0.05  # one low raw point at epoch 12 between higher neighbours
    r = detect_dynamics(epochs, y, e_gen_stderr=np.full(y.shape, 0.003))
    assert r.early_learning and r.min_epoch == 24 and r.raw_min_epoch == 12
    assert r.raw_min_value == pytest.approx(float(y.min())) and r.raw_min_value < r.min_value
    from pfdist.analysis import judge_dynamics

    rows = [{"student": "w8", "params": 100, "n": 64, "epoch": float(e), "e_gen": float(v), "e_gen_stderr": 0.003,
             "mem_ratio": 0.5, "mem_ratio_ci_low": 0.45, "mem_ratio_ci_high": 0.55, "train_loss": 1.0 / (1.0 + e)}
            for e, v in zip(epochs, y)]
    row = early_learning_finding({"w8 N=64": judge_dynamics(rows)})
    assert row.verdict == "reproduced"
    assert "smoothed curve" in row.measured and f"raw minimum {r.raw_min_value:.3g} @ epoch 12" in row.measured
    table = dynamics_blocks({"w8 N=64": r})[-1]
    assert "min epoch (smoothed curve)" in table[1] and any("@ 12" in str(c) for c in table[2][0])


def test_summary_and_findings_row_quote_one_bias_variance_answer():
    from pfdist.analysis.findings import bias_variance_finding
    from pfdist.experiments import STUDIES
    from pfdist.experiments.studies import RunData

    rows = [{"student": f"w{w}", "params": w * 100, "n": n, "k": 4, "e_bias": 0.9 - 0.1 * i, "e_var": 0.05 + 0.01 * i,
             "e_bias_unbiased": 0.88 - 0.1 * i, "e_var_unbiased": 0.0667 + 0.0133 * i, "mean_e_gen_sq": 1.0}
            for i, w in enumerate((8, 16, 32)) for n in (64, 4096)]
    text = " ".join(STUDIES["bias_variance"].summary(rows, RunData(Path("."), ("pixels",), {}, {})))
    row = bias_variance_finding(rows)
    assert "unbiased estimates" in text and "unbiased estimates" in row.measured
    for r in rows[1::2]:  # N = 4096: the numbers the findings row quotes
        assert f"{r['e_bias_unbiased']:.3g} / {r['e_var_unbiased']:.3g}" in text
        assert f"{r['e_bias_unbiased']:.3g}" in row.measured
    assert f"{rows[1]['e_bias']:.3g} / {rows[1]['e_var']:.3g}" not in text  # not a second, plug-in answer


def test_pfdists_own_warnings_are_one_line_on_the_command_line(tmp_path):
    import csv

    from typer.testing import CliRunner

    from pfdist.cli import app

    rows = [r for r in _share_rows(0.9) if r["n"] <= 8]  # two N per size: no collapse fit, with a warning
    with open(tmp_path / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    r = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "warning: no collapse fit of e_gen" in r.output
    assert "UserWarning" not in r.output and "fit_scaling(rows)" not in r.output  # no Python source echo
