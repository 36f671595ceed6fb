"""The distillation study's units and rows: distil a student on its N pairs (resuming from its
checkpoint), evaluate its few-step map in every descriptor space, evaluate it at each epoch of a
dynamics unit, and turn the finished units' records into the rows of the study's tables
(:mod:`pfdist.experiments.studies.distill`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pfdist.experiments.studies.base import Unit
from pfdist.experiments.studies.bias_variance import COLUMNS as BV_COLUMNS, decomposition, gram_rows

# Units --------------------------------------------------------------------------------------------

EVALUATIONS = "evaluations.json"  # the dynamics' evaluations so far (a killed unit keeps them)


def distil(ctx: Any, unit: Unit, epochs: int, progress: Any) -> Any:
    """The unit's student distilled to ``epochs`` in its directory (resuming from its checkpoint)."""
    from pfdist.maps import ode_map
    from pfdist.protocol import distill

    o = dict(unit.options)
    return distill(ode_map(ctx.teacher, ctx.preset.eval.flow), method=o["method"], steps=o["steps"],
                   num_pairs=unit.n, net=ctx.net_config(unit.student).config, train=replace(unit.train, epochs=epochs),
                   seed=unit.train.seed, dataset=unit.dataset_index, out_dir=ctx.unit_dir(unit), progress=progress)


def evaluate(ctx: Any, unit: Unit, student: Any, cache: Any) -> dict:
    """E_gen, E_mem and the copy share of a distilled map in every space of the run (primary on top)."""
    from pfdist.flows import flow_outputs
    from pfdist.protocol import copier_outputs, space_errors

    ev, named = ctx.preset.eval, ctx.descriptors
    outs = flow_outputs(student, num_samples=ev.num_samples, seed=ev.seed, batch_size=ev.batch_size, cache_dir=cache)
    teacher, train = ctx.teacher_outputs, ctx.train_data(unit)
    copier = copier_outputs(train, ev, device=ctx.device, cache_dir=ctx.cache)
    spaces = {name: space_errors(outs.values, teacher.values, copier.values, train, psi, seed=ev.seed,
                                 nfe=(outs.nfe, teacher.nfe, copier.nfe), batch_size=ev.batch_size)
              for name, psi in named.items()}
    return {**spaces[named.primary], "descriptor": named.primary, "spaces": spaces}


def evaluations(ctx: Any, unit: Unit, key: str, progress: Any) -> list[dict]:
    """The evaluations at ``unit.eval_epochs``: distilled to each in turn, each kept once done."""
    from pfdist.atomic import CorruptFileError, atomic_write_json, read_json_checked

    path, history = ctx.unit_dir(unit) / EVALUATIONS, []
    if unit.eval_epochs and path.is_file():
        try:
            saved = read_json_checked(path)
            history = saved["history"] if saved.get("key") == key else []
        except CorruptFileError:
            history = []
    images = unit.train.steps_per_epoch(unit.n) * unit.train.batch_size
    for epoch in unit.eval_epochs:
        if any(h["epoch"] == epoch for h in history):
            continue
        student = distil(ctx, unit, epoch, progress)
        history.append({"epoch": epoch, "images": epoch * images, "distill_loss": final_loss(ctx.unit_dir(unit)),
                        **evaluate(ctx, unit, student, None)})
        atomic_write_json(path, {"key": key, "history": history}, checksum=True)
    return history


def param_count(student: Any) -> int:
    from pfdist.nets import count_parameters

    return count_parameters(student.fn.net)


def final_loss(out: Path) -> float | None:
    """The last epoch's mean distillation loss, from the saved student's record."""
    from pfdist.protocol.distill import STUDENT_FILE

    info = json.loads((out / STUDENT_FILE).with_suffix(".json").read_text(encoding="utf-8"))["info"]
    history = info["distill"]["history"]
    return history[-1] if history else None


def distilled_outputs(ctx: Any, unit: Unit) -> Any:
    """A finished unit's few-step map on the evaluation seeds (cached by its evaluation)."""
    from pfdist.flows import flow_outputs
    from pfdist.protocol import load_distilled

    ev = ctx.preset.eval
    return flow_outputs(load_distilled(ctx.unit_dir(unit)), num_samples=ev.num_samples, seed=ev.seed,
                        batch_size=ev.batch_size, cache_dir=ctx.cache).values


# Rows ---------------------------------------------------------------------------------------------

def errors(reader: Any, unit: Unit, rec: dict) -> dict[str, dict]:
    """{space: POINT values}: read from the record, or recomputed from the cached maps (rescore)."""
    from pfdist.experiments.rows import point_values
    from pfdist.protocol import space_errors

    if not reader.rescore:
        return reader.recorded(rec)
    ctx, ev = reader.ctx, reader.ctx.preset.eval
    s, t, c = distilled_outputs(ctx, unit), ctx.teacher_outputs.values, reader.copier_values(unit)
    return {name: point_values(space_errors(s, t, c, ctx.train_data(unit), psi, seed=ev.seed, batch_size=ev.batch_size))
            for name, psi in reader.spaces.items()}


def base_row(unit: Unit, rec: dict) -> dict:
    o = dict(unit.options)
    return {"student": unit.student.label, "params": rec["params"], "n": unit.n, "steps": o["steps"],
            "method": o["method"]}


def point_rows(reader: Any, units: list[Unit]) -> list[dict]:
    return [{**base_row(u, rec), "distill_loss": rec.get("distill_loss"),
             **reader.spread(errors(reader, u, rec), reader.point)}
            for u in units if (rec := reader.result(u)) is not None]


def bv_rows(reader: Any, units: list[Unit], k: int) -> tuple[list[dict], list[dict]]:
    """The bias-variance table's rows and its Gram table's (the K students' residual Gram matrices)."""
    rows, grams = [], []
    for group in (units[i:i + k] for i in range(0, len(units), k)):
        recs = [reader.result(u) for u in group]
        if any(r is None for r in recs):
            continue
        values, by_space = decomposition(reader, [distilled_outputs(reader.ctx, u) for u in group])
        head = base_row(group[0], recs[0])
        rows.append({**head, "k": k, "seeds": "per_student", **reader.spread(values, BV_COLUMNS)})
        grams += gram_rows({"student": head["student"], "params": head["params"], "n": head["n"]}, by_space)
    return rows, grams


def dynamics_rows(reader: Any, units: list[Unit]) -> list[dict]:
    return [{**base_row(u, rec), "epoch": h["epoch"], "images": h["images"],
             **reader.spread(reader.recorded(h), reader.point)}
            for u in units if (rec := reader.result(u)) is not None for h in rec["history"]]
