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


# EDM2 snapshots, the tiny VAE and EDM2's sampler outputs: $PFDIST_EDM2_FIXTURES, else edm2/ beside
# the EDM fixtures, else shared/fixtures/edm2 inside or beside the checkout.
ENV2 = "PFDIST_EDM2_FIXTURES"


def candidates_edm2() -> list[Path]:
    if os.environ.get(ENV2):
        return [Path(os.environ[ENV2])]
    beside = [p.parent / "edm2" for p in candidates()]
    return list(dict.fromkeys(beside + [ROOT / "shared/fixtures/edm2", ROOT.parent / "shared/fixtures/edm2"]))


def _find_edm2() -> Path | None:
    return next((p for p in candidates_edm2() if p.is_dir()), None)


EDM2_FIXTURES = _find_edm2() or candidates_edm2()[-1]
needs_edm2_fixtures = pytest.mark.skipif(
    _find_edm2() is None,
    reason=(f"EDM2 fixtures not found (looked in {', '.join(str(p) for p in candidates_edm2())}); set "
            f"{ENV2}=/path/to/fixtures/edm2 (the directory holding edm2-latent-cond.pkl) to run these tests."))


def rel_rms(a, b):
    """Per-sample relative RMS error of a against reference b, (batch,)."""
    return (a - b).flatten(1).square().mean(1).sqrt() / b.flatten(1).square().mean(1).sqrt()
