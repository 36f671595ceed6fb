"""The metrics study: the paper's baselines beside PFD on the scaling students, and its rules."""

import math

import pytest
import torch

import pfdist
from pfdist.analysis.findings import Finding
from pfdist.analysis.results import read_rows
from pfdist.analysis.trends import normalise, trend, z_pairs
from pfdist.experiments import Preset, Scaling, Student, reproduce
from pfdist.experiments.digits_presets import digits
from pfdist.experiments.presets import MIXTURE_TEACHER, get_preset
from pfdist.experiments.rows import student_outputs
from pfdist.experiments.studies import STUDIES, Metrics
from pfdist.experiments.units import Context
from pfdist.metrics import frechet_distance, generalization_score, kid, memorization_ratio, reproducibility_score
from pfdist.protocol import TEST_SEED, EvalConfig, teacher_samples
from pfdist.protocol.evaluate import describe
from pfdist.training import TrainConfig

TRAIN = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=2, epoch_images=512, checkpoint_every=1)
EVAL = EvalConfig(num_samples=32, test_samples=40, loss_repeats=1, flow=pfdist.FlowSettings(steps=6), batch_size=32)


def mlp(width):
    return Student(f"w{width}", {"arch": "mlp", "width": width, "depth": 1, "sigma_data": 1.0})


def tiny(shape=(4,), **changes):
    return Preset(name="tiny-metrics", teacher={**MIXTURE_TEACHER, "shape": list(shape)}, eval=EVAL,
                  scaling=Scaling((2, 8, 32), (mlp(8), mlp(16)), TRAIN),
                  descriptors=({"type": "kernel", "num_features": 64, "fit_samples": 40}, "pixels"),
                  **{"metrics": Metrics(subsets=4), **changes})


@pytest.mark.parametrize("shape", [(4,), (1, 2, 2)])
def test_metrics_csv_matches_direct_calls(tmp_path, shape):
    preset = tiny(shape)
    summary = reproduce(preset, tmp_path, show_progress=False)
    rows = read_rows(tmp_path / "metrics.csv", required=STUDIES["metrics"].tables["metrics.csv"])
    assert len(rows) == 3 * 2
    assert any(f.endswith("metrics.png") for f in summary["figures"])
    ctx = Context(preset, tmp_path)
    psi = ctx.descriptors["kernel"]
    reference = teacher_samples(ctx.teacher, range(TEST_SEED, TEST_SEED + EVAL.test_samples), shape=ctx.shape,
                                flow=EVAL.flow, cache_dir=ctx.cache)
    ref_f, teacher_f = describe(reference, psi), describe(ctx.teacher_outputs.values, psi)
    scaling = {(r["student"], r["n"]): r for r in read_rows(tmp_path / "scaling.csv")}
    for unit in STUDIES["scaling"].units(preset.scaling):
        row = next(r for r in rows if (r["student"], r["n"]) == (unit.student.label, unit.n))
        samples, train = student_outputs(ctx, unit), ctx.train_data(unit)
        s_f, train_f = describe(samples, psi), describe(train, psi)
        assert row["space"] == "kernel"
        assert row["e_gen"] == pytest.approx(scaling[unit.student.label, unit.n]["e_gen"], rel=1e-12)
        assert row["frechet_distance"] == pytest.approx(frechet_distance(s_f, ref_f), rel=1e-9)
        # KID: the mean of the unbiased MMD² over 4 disjoint subsets (8 of 32 student, 8 of 10 reference rows each).
        parts = [kid(a, b, subsets=1, subset_size=8, seed=EVAL.seed).mean
                 for a, b in zip(s_f.tensor_split(4), ref_f.tensor_split(4))]
        assert row["kid"] == pytest.approx(sum(parts) / 4, rel=1e-9, abs=1e-15)
        assert row["kid_stderr"] == pytest.approx(torch.tensor(parts).double().std().item() / 2, rel=1e-6)
        if len(shape) == 3:  # images: Gu et al. on 8-bit pixels, 0..255
            as_uint8 = lambda x: ((x.double() + 1) / 2 * 255).round().clamp(0, 255)  # noqa: E731
            mem = memorization_ratio(as_uint8(samples), as_uint8(train)).ratio
            assert row["memorization_features"] == "uint8 pixels"
        else:
            mem = memorization_ratio(samples, train).ratio
            assert row["memorization_features"] == "raw vectors"
        assert row["memorization_ratio"] == pytest.approx(mem)
        p = (32 * mem + 2) / 36  # Agresti–Coull: an error even at 0 of 32
        assert row["memorization_ratio_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 36))
        assert row["reproducibility_score"] == pytest.approx(reproducibility_score(s_f, teacher_f))
        assert row["generalization_score"] == pytest.approx(generalization_score(s_f, train_f))
        assert row["frechet_distance_stderr"] > 0
    finding = next(f for f in summary["findings"] if f["finding"] == "PFD vs FD/KID on the MtoG transition")
    assert finding["verdict"] in ("reproduced", "partly", "not reproduced")
    assert "FD²" in finding["measured"] and "KID" in finding["measured"]
    report = (tmp_path / "report.md").read_text()
    assert "Baseline metrics beside PFD" in report


def test_frechet_distance_jackknife_error_is_the_delete_one_subset_formula(tmp_path):
    from pfdist.experiments.studies.metrics import baselines

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 3, generator=g), torch.randn(60, 3, generator=g) + 0.5
    train = torch.randn(10, 3, generator=g)
    out = baselines(a, train, a, a, b, train, subsets=4, seed=0)
    loo = torch.tensor([frechet_distance(torch.cat([a[:10 * i], a[10 * (i + 1):]]),
                                         torch.cat([b[:15 * i], b[15 * (i + 1):]])) for i in range(4)]).double()
    assert out["frechet_distance_stderr"] == pytest.approx(math.sqrt(3 / 4 * ((loo - loo.mean()) ** 2).sum().item()))
    assert out["reproducibility_score"] == 1.0  # a student identical to the teacher on every seed


