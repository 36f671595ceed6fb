"""A strict reader for the CSV tables a run writes (one row per measurement).

``read_rows`` parses a table with the csv module, turns numeric columns into ``int``/``float``
(an empty cell into NaN: "not measured") and raises ``PFDistError`` naming the file, the row and
the column when something is wrong. Which columns a table must have is said by whoever reads it
(each study of ``pfdist.experiments.studies`` names its tables' columns).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

from pfdist import checks
from pfdist.errors import PFDistError

STRING_COLUMNS = frozenset({"student"})
INT_COLUMNS = frozenset({"params", "n", "epoch", "k"})
TEXT_COLUMNS = frozenset({"train_data", "seeds", "space"})


def _to_int(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{text!r} is not an integer")
    return int(value)


def _convert(column: str, text: str, numeric: frozenset[str]) -> Any:
    text = text.strip()
    if column in STRING_COLUMNS:
        return text
    if column in INT_COLUMNS:
        return _to_int(text)
    if column in numeric:  # a required measurement: a number, or empty for "not measured"
        return float(text) if text else math.nan
    if not text:
        return math.nan
    try:  # an extra column: numeric if it parses, else kept as text
        return float(text)
    except ValueError:
        return text



def read_rows(path: str | os.PathLike, *, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a results CSV into a list of dicts with numeric columns converted.

    ``required``: the columns the table must have. A header with no rows (a run that has not measured anything yet) gives [].
    Raises ``PFDistError`` for a missing or empty file, missing columns, or a value that does not
    parse.
    """
    path = checks.existing_file(path, "results file")
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
        numeric = frozenset(required) - STRING_COLUMNS - INT_COLUMNS - TEXT_COLUMNS
        rows = []
        for line_no, raw in enumerate(reader, start=2):
            if None in raw or any(v is None for v in raw.values()):
                raise PFDistError(f"{path} line {line_no}: expected {len(header)} fields")
            row = {}
            for column, text in raw.items():
                try:
                    row[column] = _convert(column, text, numeric)
                except ValueError as e:
                    raise PFDistError(
                        f"{path} line {line_no}, column {column!r}: cannot parse {text!r} ({e})") from None
            rows.append(row)
    return rows

