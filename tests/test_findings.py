"""The findings table (paper vs measured) and the main-family collapse, on synthetic runs whose
answers are known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from pfdist.analysis import collapse_x
from pfdist.analysis.collapse import collapse_rows, family, fit_scaling
from pfdist.analysis.findings import (bias_variance_finding, collapse_finding, copier_finding,
                                      double_descent_finding, early_learning_finding, floor_finding,
                                      memorization_finding)
from pfdist.analysis.spaces import Plateau, fit_spaces
from pfdist.experiments.outcome import analyze_run, report_sections
from pfdist.experiments.studies import RunData

def run_findings(run_dir, rows, primary="kernel"):
    """The analysis of a run whose only table is ``rows`` of scaling.csv, measured in ``primary``."""
    return analyze_run(RunData(Path(run_dir), (primary,), {"scaling.csv": rows}, {}))


SIZES = (2 ** 14, 2 ** 16, 2 ** 18, 2 ** 20)
FLOORS = (0.90, 0.80, 0.72, 0.66)
LOG2_N = range(3, 15)


def scaling_rows(alpha=0.5, floors=FLOORS, label="unet", sizes=SIZES, noise=0.005, seed=0, mem_shift=-3.0):
    """Rows of scaling.csv from the collapse model: E_gen falls from 1.41 to a floor per size at
    N ~ 2^4 |θ|^α / 2^(4α·7); E_mem rises from 0.2 to 1.3, mem_shift octaves earlier."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, low in zip(sizes, floors):
        for k in LOG2_N:
            x = collapse_x(2.0 ** k, p, alpha) + alpha * 16 - 7
            e_gen = low + (1.41 - low) * expit(-x) + rng.normal(0, noise)
            e_mem = 0.2 + 1.1 * expit(x - mem_shift) + rng.normal(0, noise)
            rows.append({"student": f"{label}-{p}", "params": p, "n": 2 ** k, "e_gen": e_gen, "e_gen_stderr": noise,
                         "e_mem": e_mem, "e_mem_stderr": noise, "mem_ratio": float(expit(-2 * x)),
                         "e_gen_pixels": e_gen * 5, "e_gen_pixels_stderr": noise * 5})
    return rows


def test_family_and_collapse_rows_keep_the_main_family():
    assert family("unet-8") == "unet" and family("mlp-w256") == "mlp-w" and family("ddpmpp-128") == "ddpmpp"
    assert family("w16") == family("w64") == "w" and family("teacher") == "teacher"
    main = scaling_rows()
    control = scaling_rows(alpha=1.2, floors=(0.5, 0.4), label="mlp", sizes=(3 * 2 ** 15, 3 * 2 ** 17), seed=1)
    assert collapse_rows(main + control) == main
    assert collapse_rows(control) == control
    # The control follows another exponent: fitted with it, alpha would be pulled away from 0.5.
    fit, _ = fit_scaling(main + control)
    assert fit.n_sizes == 4 and fit.alpha_ci[0] <= 0.5 <= fit.alpha_ci[1]
    assert fit_spaces(main + control, ("kernel", "pixels"))["pixels"].n_sizes == 4


def test_floor_finding_verdicts():
    assert floor_finding(scaling_rows()).verdict == "reproduced"
    text = floor_finding(scaling_rows(noise=0.0)).measured
    for floor in ("0.9", "0.801", "0.722", "0.665"):
        assert f": {floor} (95% CI" in text
    assert "at N = 16384" in text and "falls (drop > 1.96 combined SE) for 4 of 4 sizes" in text
    assert floor_finding(scaling_rows(floors=(0.66, 0.72, 0.8, 0.9))).verdict == "partly"  # falls, wrong order
    assert floor_finding(scaling_rows(floors=(1.41,) * 4)).verdict == "not reproduced"  # nothing falls
    assert floor_finding([]).verdict == "not measured"