def test_a_run_without_metrics_says_not_measured(tmp_path):
    from pfdist.experiments.outcome import analyze_run
    from pfdist.experiments.studies import RunData

    found = analyze_run(RunData(tmp_path, ("kernel",), {}, {}))
    row = next(f for f in found.findings if f.finding == "PFD vs FD/KID on the MtoG transition")
    assert isinstance(row, Finding) and row.verdict == "not measured"


def test_bad_metrics_configs_are_refused_when_the_preset_is_built():
    with pytest.raises(pfdist.PFDistError, match="add a scaling study"):
        Preset(name="x", teacher=MIXTURE_TEACHER, eval=EVAL, metrics=Metrics())
    with pytest.raises(pfdist.PFDistError, match="not one of the preset's descriptors"):
        tiny(metrics=None).replace(metrics=Metrics(space="sscd"))
    with pytest.raises(pfdist.PFDistError, match="fewer than 2 of the 32 samples"):
        tiny().replace(metrics=Metrics(subsets=17))
    with pytest.raises(pfdist.PFDistError, match="smallest N must be at least 2"):
        tiny().replace(scaling=Scaling((1, 8), (mlp(8),), TRAIN))
    with pytest.raises(pfdist.PFDistError, match="subsets must be an integer"):
        Preset.from_dict({**tiny().to_dict(), "metrics": {"subsets": 2.5}})
    with pytest.raises(pfdist.PFDistError, match="unknown keys"):
        Preset.from_dict({**tiny().to_dict(), "metrics": {"kid": 3}})
    back = Preset.from_dict(tiny().to_dict())
    assert back.metrics == Metrics(subsets=4) and back.key() == tiny().key()


def test_metrics_is_on_in_digits_and_off_in_quick():
    assert digits().metrics == Metrics()
    assert get_preset("quick").metrics is None


# The rules, on synthetic curves -----------------------------------------------------------------

NS = (8, 32, 128, 512, 2048, 8192)


def test_no_effect_does_not_see_the_transition():
    g = torch.Generator().manual_seed(1)
    calls = []
    for _ in range(400):  # pure noise of known error: the end-to-end test at 2 SE fires ~4.6% of the time
        values = (1.0 + 0.05 * torch.randn(len(NS), generator=g)).tolist()
        t = trend(NS, values, [0.05] * len(NS))
        calls.append((t.sees, t.nonmonotone))
    assert sum(s for s, _ in calls) / len(calls) < 0.09
    assert sum(r for _, r in calls) / len(calls) < 0.05  # Bonferroni over the pairs keeps reversals rare


