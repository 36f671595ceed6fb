"""The paper's baselines beside PFD along the MtoG sweep: FD, KID, the memorization ratio, RP and GL.

It trains nothing: it reads the scaling study's finished students (their cached outputs on the
evaluation seeds), the teacher's and each training set, so it runs only beside a scaling study.
Table ``metrics.csv``, one row per scaling (student, N), every value with a standard error:

- ``e_gen``: PFD's E_gen from the scaling record, in the study's space Ψ;
- ``frechet_distance``: FD² (:func:`pfdist.metrics.frechet_distance`) of Ψ(student samples) and
  Ψ(teacher samples on the test seeds, independent of the evaluation seeds, as FID compares
  independent sets); error: delete-one-subset jackknife over ``subsets`` disjoint subsets;
- ``kid``: :func:`pfdist.metrics.kid` on each pair of disjoint subsets, their mean, error their
  standard deviation / √subsets;
- ``memorization_ratio``: Gu et al.'s rule (:func:`pfdist.metrics.memorization_ratio`, 1/3) on the
  student's samples against its own training set, on uint8-quantised pixels (images in [-1, 1],
  ℓ2 on 0..255) or, for data that are not images, on the raw vectors (column
  ``memorization_features``); binomial error (Agresti–Coull, :func:`binomial_stderr`);
- ``reproducibility_score``: RP of student and teacher on the same seeds, in Ψ; binomial error;
- ``generalization_score``: GL of the student's samples against its training set, in Ψ; binomial error.

Analysis: each metric against N for each student, with the rules of :mod:`pfdist.analysis.trends`
(sees the transition, non-monotone, flat at an end). Findings row: "PFD vs FD/KID on the MtoG
transition".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.metrics import (copy_features, frechet_distance, generalization_score, kid, memorization_ratio,
                            reproducibility_score)
from pfdist.experiments.studies.base import Block, RunData, Study, fields_of, group_rows
from pfdist.experiments.studies.scaling import STUDY as SCALING
from pfdist.protocol import TEST_SEED, teacher_samples
from pfdist.descriptors import describe

TABLE = "metrics.csv"
# Column -> label, PFD first.
METRICS = {"e_gen": "PFD E_gen", "frechet_distance": "FD²", "kid": "KID", "memorization_ratio": "memorization ratio",
           "reproducibility_score": "RP score", "generalization_score": "GL score"}
COLUMNS = ["student", "params", "n", "space", *(c for m in METRICS for c in (m, f"{m}_stderr")),
           "memorization_features"]


@dataclass(frozen=True)
class Metrics:
    """The baselines beside PFD on the scaling students. ``space``: the descriptor (a name of the
    preset's) FD, KID, RP and GL are measured in, None for the primary; ``subsets``: disjoint
    subsets of the samples for KID and for FD's jackknife error."""

    space: str | None = None
    subsets: int = 10

    def __post_init__(self) -> None:
        if self.space is not None and not isinstance(self.space, str):
            raise PFDistError(f"metrics.space must be a descriptor name of the preset or null (got {self.space!r}).")
        checks.integer("metrics.subsets", self.subsets, lo=2)


@dataclass(frozen=True)
class MetricsResult:
    rows: list[dict[str, Any]]
    space: str
    trends: dict[tuple[int, str], dict[str, Any]]  # (params, student) -> {metric: Trend}, smallest model first


class MetricsStudy(Study):
    name = "metrics"
    tables = {TABLE: ("student", "params", "n", *(c for m in METRICS for c in (m, f"{m}_stderr")))}
    rescorable = False  # its space is named in its config; rescore does not rewrite it
    captions = {"metrics": "Every metric against log2 N for each student size, normalised: 1 at the smallest N and 0 "
                           "at the largest where those differ beyond 2 standard errors (a reversal leaves [0, 1]), "
                           "else the metric's own min → 0 and max → 1 (dashed). Bold black: PFD's E_gen."}

    def from_dict(self, d: Any) -> Metrics:
        m = fields_of(d, "metrics", set(), {"space", "subsets"})
        return Metrics(**m)

    def to_dict(self, config: Metrics) -> dict:
        return asdict(config)

    def check_preset(self, preset: Any, config: Metrics) -> None:
        scaling = preset.studies.get("scaling")
        if scaling is None:
            raise PFDistError("the metrics study measures the scaling study's students: add a scaling study to the "
                              "preset, or remove metrics.")
        if config.space is not None and config.space not in preset.spaces:
            raise PFDistError(f"metrics.space {config.space!r} is not one of the preset's descriptors "
                              f"({', '.join(preset.spaces)}); name one of them, or null for the primary.")
        smallest = min(preset.eval.num_samples, preset.eval.test_samples)
        if smallest < 2 * config.subsets:
            raise PFDistError(f"metrics.subsets = {config.subsets} leaves fewer than 2 of the {smallest} samples per "
                              f"subset; use subsets <= {smallest // 2} or more eval samples.")
        if min(scaling.ns) < 2:
            raise PFDistError("the memorization ratio needs a nearest and a second-nearest training point: the "
                              "scaling study's smallest N must be at least 2 when metrics is on.")

    def write(self, reader, config: Metrics) -> list[Path]:
        ctx, ev = reader.ctx, reader.ctx.preset.eval
        space = config.space or reader.primary
        psi = reader.spaces[space]
        reference = teacher_samples(ctx.teacher, range(TEST_SEED, TEST_SEED + ev.test_samples), shape=ctx.shape,
                                    flow=ev.flow, device=ctx.device, cache_dir=ctx.cache)
        teacher_f = describe(ctx.teacher_outputs.values, psi, ev.batch_size)
        reference_f = describe(reference, psi, ev.batch_size)
        train_f: dict[int, torch.Tensor] = {}
        rows = []
        for unit in SCALING.units(ctx.preset.studies["scaling"]):
            if (rec := reader.result(unit)) is None:
                continue
            train = ctx.train_data(unit)
            if unit.n not in train_f:
                train_f[unit.n] = describe(train, psi, ev.batch_size)
            samples = reader.student_values(unit)
            pfd = reader.recorded(rec)[space]
            rows.append({"student": unit.student.label, "params": rec["params"], "n": unit.n, "space": space,
                         "e_gen": pfd["e_gen"], "e_gen_stderr": pfd["e_gen_stderr"],
                         **baselines(samples, train, describe(samples, psi, ev.batch_size), teacher_f, reference_f,
                                     train_f[unit.n], subsets=config.subsets, seed=ev.seed)})
        return [reader.write_csv(TABLE, COLUMNS, rows)]

    def analyze(self, run: RunData) -> MetricsResult | None:
        from pfdist.analysis.trends import curve

        rows = run.rows.get(TABLE)
        if not rows:
            return None
        groups = group_rows(rows, "params", "student")
        trends = {}
        for key, g in sorted(groups.items()):
            g = sorted(g, key=lambda r: r["n"])
            if len(g) >= 2:
                ns = [r["n"] for r in g]
                fitted = {m: curve(ns, [r[m] for r in g], [r[f"{m}_stderr"] for r in g]) for m in METRICS}
                trends[key] = {m: t for m, t in fitted.items() if t is not None}
        space = rows[0].get("space")
        return MetricsResult(rows, space if isinstance(space, str) else run.primary, trends)

    def figures(self, result: MetricsResult | None, run: RunData, out_dir: Path) -> list[Path]:
        from pfdist.analysis.trends import normalise
        from pfdist.plots import plot_metrics

        if result is None or not result.trends:
            return []
        panels = []
        for (params, student), by_metric in result.trends.items():
            curves = {}
            for m, t in by_metric.items():
                values, scale = normalise(t)
                curves[METRICS[m]] = ([math.log2(n) for n in t.ns], list(values), scale)
            panels.append((f"{student} (|θ| = {params:,})", curves))
        return plot_metrics(panels, out_dir, emphasis=METRICS["e_gen"], space=result.space)

    def findings(self, result: MetricsResult | None, run: RunData) -> list:
        return [metrics_finding(result)]

    def summary(self, result: MetricsResult | None, run: RunData) -> list[str]:
        if result is None or not result.trends:
            return []
        return [f"Baselines beside PFD ({result.space} space): " + "; ".join(_tally(result)) + "."]

    def report(self, result: MetricsResult | None, run: RunData) -> list[Block]:
        return metrics_blocks(result)

    def summary_json(self, result: MetricsResult | None, run: RunData) -> dict:
        if result is None:
            return {}
        return {"metrics": {student: {m: {"sees": t.sees, "z_end": t.z_end, "nonmonotone": t.nonmonotone,
                                          "flat_low": t.flat_low, "flat_high": t.flat_high}
                                      for m, t in by_metric.items()}
                            for (_, student), by_metric in result.trends.items()}}


STUDY = MetricsStudy()


# The measurements -----------------------------------------------------------------------------

def is_image(x: torch.Tensor) -> bool:
    """(n, C, H, W) with one or three channels: compared as uint8 pixels (pfdist.metrics.copy_features)."""
    return x.ndim == 4 and x.shape[1] in (1, 3)


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of a fraction p of n, Agresti–Coull: two successes and two failures added
    (p̃ = (np + 2) / (n + 4)), so that 0 of n or n of n still has an error (the centre of the 95%
    Wilson interval)."""
    p_tilde = (n * p + 2) / (n + 4)
    return math.sqrt(p_tilde * (1 - p_tilde) / (n + 4))


def baselines(samples: torch.Tensor, train: torch.Tensor, samples_f: torch.Tensor, teacher_f: torch.Tensor,
              reference_f: torch.Tensor, train_f: torch.Tensor, *, subsets: int, seed: int) -> dict[str, Any]:
    """Every baseline of one student (module docstring). ``samples``, ``train``: pixels (M, *shape),
    (N, *shape); ``*_f``: their features in Ψ, ``teacher_f`` on the same seeds as ``samples_f``,
    ``reference_f`` on independent ones."""

    a_parts, b_parts = samples_f.tensor_split(subsets), reference_f.tensor_split(subsets)
    fd = frechet_distance(samples_f, reference_f)
    loo = torch.tensor([frechet_distance(torch.cat(a_parts[:i] + a_parts[i + 1:]),
                                         torch.cat(b_parts[:i] + b_parts[i + 1:])) for i in range(subsets)],
                       dtype=torch.float64)
    fd_stderr = math.sqrt((subsets - 1) / subsets * ((loo - loo.mean()) ** 2).sum().item())
    size = min(min(len(p) for p in a_parts), min(len(p) for p in b_parts))
    kids = torch.tensor([kid(a, b, subsets=1, subset_size=size, seed=seed).mean for a, b in zip(a_parts, b_parts)],
                        dtype=torch.float64)
    image = is_image(samples)
    mem = memorization_ratio(copy_features(samples), copy_features(train))
    rp = reproducibility_score(samples_f, teacher_f)
    gl = generalization_score(samples_f, train_f)
    m = samples.shape[0]
    return {"frechet_distance": fd, "frechet_distance_stderr": fd_stderr,
            "kid": kids.mean().item(), "kid_stderr": kids.std().item() / math.sqrt(subsets),
            "memorization_ratio": mem.ratio, "memorization_ratio_stderr": binomial_stderr(mem.ratio, m),
            "memorization_features": "uint8 pixels" if image else "raw vectors",
            "reproducibility_score": rp, "reproducibility_score_stderr": binomial_stderr(rp, m),
            "generalization_score": gl, "generalization_score_stderr": binomial_stderr(gl, m)}


# Findings and report ----------------------------------------------------------------------------

FINDING = "PFD vs FD/KID on the MtoG transition"
PAPER = "v2 Fig. 1, App. C.1/C.4: FD, KID and the memorization ratio set beside PFD along the MtoG sweep"


def _tally(result: MetricsResult) -> list[str]:
    """Per metric: in how many sizes it sees the transition, is non-monotone, is flat at an end."""
    from pfdist.analysis.collapse import collapse_rows

    main = {(r["params"], r["student"]) for r in collapse_rows(result.rows)}
    trends = [v for k, v in result.trends.items() if k in main]
    out = []
    for m, label in METRICS.items():
        ts = [t[m] for t in trends if m in t]
        out.append(f"{label} sees it in {sum(t.sees for t in ts)}/{len(ts)} sizes (non-monotone "
                   f"{sum(t.nonmonotone for t in ts)}, flat at small / large N {sum(t.flat_low for t in ts)} / "
                   f"{sum(t.flat_high for t in ts)})")
    return out


def metrics_finding(result: MetricsResult | None) -> Any:
    """The findings row. Each metric is described by :mod:`pfdist.analysis.trends`' rules on the main
    family's sizes; the verdict concerns PFD, the paper's claim: "reproduced" when E_gen sees the
    transition (|z| > 2 between the smallest and largest N) in every size, "partly" in some, "not
    reproduced" in none. The baselines are described, not judged."""
    from pfdist.analysis.collapse import collapse_rows
    from pfdist.analysis.findings import Finding

    if result is None or not result.trends:
        return Finding(FINDING, PAPER, "no metrics table", "not measured")
    main = {(r["params"], r["student"]) for r in collapse_rows(result.rows)}
    pfd = [t["e_gen"].sees for k, t in result.trends.items() if k in main and "e_gen" in t]
    if not pfd:
        return Finding(FINDING, PAPER, "no E_gen with standard errors at two N or more", "not measured")
    verdict = "reproduced" if all(pfd) else "partly" if any(pfd) else "not reproduced"
    measured = (f"{result.space} space; a metric sees the transition when |z| > 2 between the smallest and largest N: "
                + "; ".join(_tally(result)))
    return Finding(FINDING, PAPER, measured, verdict)


def metrics_blocks(result: MetricsResult | None) -> list[Block]:
    from pfdist.analysis.trends import SATURATION, Z_END, z_pairs
    from pfdist.report import fmt

    if result is None or not result.trends:
        return []
    features = {str(r.get("memorization_features")) for r in result.rows}
    table = []
    for (params, student), by_metric in result.trends.items():
        for m, t in by_metric.items():
            table.append((student, f"{params:,}", METRICS[m], f"{fmt(t.values[0])} ± {fmt(t.stderrs[0])}",
                          f"{fmt(t.values[-1])} ± {fmt(t.stderrs[-1])}", f"{t.z_end:.3g}", "yes" if t.sees else "no",
                          "N = {} → {} → {}".format(*t.reversal) if t.reversal else "no",
                          ", ".join(e for e, f in (("small N", t.flat_low), ("large N", t.flat_high)) if f) or "–"))
    z_rev = z_pairs(len({r["n"] for r in result.rows}))
    text = (f"The paper's baselines on the scaling students, FD², KID, RP and GL in {result.space} space, the "
            f"memorization ratio (Gu et al., 1/3 rule) on {' / '.join(sorted(features))} against each student's "
            "own training set; FD² and KID compare the students' samples with the teacher's on independent seeds. "
            "A metric sees the transition when its values at the smallest and largest N differ by more than "
            f"{Z_END:g} combined standard errors (z); it is non-monotone when a significant rise and a significant "
            f"fall share a point (each step beyond z = {z_rev:.3g}, 5% Bonferroni-corrected over the pairs of N); "
            "flat at an end when its first (last) step, with 2 standard errors, stays within "
            f"{100 * SATURATION:g}% of the end-to-end change. Errors: FD² delete-one-subset jackknife, KID over "
            "disjoint subsets, binomial (Agresti–Coull) for the fractions; points at different N share seeds, "
            "which makes every test conservative.")
    header = ("student", "|θ|", "metric", "smallest N", "largest N", "z", "sees the transition", "non-monotone",
              "flat at")
    return [("h2", "Baseline metrics beside PFD"), ("p", text), ("table", header, table)]
