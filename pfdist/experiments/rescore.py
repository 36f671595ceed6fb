"""``pfdist rescore``: a finished run's errors in another descriptor space, without retraining.

Every finished student's final pixel map, the teacher's, the training sets and the ideal copier's
maps are cached in the run directory (``cache/``) by the run itself; rescoring applies the new
descriptor to them and recomputes E_gen, E_mem, the copy share, the copier reference and
bias-variance. A student whose cached map is gone has its map recomputed (its ODE is run; it is
not retrained). Training dynamics are not rescored: their intermediate maps are not kept.
Results go to ``RUN_DIR/rescore/<name>/`` (scaling.csv, copier.csv, bias_variance.csv,
summary.json).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pfdist import checks
from pfdist.atomic import atomic_write_json
from pfdist.descriptors import check_spec, descriptor_fingerprint
from pfdist.errors import PFDistError
from pfdist.experiments.config import Preset
from pfdist.experiments.spaces import build_spaces, fit_samples
from pfdist.experiments.tables import write_tables
from pfdist.experiments.units import Context

RESCORE_DIR = "rescore"


def spec_from_text(text: str) -> Any:
    """What the command line gives: 'pixels', a JSON spec, or a file (.safetensors kernel; TorchScript / .pt2)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return check_spec(json.loads(text))
        except json.JSONDecodeError as e:
            raise PFDistError(f"--descriptor looks like JSON but does not parse ({e}).") from None
    if text in ("pixels", "identity"):
        return check_spec("pixels")
    path = Path(text)
    if not path.is_file():
        raise PFDistError(f"--descriptor {text!r} is neither 'pixels', a JSON spec, nor an existing file.")
    name = "".join(ch for ch in path.stem.split(".")[0] if ch.isalnum()) or "descriptor"
    name = name if name[0].isalpha() else f"d{name}"
    kind = "saved" if path.suffix == ".safetensors" else "file"
    return check_spec({"type": kind, "path": str(path), "name": name})


def load_run(run_dir: str | os.PathLike) -> Preset:
    path = checks.existing_dir(run_dir, "run directory", "give the directory pfdist reproduce wrote") / "config.json"
    if not path.is_file():
        raise PFDistError(f"{run_dir} is not a run directory (no config.json); run pfdist reproduce first.")
    try:
        saved = json.loads(path.read_text())
        preset = Preset.from_dict(saved["preset"])
    except (ValueError, KeyError, TypeError) as e:
        raise PFDistError(f"{path} is corrupt ({type(e).__name__}: {e}).") from None
    if saved.get("key") != preset.key():
        raise PFDistError(f"{path} was edited: its preset no longer matches the key its students were made under, "
                          "so they cannot be found; restore the file as pfdist reproduce wrote it.")
    return preset


def rescore(run_dir: str | os.PathLike, descriptor: Any, *, device: Any = None) -> dict[str, Any]:
    """Recompute a run's tables in the space ``descriptor`` (a spec, see :func:`spec_from_text`)."""
    from pfdist.analysis.collapse import fit_scaling
    from pfdist.analysis.results import read_rows

    run_dir = Path(run_dir)
    preset = load_run(run_dir)
    spec = check_spec(descriptor)
    ctx = Context(preset, run_dir, device)
    out_dir = run_dir / RESCORE_DIR / spec["name"]
    samples = fit_samples(ctx.teacher, ctx.shape, preset.eval, device=ctx.device, cache_dir=ctx.cache)
    spaces = build_spaces((spec,), out_dir, samples)
    tables = write_tables(ctx, spaces=spaces, out_dir=out_dir)
    summary: dict[str, Any] = {"descriptor": {k: v for k, v in spec.items()},
                               "fingerprint": descriptor_fingerprint(spaces[spec["name"]]),
                               "tables": [str(t) for t in tables]}
    if (out_dir / "scaling.csv").is_file():
        rows = read_rows(out_dir / "scaling.csv")
        fit, copy_fit = fit_scaling(rows)
        summary["students"] = len(rows)
        summary["collapse_alpha"] = None if fit is None else {"alpha": fit.alpha, "ci95": list(fit.alpha_ci)}
        summary["copy_collapse_alpha"] = None if copy_fit is None else {"alpha": copy_fit.alpha,
                                                                         "ci95": list(copy_fit.alpha_ci)}
        copier = read_rows(out_dir / "copier.csv")
        values = [r["e_gen"] for r in copier]
        summary["copier_e_gen"] = {"min": min(values), "max": max(values),
                                   "max_over_min": max(values) / min(values)} if values else None
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