def test_a_known_transition_is_seen_and_flat_at_both_ends():
    # A sigmoid from 1.2 to 0.8 around N = 2^7 with small errors: seen, monotone, plateaus at both ends.
    values = [0.8 + 0.4 / (1 + math.exp((math.log2(n) - 7) / 0.5)) for n in NS]
    t = trend(NS, values, [0.002] * len(NS))
    assert t.sees and not t.nonmonotone and t.flat_low and t.flat_high
    norm, scale = normalise(t)
    assert scale == "ends" and norm[0] == 1 and norm[-1] == 0
    # The same curve with errors as large as its change: not seen, and nothing called flat.
    t = trend(NS, values, [0.3] * len(NS))
    assert not t.sees and not t.flat_low and not t.flat_high
    assert normalise(t)[1] == "range"


def test_a_known_reversal_is_non_monotone():
    # Falls, then rises back significantly (a bump beyond the Bonferroni threshold), ends still apart.
    values = [1.0, 0.5, 0.2, 0.6, 0.4, 0.3]
    t = trend(NS, values, [0.02] * len(NS))
    assert t.sees and t.reversal is not None
    assert t.nonmonotone and min(normalise(t)[0]) < 0
    # Ends equal, a hump in between: non-monotone without seeing an end-to-end change.
    t = trend(NS, [0.5, 0.5, 0.9, 0.9, 0.5, 0.5], [0.02] * len(NS))
    assert not t.sees and t.nonmonotone
    # A reversal smaller than the corrected threshold is not called.
    step = 0.02 * math.sqrt(2) * (z_pairs(len(NS)) - 0.5)
    t = trend(NS, [1.0, 1.0 - step, 1.0, 1.0, 1.0, 1.0], [0.02] * len(NS))
    assert not t.nonmonotone


def test_trend_refuses_bad_curves():
    with pytest.raises(pfdist.PFDistError, match="increasing N"):
        trend((8, 4), (1.0, 0.5), (0.1, 0.1))
    with pytest.raises(pfdist.PFDistError, match="finite"):
        trend((4, 8), (1.0, math.nan), (0.1, 0.1))


def _rows(e_gen_by_n, stderr=0.01):
    """Synthetic metrics.csv rows of two sizes: E_gen as given, every baseline flat at 1 ± 0.01."""
    rows = []
    for student, params in (("u4", 1000), ("u8", 4000)):
        for n, e in e_gen_by_n.items():
            row = {"student": student, "params": params, "n": n, "space": "kernel"}
            for m in ("frechet_distance", "kid", "memorization_ratio", "reproducibility_score", "generalization_score"):
                row[m], row[f"{m}_stderr"] = 1.0, 0.01
            rows.append({**row, "e_gen": e, "e_gen_stderr": stderr})
    return rows


def test_findings_row_follows_the_rule_on_synthetic_rows(tmp_path):
    from pfdist.experiments.studies import RunData

    study = STUDIES["metrics"]
    falls = {8: 1.2, 32: 1.19, 128: 1.0, 512: 0.81, 2048: 0.8}
    run = RunData(tmp_path, ("kernel",), {"metrics.csv": _rows(falls)}, {})
    row = study.findings(study.analyze(run), run)[0]
    assert row.verdict == "reproduced"
    assert "PFD E_gen sees it in 2/2 sizes (non-monotone 0, flat at small / large N 2 / 2)" in row.measured
    assert "FD² sees it in 0/2 sizes" in row.measured
    flat = {n: 1.0 for n in falls}
    run = RunData(tmp_path, ("kernel",), {"metrics.csv": _rows(flat)}, {})
    assert study.findings(study.analyze(run), run)[0].verdict == "not reproduced"
    run = RunData(tmp_path, ("kernel",), {"metrics.csv": _rows(falls, stderr=math.nan)}, {})
    assert study.findings(study.analyze(run), run)[0].verdict == "not measured"
