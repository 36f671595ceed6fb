"""A run's CSV tables: each study of the registry writes its own from its units' results files.

With ``spaces`` given (``pfdist rescore``) every error is recomputed from the cached pixel maps in
the new spaces instead of read from the results files; studies whose maps are not kept (training
dynamics) are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pfdist.descriptors import NamedDescriptors
from pfdist.experiments.rows import Reader
from pfdist.experiments.studies import STUDIES


def write_tables(ctx: Any, *, spaces: NamedDescriptors | None = None, out_dir: Path | None = None) -> list[Path]:
    """The run's CSV tables, study by study in registry order; ``spaces`` recomputes them in other spaces."""
    reader = Reader(ctx, spaces, out_dir)
    written: list[Path] = []
    for study in STUDIES.values():
        config = study.config(ctx.preset)
        if config is not None and (study.rescorable or not reader.rescore):
            written += study.write(reader, config)
    return written