def test_floor_finding_states_the_other_spaces_floors_of_the_main_family():
    main = scaling_rows(noise=0.0)
    control = scaling_rows(alpha=1.2, floors=(0.5, 0.4), label="mlp", sizes=(3 * 2 ** 15, 3 * 2 ** 17), seed=1)
    pixels = RunData(Path("."), ("kernel", "pixels"), {"scaling.csv": main + control}, {}).space_rows(
        "scaling.csv", "pixels")
    row = floor_finding(main + control, {"pixels": pixels})
    assert row.verdict == floor_finding(main).verdict  # the primary space's verdict
    assert row.measured.endswith("; pixels: floors 4.5 / 4 / 3.61 / 3.33")  # 5 x the kernel floors, no mlp


def test_memorization_finding_saturation_order():
    assert memorization_finding(scaling_rows(mem_shift=-4.0)).verdict == "reproduced"
    # 3 octaves on a one-octave grid: one size's gap range reaches 0, so its order is undetermined.
    close = memorization_finding(scaling_rows(mem_shift=-3.0))
    assert close.verdict == "partly" and close.measured.count("earlier") == 3
    late = memorization_finding(scaling_rows(mem_shift=+4.0))  # E_mem saturates after E_gen's floor
    assert late.verdict == "not reproduced"


def test_copier_and_collapse_findings():
    flat = Plateau("kernel", 1.30, 1.41, 8192, 8, 1.41 / 1.30, (1.05, 1.12))
    assert copier_finding({"kernel": flat}, "kernel").verdict == "check passed"
    steep = Plateau("pixels", 1.4, 7.5, 8192, 8, 7.5 / 1.4, (5.0, 5.7))
    assert copier_finding({"pixels": steep}, "pixels").verdict == "check failed"
    fit, _ = fit_scaling(scaling_rows(alpha=0.5))
    assert collapse_finding({"kernel": fit}).verdict == "reproduced"
    fit_far, _ = fit_scaling(scaling_rows(alpha=1.0))
    f = collapse_finding({"kernel": fit_far, "pixels": None})
    assert f.verdict == "partly" and "pixels: no fit" in f.measured
    fit_none, _ = fit_scaling(scaling_rows(alpha=0.0, noise=0.02))
    assert collapse_finding({"kernel": fit_none}).verdict in ("not reproduced", "partly")
    assert fit_none.alpha_ci[0] <= 0.0 + 0.1


def _dynamics_run(n, e_gen, share, loss):
    """Rows of one dynamics run: E_gen, the copy share (95% interval ± 0.05) and the training loss per epoch."""
    epochs = np.arange(0, 40, 2.0)
    return [{"student": "unet-8", "params": 1000, "n": n, "epoch": float(e), "e_gen": float(g), "e_gen_stderr": 0.005,
             "e_mem": 1.0, "e_mem_stderr": 0.005, "mem_ratio": share, "mem_ratio_ci_low": max(share - 0.05, 0.0),
             "mem_ratio_ci_high": min(share + 0.05, 1.0), "train_loss": float(loss(e)), "test_loss": 0.1}
            for e, g in zip(epochs, e_gen(epochs))]


def test_dynamics_findings_judge_the_regime_and_the_loss():
    from pfdist.analysis import judge_dynamics

    def bump(e):
        return 1.0 - 0.4 * (1 - np.exp(-e / 4)) + 0.02 * np.maximum(e - 12, 0)  # a minimum, then a rise

    def falling(e):
        return 1.0 / (1.0 + e)

    def flat_loss(e):
        return 0.2 + 0.0 * e

    def judged(**runs):
        return {key: judge_dynamics(rows) for key, rows in runs.items()}

    transition = judged(a=_dynamics_run(512, bump, 0.5, falling), b=_dynamics_run(4096, lambda e: 0.8 + 0 * e, 0.0, falling))
    early = early_learning_finding(transition)
    assert early.verdict == "reproduced" and "b: not in the transition regime" in early.measured
    # E_gen rises but the training loss has stopped falling: not early learning.
    assert early_learning_finding(judged(a=_dynamics_run(512, bump, 0.5, flat_loss))).verdict == "not reproduced"
    # The same rise outside the transition regime: no verdict.
    assert early_learning_finding(judged(a=_dynamics_run(512, bump, 0.0, falling))).verdict == "not measured"
    assert double_descent_finding(transition).verdict in ("not reproduced", "not measured")
    assert early_learning_finding(None).verdict == "not measured"


