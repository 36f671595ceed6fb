"""The README runs as written.

Convention (see README.md): every fenced ```python block runs, in order, in one fresh temporary
directory and one shared namespace; in ```console blocks, every line starting with ``$ `` is a
shell command run in that same directory (``pfdist`` and ``python`` resolve to this checkout).
```sh blocks are illustrative (GPUs, clusters, long runs) and are not run. The directory holds a
copy of ``examples/`` and of the published runs ``docs/runs/``, so commands may name
``examples/teacher.json`` or ``docs/runs/quick``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
# ```python fixtures=edm2 and ```console fixtures=edm2 blocks run on the EDM2 test snapshots, linked
# as edm2/ (skipped without them).
EDM_FIXTURES = Path(os.environ.get("PFDIST_EDM_FIXTURES", ROOT.parent / "shared/fixtures/edm"))
EDM2_FIXTURES = Path(os.environ.get("PFDIST_EDM2_FIXTURES", EDM_FIXTURES.parent / "edm2"))


def readme_steps(text: str) -> list[tuple[str, str]]:
    """("python", source) and ("shell", command) in document order."""
    steps = []
    for lang, info, body in FENCE.findall(text):
        if lang == "python":
            steps.append(("python:edm2" if "fixtures=edm2" in info else "python", body))
        elif lang == "console":
            kind = "shell:edm2" if "fixtures=edm2" in info else "shell"
            steps += [(kind, line[2:]) for line in body.splitlines() if line.startswith("$ ")]
    return steps


def _shims(bin_dir: Path) -> dict:
    """``pfdist`` and ``python`` on PATH, running this checkout with this interpreter."""
    bin_dir.mkdir()
    for name, argv in (("pfdist", f'"{sys.executable}" -m pfdist.cli'), ("python", f'"{sys.executable}"')):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\nexec {argv} \"$@\"\n")
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    return env


def test_fence_parser_finds_each_kind():
    text = ("a\n```python\nx = 1\n```\n```console\n$ pfdist --help\noutput\n```\n```sh\nmake test\n```\n"
            "```python fixtures=edm2\ny = 2\n```\n```console fixtures=edm2\n$ pfdist distance a b\n```\n")
    assert readme_steps(text) == [("python", "x = 1\n"), ("shell", "pfdist --help"), ("python:edm2", "y = 2\n"),
                                  ("shell:edm2", "pfdist distance a b")]


def test_readme_runs(tmp_path, monkeypatch):
    steps = readme_steps((ROOT / "README.md").read_text(encoding="utf-8"))
    assert any(kind == "python" for kind, _ in steps) and any(kind == "shell" for kind, _ in steps)
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    shutil.copytree(ROOT / "docs" / "runs", work / "docs" / "runs")
    env = _shims(tmp_path / "bin")
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__readme__"}
    if EDM2_FIXTURES.is_dir():
        (work / "edm2").symlink_to(EDM2_FIXTURES.resolve(), target_is_directory=True)
    for i, (kind, source) in enumerate(steps):
        if kind.endswith(":edm2") and not EDM2_FIXTURES.is_dir():
            continue  # the EDM2 test snapshots are not on this machine
        if kind.startswith("python"):
            exec(compile(source, f"README.md python block {i}", "exec"), namespace)
        else:
            r = subprocess.run(source, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                pytest.fail(f"README command failed ({r.returncode}): $ {source}\n{r.stdout}\n{r.stderr}")


def _imported(tree) -> set:
    import ast

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_each_sections_first_python_block_has_its_own_imports():
    """A reader may start at any section: its first example imports every module it uses."""
    import ast

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    firsts = [(sec.splitlines()[0], FENCE.findall(sec)) for sec in sections]
    firsts = [(title, next(body for lang, _, body in blocks if lang == "python"))
              for title, blocks in firsts if any(lang == "python" for lang, _, _ in blocks)]
    assert len(firsts) >= 5
    modules = set().union(*(_imported(ast.parse(body)) for lang, _, body in FENCE.findall(text) if lang == "python"))
    for title, body in firsts:
        tree = ast.parse(body)
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        missing = (used & modules) - _imported(tree)
        assert not missing, f"section {title!r}: its first python block uses {sorted(missing)} without importing them"
