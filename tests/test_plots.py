"""Figures and report from a small results fixture written here; malformed CSVs fail clearly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.image import imread
from scipy.special import expit

from pfdist.analysis import collapse_x, fit_collapse_rows, read_rows
from pfdist.errors import PFDistError
from pfdist.experiments import STUDIES, analyze, draw
from pfdist.experiments.outcome import captions, report_sections, summary_sentences
from pfdist.plots import plot_bias_variance, plot_sample_grid
from pfdist.report import write_report

SCALING_COLUMNS = STUDIES["scaling"].tables["scaling.csv"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STUDENTS = {"w16": 2 ** 16, "w32": 2 ** 18, "w64": 2 ** 20}


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def scaling_rows():
    rng = np.random.default_rng(0)
    rows = []
    for (student, params), low in zip(STUDENTS.items(), (0.82, 0.79, 0.76)):
        for log2_n in range(6, 15):
            e_gen = low + (1.22 - low) * expit(-collapse_x(2 ** log2_n, params, 0.5)) + rng.normal(0, 0.005)
            e_mem = 1.19 - 0.27 * expit(-(collapse_x(2 ** log2_n, params, 0.5) + 3))
            rows.append(dict(student=student, params=params, n=2 ** log2_n, e_gen=e_gen, e_gen_stderr=0.005,
                             e_mem=e_mem, e_mem_stderr=0.005, mem_ratio=float(expit(-log2_n + 9)),
                             train_loss=0.1, test_loss=0.2))
    return rows


def dynamics_rows():
    rows = []
    for student, params in STUDENTS.items():
        for n, shape in ((64, lambda e: 1.23 + 0 * e), (4096, lambda e: 0.83 + 1e-5 * (e - 85) ** 2)):
            for epoch in range(10, 210, 10):
                rows.append(dict(student=student, params=params, n=n, epoch=epoch, e_gen=shape(epoch),
                                 e_gen_stderr=0.003, e_mem=1.0, e_mem_stderr=0.003,
                                 train_loss=1.0 / epoch, test_loss=0.02 + 0.5 / epoch))
    return rows


def bias_variance_rows():
    rows = []
    for i, (student, params) in enumerate(STUDENTS.items()):
        for n in (64, 1024, 65536):
            e_bias, e_var = 1.05 - 0.1 * i - 0.02 * np.log2(n), 0.38 - 0.004 * np.log2(n) ** 2 / 3
            rows.append(dict(student=student, params=params, n=n, k=4, e_bias=e_bias, e_var=e_var,
                             mean_e_gen_sq=e_bias ** 2 + e_var, e_gen=np.sqrt(e_bias ** 2 + e_var)))
    return rows


@pytest.fixture
def run_dir(tmp_path):
    write_csv(tmp_path / "scaling.csv", scaling_rows())
    write_csv(tmp_path / "dynamics.csv", dynamics_rows())
    write_csv(tmp_path / "bias_variance.csv", bias_variance_rows())
    return tmp_path


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 50


def test_draw_draws_every_study(run_dir):
    paths = draw(run_dir)
    assert sorted(p.name for p in paths) == ["bias_variance.png", "collapse.png", "dynamics.png", "scaling.png"]
    for p in paths:
        assert p.parent == run_dir / "figures"
        assert_png(p)
    assert not list((run_dir / "figures").glob("*.tmp"))


def test_draw_skips_missing_and_rejects_empty(tmp_path):
    with pytest.raises(PFDistError, match="has none of"):
        draw(tmp_path)
    write_csv(tmp_path / "bias_variance.csv", bias_variance_rows())
    assert [p.name for p in draw(tmp_path)] == ["bias_variance.png"]
    (tmp_path / "dynamics.csv").write_text(",".join(dynamics_rows()[0]) + "\n")  # header only: skipped
    write_csv(tmp_path / "scaling.csv", [r for r in scaling_rows() if r["student"] == "w16"])
    with pytest.warns(UserWarning, match="no collapse fit"):  # one size: no collapse figure
        paths = draw(tmp_path)
    assert [p.name for p in paths] == ["scaling.png", "bias_variance.png"]


def test_sample_grid(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.uniform(-1, 1, (12, 3, 8, 8))
    (path,) = plot_sample_grid(rgb, tmp_path / "grid.png", rows_labels=["teacher", "w16", "w64"])
    assert_png(path)
    assert_png(plot_sample_grid(rng.uniform(0, 1, (5, 1, 8, 8)), tmp_path / "gray.png")[0])
    with pytest.raises(PFDistError, match="evenly"):
        plot_sample_grid(rgb, tmp_path / "bad.png", rows_labels=["a", "b", "c", "d", "e"])
    with pytest.raises(PFDistError, match=r"\(K, C, H, W\)"):
        plot_sample_grid(rgb[:, :2], tmp_path / "bad.png")


def write_run_report(run_dir, config, figures=()):
    """The report of the run in ``run_dir`` as pfdist reproduce writes it, from its tables."""
    found = analyze(run_dir)
    return write_report(run_dir, config=config, summary=summary_sentences(found), findings=found.findings,
                        sections=report_sections(found), captions=captions(), wall_time_s=3723.4, figures=figures)


def test_report_contains_the_numbers(run_dir):
    rows = read_rows(run_dir / "scaling.csv")
    fit = fit_collapse_rows(rows)
    bv = read_rows(run_dir / "bias_variance.csv")
    figures = plot_bias_variance(bv, run_dir / "figures")
    config = {"teacher": "<gmm & co>", "sizes": list(STUDENTS)}
    md_path, html_path = write_run_report(run_dir, config, figures)
    md, page = md_path.read_text(), html_path.read_text()
    assert fit.alpha_ci[0] <= 0.5 <= fit.alpha_ci[1]
    for text in (md, page):
        assert f"{fit.alpha:.4f}" in text and f"{fit.alpha_ci[0]:.4f}" in text and f"{fit.r2:.4f}" in text
        assert f"{fit.plateau_high:.4g}" in text and f"{fit.midpoint:.4g}" in text
        assert "w16 N=4096" in text and "early_learning" in text and "absent" in text
        assert f"{bv[0]['e_bias']:.4g}" in text and "holds" in text and "1h 02m 03s" in text
    assert "figures/bias_variance.png" in md and 'src="data:image/png;base64,' in page  # self-contained
    assert "dashed: unbiased" in md  # every figure has a caption
    assert "&lt;gmm &amp; co&gt;" in page and "<gmm" not in page and "<gmm & co>" in md


def test_report_flags_a_broken_identity(tmp_path):
    bv = bias_variance_rows()
    bv[0]["mean_e_gen_sq"] += 0.01
    write_csv(tmp_path / "bias_variance.csv", bv)
    md, _ = write_run_report(tmp_path, {})
    assert "VIOLATED" in md.read_text() and "Not fitted" in md.read_text()


def test_read_rows_converts_and_rejects_malformed(tmp_path):
    write_csv(tmp_path / "scaling.csv", scaling_rows())
    row = read_rows(tmp_path / "scaling.csv", required=SCALING_COLUMNS)[0]
    assert isinstance(row["n"], int) and isinstance(row["params"], int) and isinstance(row["e_gen"], float)
    assert row["student"] == "w16"

    bad = [{k: v for k, v in r.items() if k not in ("e_mem", "n")} for r in scaling_rows()]
    write_csv(tmp_path / "scaling.csv", bad)
    with pytest.raises(PFDistError, match=r"scaling\.csv is missing columns n, e_mem"):
        read_rows(tmp_path / "scaling.csv", required=SCALING_COLUMNS)
    with pytest.raises(PFDistError, match="missing columns"):
        draw(tmp_path)

    rows = scaling_rows()
    rows[3]["e_gen"] = "oops"
    write_csv(tmp_path / "scaling.csv", rows)
    with pytest.raises(PFDistError, match=r"line 5, column 'e_gen'"):
        read_rows(tmp_path / "scaling.csv", required=SCALING_COLUMNS)
    (tmp_path / "dynamics.csv").write_text("student,params\n")
    with pytest.raises(PFDistError, match="dynamics.csv is missing columns n, epoch"):
        read_rows(tmp_path / "dynamics.csv", required=STUDIES["dynamics"].tables["dynamics.csv"])
    (tmp_path / "bias_variance.csv").write_text(",".join(bias_variance_rows()[0]) + "\n")
    assert read_rows(tmp_path / "bias_variance.csv") == []
    (tmp_path / "bias_variance.csv").write_text("student,params,n,k,e_bias,e_var,mean_e_gen_sq,e_gen\nw,1,2\n")
    with pytest.raises(PFDistError, match="line 2: expected 8 fields"):
        read_rows(tmp_path / "bias_variance.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(PFDistError, match="empty"):
        read_rows(tmp_path / "empty.csv")
    with pytest.raises(PFDistError, match="does not exist"):
        read_rows(tmp_path / "nope.csv")
