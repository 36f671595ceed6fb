"""Reading ``torch.export`` ``.pt2`` archives: every load goes through :func:`load_program`.

A ``.pt2`` file is a program (its graph runs the operators it names): load only files you trust,
as you would run a script. Beyond that, ``torch.export.load`` would also run Python code while
*reading* it: it unpickles example inputs, tensors saved with
``use_pickle`` and opaque constants (``torch.load(weights_only=False)``, ``pickle.loads``), and it
parses shape expressions with ``sympy.sympify``, which evaluates them as Python. :func:`check_archive`
refuses, from the zip entries and JSON alone, any archive that holds one of those, so a model and
a descriptor network are read the same way and loading runs no unpickler and no ``eval``.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from pfdist.errors import PFDistError

REEXPORT = ("write it without example inputs: set `program.example_inputs = None` before "
            "`torch.export.save`, or use `pfdist export` for a denoiser")

_ALLOWED = re.compile(r"(archive_format|archive_version|byteorder|\.data/.*|models/[^/]+\.json|extra/[^/]+"
                      r"|data/weights/(weight_\d+|[^/]+_weights_config\.json)"
                      r"|data/constants/(tensor_\d+|[^/]+_constants_config\.json)|data/sample_inputs/[^/]+\.pt)")
_PAYLOAD = re.compile(r"(weight|tensor)_\d+")  # raw tensor bytes; custom_obj_* / opaque_obj_* are pickles
# Shape expressions: numbers, operators, symbols such as s0 / u3 (bare or quoted, as in
# Symbol('s0', integer=True)), quoted numbers (Float('1.5', precision=53)), sympy's class and
# function names and assumptions. No attributes, no other names, no other strings.
_EXPR_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?(?:e[+-]?\d+)?)|([A-Za-z_][A-Za-z_0-9]*)"
                         r"|'([a-z]+\d+|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)'|(\*\*|//|[-+*/%(),<>=!&|~^]))")
_SYMBOL = re.compile(r"[a-z]+\d+")
_FUNCTIONS = frozenset(
    "Max Min Abs Mod floor ceiling sqrt Pow Eq Ne Lt Le Gt Ge And Or Not True False oo int_oo zoo nan "
    "FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural "
    "FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt "
    "RoundDecimal ToFloat Identity Symbol Integer Rational Float Mul Add Pow StrictLessThan LessThan StrictGreaterThan "
    "GreaterThan Equality Unequality BooleanTrue BooleanFalse Infinity NegativeInfinity One Zero NegativeOne Half "
    "positive negative nonnegative nonpositive integer real finite precision".split())


def _safe_expr(text: Any) -> bool:
    """True when ``text`` is a shape expression sympy can parse without running anything else."""
    if not isinstance(text, str) or len(text) > 1000:
        return False
    pos = 0
    while pos < len(text.rstrip()):
        m = _EXPR_TOKEN.match(text, pos)
        if m is None:
            return False
        name = m.group(2)
        if name is not None and not (_SYMBOL.fullmatch(name) or name in _FUNCTIONS):
            return False
        pos = m.end()
    return True


def _expressions(node: Any):
    """Every ``expr_str`` value in a serialized program (a JSON tree)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str":
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value)


def _check_entry(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    name = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
    if not _ALLOWED.fullmatch(name):
        raise PFDistError(f"{path} holds {name!r}, which pfdist does not load (a pickle or another "
                          f"program kind); {REEXPORT}.")
    if name.startswith("data/sample_inputs/") and info.file_size:
        raise PFDistError(f"{path} stores example inputs as a pickle, which loading would run; {REEXPORT}.")
    if name.endswith("_config.json"):
        config = json.loads(zf.read(info)).get("config", {})
        for entry in config.values():
            if entry.get("use_pickle") is not False or not _PAYLOAD.fullmatch(str(entry.get("path_name"))):
                raise PFDistError(f"{path} stores tensors or objects as pickles, which loading would run; {REEXPORT}.")
    if name.startswith("models/"):
        for expr in _expressions(json.loads(zf.read(info))):
            if not _safe_expr(expr):
                raise PFDistError(f"{path} holds a shape expression that is not arithmetic ({str(expr)[:60]!r}); "
                                  "loading would evaluate it as Python. Export the model again.")


def check_archive(path: str | os.PathLike) -> None:
    """Refuse a .pt2 archive holding anything ``torch.export.load`` would unpickle or evaluate."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    _check_entry(path, zf, info)
    except PFDistError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError) as e:
        raise PFDistError(f"{path} is not a readable .pt2 archive ({e}).") from None


def load_program(path: str | os.PathLike, *, extra_files: dict[str, Any] | None = None) -> Any:
    """``torch.export.load`` of a checked archive (see :func:`check_archive`); one PFDistError otherwise."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise PFDistError(f"{path} does not exist or is not a file.")
    check_archive(path)
    try:
        return torch.export.load(str(path), extra_files=extra_files)
    except Exception as e:  # torch raises RuntimeError, KeyError, ... for bad archives
        raise PFDistError(f"{path} is not a loadable torch.export program ({type(e).__name__}: {e}).") from None
