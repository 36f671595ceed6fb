"""``metrics.jsonl``: a training run's per-epoch record, rewritten with each checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}_"))
        else:  # NaN / Inf (e.g. the train loss "before epoch 1") are not JSON; they become null
            out[f"{prefix}{key}"] = None if isinstance(value, float) and not math.isfinite(value) else value
    return out


def write_metrics(out_dir: Path, history: list[float], evaluations: list[dict[str, Any]], images_per_epoch: int) -> Path:
    """``metrics.jsonl``: one JSON object per epoch (0 only when evaluated), as EDM's stats.jsonl.

    Each line has ``epoch``, ``images``, ``epoch_train_loss`` and, at evaluated epochs, the
    callback's record flattened (``e_gen: {"pfd": ...}`` becomes ``e_gen_pfd``), so that
    ``pandas.read_json(path, lines=True)`` gives one tidy table. Rewritten atomically with
    each checkpoint, so it always matches the checkpoint's state.
    """
    import json

    from pfdist.atomic import atomic_write_text

    evaluated = {r["epoch"]: r for r in evaluations}
    epochs = ([0] if 0 in evaluated else []) + list(range(1, len(history) + 1))
    lines = []
    for e in epochs:
        row = {"epoch": e, "images": e * images_per_epoch, "epoch_train_loss": history[e - 1] if e else None}
        row.update(_flat({k: v for k, v in evaluated.get(e, {}).items() if k != "epoch"}))
        lines.append(json.dumps(row, sort_keys=True))
    return atomic_write_text(out_dir / METRICS, "".join(line + "\n" for line in lines))
