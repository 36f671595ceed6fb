"""The package's import graph has no cycle: layers import downward only (STYLE.md, "Layers").

Every ``import`` and ``from ... import`` counts, at module level and inside functions (a lazy
import is still an arrow), absolute and relative. ``from pfdist import checks`` is an arrow to
the module ``pfdist.checks``; ``from pfdist.descriptors import resolve`` (a function) one to the
package ``pfdist.descriptors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import pfdist

pytestmark = pytest.mark.fast


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package in directory ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: one dot is this package, each further dot one level up
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return targets & known


def import_graph(root: Path) -> nx.DiGraph:
    found = modules(root)
    graph = nx.DiGraph()
    graph.add_nodes_from(found)
    for name, path in found.items():
        graph.add_edges_from((name, target) for target in imports_of(name, path, set(found)) if target != name)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted."""
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def test_the_package_has_no_import_cycle():
    graph = import_graph(Path(pfdist.__file__).parent)
    assert len(graph) > 100 and graph.has_edge("pfdist.metric", "pfdist.plan")  # the walk sees the package
    found = cycles(graph)
    report = "\n".join(f"{c}: " + "; ".join(f"{a} -> {sorted(set(graph[a]) & set(c))}" for a in c) for c in found)
    assert not found, f"import cycles (each module imports, directly or not, one that imports it):\n{report}"


def test_the_analysis_sees_lazy_relative_and_from_package_imports(tmp_path):
    """The checker on a made-up package: each kind of import closes a cycle it must report."""
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from . import b\n",  # lazy and relative: pkg.a -> pkg.b
        "b.py": "from pkg import a\n",  # from the package: pkg.b -> pkg.a, not -> pkg
        "sub/__init__.py": "from .c import g\n",  # pkg.sub -> pkg.sub.c
        "sub/c.py": "import pkg.sub.d\ng = 1\n",
        "sub/d.py": "def h():\n    from ..sub import g\n",  # pkg.sub.d -> pkg.sub
        "e.py": "from pkg.sub import g\nimport os\n",  # pkg.e -> pkg.sub only: no cycle
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    graph = import_graph(tmp_path / "pkg")
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.c", "pkg.sub.d"]]
    assert set(graph["pkg.e"]) == {"pkg.sub"} and not graph.has_edge("pkg.b", "pkg")


LONGEST = 80  # lines of a function, its signature and docstring included (STYLE.md, review checklist)


def long_functions(root: Path) -> list[str]:
    """'module.function (lines)' for every function or method longer than LONGEST lines."""
    out = []
    for name, path in modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    out.append(f"{name}.{node.name} ({lines})")
    return out


def test_no_function_is_longer_than_80_lines(tmp_path):
    assert not long_functions(Path(pfdist.__file__).parent), long_functions(Path(pfdist.__file__).parent)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("def short():\n    pass\n\n\ndef long():\n" + "    x = 1\n" * 80)
    assert long_functions(tmp_path / "pkg") == ["pkg.long (81)"]  # the check can fail