def test_bias_variance_finding():
    def rows(bias, var):
        return [{"student": f"unet-{i}", "params": p, "n": n, "k": 3, "e_bias": b + 0.1, "e_var": v / 2,
                 "e_bias_unbiased": b, "e_var_unbiased": v}
                for n in (32, 2048) for i, (p, b, v) in enumerate(zip(SIZES, bias, var))]

    good = bias_variance_finding(rows((0.8, 0.75, 0.7, 0.68), (0.06, 0.07, 0.08, 0.1)))
    assert good.verdict == "reproduced" and "unbiased" in good.measured and "0.8 → 0.75" in good.measured
    assert bias_variance_finding(rows((0.8, 0.75, 0.7, 0.68), (0.1, 0.08, 0.07, 0.06))).verdict == "partly"
    assert bias_variance_finding(rows((0.6, 0.7, 0.7, 0.8), (0.1, 0.08, 0.07, 0.06))).verdict == "not reproduced"


@pytest.mark.parametrize("with_dynamics", [True, False])
def test_findings_list_and_report_table(tmp_path, with_dynamics):
    from pfdist.report import write_report

    found = run_findings(tmp_path, scaling_rows(mem_shift=-4.0))
    out = found.findings
    assert [f.verdict for f in out][:3] == ["reproduced", "reproduced", "reproduced"]
    assert {f.verdict for f in out[3:]} == {"not measured"} and len(out) == len({f.finding for f in out})
    md, _ = write_report(tmp_path, config={}, wall_time_s=1.0, spaces=("kernel",), findings=out,
                         sections=report_sections(found))
    text = md.read_text()
    assert "## Findings: paper vs measured" in text and "| E_gen collapses on N / \\|θ\\|^α | α ≈ 0.5 |" in text


def test_collapse_verdict_is_the_primary_space():
    fit, _ = fit_scaling(scaling_rows(alpha=0.5))
    f = collapse_finding({"kernel": None, "pixels": fit})
    assert f.verdict == "not measured" and "kernel: no fit" in f.measured and "pixels: α = 0.5" in f.measured


def test_collapse_row_takes_the_report_verdict():
    # Per-size α chosen so that the exponent between neighbouring sizes falls 0.9 → 0.5 → 0.1
    # (midpoint log2 N* = 7 + α (log2 |θ| − 16)): one α does not fit, though its interval holds 0.5.
    drift = [row for p, f, a in zip(SIZES, FLOORS, (0.9, 0.5, 0.5, 0.3))
             for row in scaling_rows(alpha=a, sizes=(p,), floors=(f,), seed=int(np.log2(p)))]
    fit, _ = fit_scaling(drift)
    out = {f.finding: f for f in run_findings(Path("."), drift).findings}
    row = out["E_gen collapses on N / |θ|^α"]
    assert row.verdict == "partly" and "collapse test rejects one α" in row.measured
    assert "α between neighbouring sizes 0.9" in row.measured
    assert collapse_finding({"kernel": fit}).verdict == "reproduced"  # the interval alone is fooled
    good = run_findings(Path("."), scaling_rows()).findings[2]
    assert good.verdict == "reproduced" and "one-α test p = " in good.measured


def test_a_constant_table_is_refused_not_crashed():
    """A copy share of 0 at every N and size (a tiny run) has nothing to fit: one clear error, and
    fit_scaling warns and gives no fit instead of a solver crash on empty bounds."""
    from pfdist.analysis import fit_collapse
    from pfdist.errors import PFDistError

    rows = [{"student": f"w{p}", "params": p, "n": n, "e_gen": 1.0 + 0.1 * (n < 8), "e_gen_stderr": 0.01,
             "mem_ratio": 0.0} for p in (100, 200, 400, 800) for n in (2, 8, 32)]
    with pytest.raises(PFDistError, match="no transition to fit"):
        fit_collapse([r["n"] for r in rows], [r["params"] for r in rows], [r["mem_ratio"] for r in rows])
    with pytest.warns(UserWarning, match="no collapse fit of mem_ratio"):
        assert fit_scaling(rows)[1] is None
