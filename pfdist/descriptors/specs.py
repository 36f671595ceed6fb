"""Descriptor specs: how a preset, the command line or a user names a descriptor.

    "pixels"                                           identity
    {"type": "kernel", "num_features": 2048,           random Fourier features, fitted on
     "bandwidth_rule": "median_nn/2", "seed": 0,       ``fit_samples`` teacher samples
     "fit_samples": 1000}
    {"type": "sscd", "path": "sscd.pt", "size": 320,   SSCD from a TorchScript / .pt2 file (code:
     "interpolation": "bilinear", "quantize": false}   trusted files only)
    {"type": "file", "path": "net.pt2", "normalize": false}   any descriptor network file (code)
    {"type": "saved", "path": "kernel.safetensors"}   a saved kernel descriptor (no code)

A spec may also be given as text (the command line's ``--descriptor``): "pixels", a JSON object,
or the path of a descriptor file (``.safetensors``: a saved kernel; anything else: a network file).
An optional "name" labels the space in tables (default: the type; "pixels" for identity; a file's
stem). :func:`check_spec` turns any of these into one complete dict; :func:`pfdist.descriptors.resolve`
builds the descriptor it names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pfdist.descriptors.base import PIXEL_NAMES
from pfdist.descriptors.kernel import SPEC_DEFAULTS as KERNEL_DEFAULTS
from pfdist.descriptors.sscd import INTERPOLATIONS
from pfdist import checks
from pfdist.errors import PFDistError

DEFAULTS: dict[str, dict[str, Any]] = {
    "kernel": KERNEL_DEFAULTS,
    "sscd": {"path": None, "size": 320, "interpolation": "bilinear", "quantize": False},
    "file": {"path": None, "normalize": False},
    "saved": {"path": None},
}
RULE = re.compile(r"^median_nn(?:/(\d+(?:\.\d+)?)|\*(\d+(?:\.\d+)?))?$")


def bandwidth_factor(rule: str) -> float:
    """'median_nn' -> 1, 'median_nn/2' -> 0.5, 'median_nn*0.3' -> 0.3."""
    m = RULE.match(rule) if isinstance(rule, str) else None
    if m is None:
        raise PFDistError(f"bandwidth_rule must be 'median_nn', 'median_nn/<d>' or 'median_nn*<f>' (got {rule!r}).")
    number = float(m.group(1) or m.group(2) or 1.0)
    factor = 1.0 / number if m.group(1) and number > 0 else number
    if not 0 < factor < float("inf"):
        raise PFDistError(f"bandwidth_rule {rule!r} gives a factor that is not a positive number.")
    return factor


def check_spec(spec: Any) -> dict:
    """A complete, validated spec dict (defaults filled in) from a dict, "pixels", JSON text or a
    descriptor file's path; one clear error for anything else."""
    if isinstance(spec, (str, os.PathLike)) and spec not in PIXEL_NAMES:
        return _spec_from_text(os.fspath(spec))
    if spec in PIXEL_NAMES or (isinstance(spec, dict) and spec.get("type") in PIXEL_NAMES):
        name = spec.get("name", "pixels") if isinstance(spec, dict) else "pixels"
        return {"type": "pixels", "name": name}
    if not isinstance(spec, dict) or spec.get("type") not in DEFAULTS:
        raise PFDistError(f"a descriptor spec is 'pixels' or a JSON object with type one of "
                          f"{sorted(DEFAULTS)} (got {spec!r}).")
    kind = spec["type"]
    unknown = set(spec) - set(DEFAULTS[kind]) - {"type", "name"}
    if unknown:
        raise PFDistError(f"unknown field(s) {sorted(unknown)} in {kind} descriptor spec; known: {sorted(DEFAULTS[kind])}.")
    full = {"type": kind, "name": spec.get("name", kind), **DEFAULTS[kind], **{k: v for k, v in spec.items() if k != "type"}}
    if not isinstance(full["name"], str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", full["name"]):
        raise PFDistError(f"descriptor name must be letters and digits, starting with a letter (got {full['name']!r}).")
    if kind == "kernel":
        for field in ("num_features", "seed", "fit_samples"):
            if not isinstance(full[field], int) or isinstance(full[field], bool):
                raise PFDistError(f"kernel descriptor {field} must be an integer (got {full[field]!r}).")
        if full["num_features"] < 2 or full["num_features"] % 2:
            raise PFDistError(f"kernel descriptor num_features must be even and >= 2 (got {full['num_features']}).")
        if full["seed"] < 0:
            raise PFDistError(f"kernel descriptor seed must be >= 0 (got {full['seed']}).")
        if full["fit_samples"] < 2:
            raise PFDistError(f"kernel descriptor fit_samples must be >= 2 (got {full['fit_samples']}).")
        checks.size("kernel descriptor fit_samples", full["fit_samples"], checks.MAX_FIT_SAMPLES,
                    "the bandwidth's nearest-neighbour search compares every pair of samples")
        bandwidth_factor(full["bandwidth_rule"])
    elif not isinstance(full["path"], str) or not full["path"]:
        raise PFDistError(f"a {kind} descriptor spec needs a 'path' string.")
    for flag in ("normalize", "quantize"):  # "no" is not False
        if flag in full and not isinstance(full[flag], bool):
            raise PFDistError(f"{kind} descriptor {flag} must be true or false (got {full[flag]!r}).")
    if kind == "sscd":
        checks.integer("sscd descriptor size", full["size"], lo=1, hi=4096)
        if full["interpolation"] not in INTERPOLATIONS:
            raise PFDistError(f"sscd descriptor interpolation must be one of {INTERPOLATIONS} (got {full['interpolation']!r}).")
    return full


def _spec_from_text(text: str) -> dict:
    """JSON text or a descriptor file's path (.safetensors kernel; TorchScript / .pt2) -> a checked spec."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return check_spec(json.loads(text))
        except json.JSONDecodeError as e:
            raise PFDistError(f"descriptor spec {text!r} looks like JSON but does not parse ({e}).") from None
    if text in PIXEL_NAMES:
        return check_spec("pixels")
    path = Path(text)
    if path.is_dir():
        raise PFDistError(f"descriptor file {path} is a directory, not a file.")
    if not path.is_file():
        raise PFDistError(f"descriptor {text!r} is neither 'pixels', a JSON spec, nor an existing file.")
    name = "".join(ch for ch in path.stem.split(".")[0] if ch.isalnum()) or "descriptor"
    name = name if name[0].isalpha() else f"d{name}"
    kind = "saved" if path.suffix == ".safetensors" else "file"
    return check_spec({"type": kind, "path": str(path), "name": name})
