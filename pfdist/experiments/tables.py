"""Tidy CSV tables from the units' results files (one row per point; never runs a model
except to map finished students for bias-variance, which is cached)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pfdist.atomic import atomic_write_text
from pfdist.flows import flow_outputs
from pfdist.protocol import decompose, read_results
from pfdist.training import load_denoiser

if TYPE_CHECKING:
    from pfdist.experiments.units import Context

SCALING_COLUMNS = ["student", "params", "n", "e_gen", "e_gen_stderr", "e_gen_ci_low", "e_gen_ci_high", "e_mem",
                   "e_mem_stderr", "mem_ratio", "mem_ratio_ci_low", "mem_ratio_ci_high", "train_loss", "test_loss"]
DYNAMICS_COLUMNS = ["student", "params", "n", "seed", "epoch", "images", "e_gen", "e_gen_stderr", "e_mem",
                    "e_mem_stderr", "mem_ratio", "train_loss", "test_loss", "epoch_train_loss"]
REAL_COLUMNS = ["student", "params", "n", "train_data", *SCALING_COLUMNS[3:]]
BV_COLUMNS = ["student", "params", "n", "k", "e_bias", "e_var", "mean_e_gen_sq", "e_gen", "identity_gap"]


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return atomic_write_text(path, buf.getvalue())


def _point(label: str, rec: dict, entry: dict) -> dict:
    return {
        "student": label, "params": rec["params"], "n": rec["n"],
        "e_gen": entry["e_gen"]["pfd"], "e_gen_stderr": entry["e_gen"]["stderr"],
        "e_gen_ci_low": entry["e_gen"]["ci95"][0], "e_gen_ci_high": entry["e_gen"]["ci95"][1],
        "e_mem": entry["e_mem"]["pfd"], "e_mem_stderr": entry["e_mem"]["stderr"],
        "mem_ratio": entry["mem_ratio"]["value"], "mem_ratio_ci_low": entry["mem_ratio"]["ci95"][0],
        "mem_ratio_ci_high": entry["mem_ratio"]["ci95"][1],
        "train_loss": entry["train_loss"], "test_loss": entry["test_loss"],
    }


def write_tables(ctx: "Context") -> list[Path]:
    """scaling.csv, dynamics.csv, bias_variance.csv, real_vs_synthetic.csv for the finished units of
    ``ctx``'s preset."""
    from pfdist.experiments.units import Unit

    preset, written = ctx.preset, []

    def result(unit: Unit) -> dict | None:
        return read_results(ctx.unit_dir(unit), ctx.key(unit))

    if preset.scaling:
        s = preset.scaling
        rows = [_point(st.label, rec, rec) for st in s.students for n in s.ns
                if (rec := result(Unit("scaling", st, n, s.train))) is not None]
        written.append(write_csv(ctx.run_dir / "scaling.csv", SCALING_COLUMNS, rows))
    if preset.dynamics:
        d = preset.dynamics
        rows = []
        for n in d.ns:
            for seed in d.seeds:
                rec = result(Unit("dynamics", d.student, n, replace(d.train, seed=seed), 0, d.eval_epochs))
                for h in (rec or {}).get("history", []):
                    rows.append({**_point(d.student.label, rec, h), "seed": seed, "epoch": h["epoch"],
                                 "images": h["images"], "epoch_train_loss": h["epoch_train_loss"]})
        written.append(write_csv(ctx.run_dir / "dynamics.csv", DYNAMICS_COLUMNS, rows))
    if preset.bias_variance:
        b = preset.bias_variance
        rows = []
        for st in b.students:
            for n in b.ns:
                units = [Unit("bias_variance", st, n, b.train, i) for i in range(b.k)]
                recs = [result(u) for u in units]
                if any(r is None for r in recs):
                    continue
                outs = [student_outputs(ctx, u) for u in units]
                bv = decompose(ctx.teacher_outputs.values, outs)
                rows.append({"student": st.label, "params": recs[0]["params"], "n": n, "k": b.k, "e_bias": bv.e_bias,
                             "e_var": bv.e_var, "mean_e_gen_sq": bv.mean_e_gen_sq, "e_gen": bv.mean_e_gen_sq**0.5,
                             "identity_gap": bv.identity_gap})
        written.append(write_csv(ctx.run_dir / "bias_variance.csv", BV_COLUMNS, rows))
    if preset.real_vs_synthetic:
        r = preset.real_vs_synthetic
        rows = [{**_point(st.label, rec, rec), "train_data": source} for st in r.students for n in r.ns
                for source in (r.data, "teacher")
                if (rec := result(Unit("real_vs_synthetic", st, n, r.train, source=source))) is not None]
        written.append(write_csv(ctx.run_dir / "real_vs_synthetic.csv", REAL_COLUMNS, rows))
    return written


def student_outputs(ctx: "Context", unit) -> "torch.Tensor":  # noqa: F821
    ev = ctx.preset.eval
    student = load_denoiser(ctx.unit_dir(unit) / "student.safetensors", device=ctx.device)
    return flow_outputs(student, shape=ctx.shape, num_samples=ev.num_samples, seed=ev.seed, flow=ev.settings(),
                        batch_size=ev.batch_size, device=ctx.device, cache_dir=ctx.cache).values
