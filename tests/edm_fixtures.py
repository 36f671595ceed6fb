"""Where the tests look for the EDM fixture snapshots, and what a skipped test says about it.

The fixtures (EDM pickles and EDM's own outputs on them) are too large for the repository. They
are found at ``$PFDIST_EDM_FIXTURES`` when it is set, else at ``shared/fixtures/edm`` inside the
checkout or beside it (``../shared/fixtures/edm`` from the repository root).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "PFDIST_EDM_FIXTURES"
ROOT = Path(__file__).resolve().parents[1]


def candidates() -> list[Path]:
    """The directories searched, in order."""
    if os.environ.get(ENV):
        return [Path(os.environ[ENV])]
    return [ROOT / "shared/fixtures/edm", ROOT.parent / "shared/fixtures/edm"]


def find() -> Path | None:
    return next((p for p in candidates() if p.is_dir()), None)


def skip_reason() -> str:
    looked = ", ".join(str(p) for p in candidates())
    return (f"EDM fixtures not found (looked in {looked}); set {ENV}=/path/to/fixtures/edm "
            "(the directory holding ddpmpp-vp-uncond.pkl and its -io.safetensors) to run these tests.")


FIXTURES = find() or candidates()[-1]
needs_fixtures = pytest.mark.skipif(find() is None, reason=skip_reason())
