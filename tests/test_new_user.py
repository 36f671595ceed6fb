"""What a new user meets first: interrupting a run, progress, the command line's help and
descriptors, skipped tests, figures and the report's wording."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_skipped_fixture_tests_say_where_they_looked_and_how_to_point_there(monkeypatch, tmp_path):
    import edm_fixtures

    monkeypatch.setenv("PFDIST_EDM_FIXTURES", str(tmp_path / "nowhere"))
    reason = edm_fixtures.skip_reason()
    assert str(tmp_path / "nowhere") in reason and "PFDIST_EDM_FIXTURES=" in reason
    assert edm_fixtures.find() is None
    monkeypatch.delenv("PFDIST_EDM_FIXTURES")
    looked = edm_fixtures.candidates()
    assert ROOT.parent / "shared/fixtures/edm" in looked and ROOT / "shared/fixtures/edm" in looked
    assert all(str(p) in edm_fixtures.skip_reason() for p in looked)
    (tmp_path / "edm").mkdir()
    monkeypatch.setenv("PFDIST_EDM_FIXTURES", str(tmp_path / "edm"))
    assert edm_fixtures.find() == tmp_path / "edm"
