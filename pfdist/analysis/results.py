"""The results files an experiment run writes, and a strict reader for them.

A run directory holds up to three CSV files, one row per measurement:

- ``scaling.csv``: one row per student (size label, params, N) at the end of training.
- ``dynamics.csv``: one row per (student, N, epoch).
- ``bias_variance.csv``: one row per (student, N), over K students on independent datasets.

``read_rows`` parses them with the csv module, turns numeric columns into ``int``/``float`` and
raises ``PFDistError`` naming the file, the row and the column when something is wrong.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from pfdist import checks
from pfdist.errors import PFDistError

SCALING = "scaling.csv"
DYNAMICS = "dynamics.csv"
BIAS_VARIANCE = "bias_variance.csv"

# Required columns per file name; extra columns are kept.
SCHEMAS: dict[str, tuple[str, ...]] = {
    SCALING: ("student", "params", "n", "e_gen", "e_gen_stderr", "e_mem", "e_mem_stderr",
              "mem_ratio", "train_loss", "test_loss"),
    DYNAMICS: ("student", "params", "n", "epoch", "e_gen", "e_gen_stderr", "e_mem",
               "e_mem_stderr", "train_loss", "test_loss"),
    BIAS_VARIANCE: ("student", "params", "n", "k", "e_bias", "e_var", "mean_e_gen_sq", "e_gen"),
}
STRING_COLUMNS = frozenset({"student"})
INT_COLUMNS = frozenset({"params", "n", "epoch", "k"})
_KNOWN_FLOAT_COLUMNS = frozenset(
    c for cols in SCHEMAS.values() for c in cols if c not in STRING_COLUMNS | INT_COLUMNS)


def _to_int(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{text!r} is not an integer")
    return int(value)


def _convert(column: str, text: str) -> Any:
    text = text.strip()
    if column in STRING_COLUMNS:
        return text
    if column in INT_COLUMNS:
        return _to_int(text)
    if column in _KNOWN_FLOAT_COLUMNS:
        return float(text) if text else math.nan  # an empty stderr means "not measured"
    try:  # an unknown extra column: numeric if it parses, else kept as text
        return float(text)
    except ValueError:
        return text



def read_rows(path: str | os.PathLike, *, required: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Read a results CSV into a list of dicts with numeric columns converted.

    ``required`` defaults to the schema of the file's name (``SCHEMAS``); unknown file names
    require nothing. A header with no rows (a run that has not measured anything yet) gives [].
    Raises ``PFDistError`` for a missing or empty file, missing columns, or a value that does not
    parse.
    """
    path = checks.existing_file(path, "results file")
    if required is None:
        required = SCHEMAS.get(path.name, ())
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise PFDistError(f"{path} is empty: expected a CSV header with columns {', '.join(required)}")
        missing = [c for c in required if c not in header]
        if missing:
            raise PFDistError(
                f"{path} is missing columns {', '.join(missing)} (has {', '.join(header)}); "
                f"regenerate it with the experiment that writes {path.name}")
        rows = []
        for line_no, raw in enumerate(reader, start=2):
            if None in raw or any(v is None for v in raw.values()):
                raise PFDistError(f"{path} line {line_no}: expected {len(header)} fields")
            row = {}
            for column, text in raw.items():
                try:
                    row[column] = _convert(column, text)
                except ValueError as e:
                    raise PFDistError(
                        f"{path} line {line_no}, column {column!r}: cannot parse {text!r} ({e})") from None
            rows.append(row)
    return rows

