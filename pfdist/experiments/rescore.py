"""``pfdist rescore``: a finished run's errors in another descriptor space, without retraining.

Every finished student's final pixel map, the teacher's, the training sets and the ideal copier's
maps are cached in the run directory (``cache/``) by the run itself; rescoring applies the new
descriptor to them and recomputes E_gen, E_mem, the copy share, the copier reference and
bias-variance. A student whose cached map is gone has its map recomputed (its ODE is run; it is
not retrained). Training dynamics are not rescored: their intermediate maps are not kept.
Results go to ``RUN_DIR/rescore/<name>-<fingerprint>/`` (scaling.csv, copier.csv, bias_variance.csv,
summary.json), keyed by the descriptor's content fingerprint so that two descriptors of one name
(two kernel specs) never overwrite each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pfdist import checks
from pfdist.atomic import atomic_write_json
from pfdist.descriptors import KernelDescriptor, NamedDescriptors, check_spec, descriptor_fingerprint, resolve
from pfdist.errors import PFDistError
from pfdist.experiments.config import Preset
from pfdist.experiments.spaces import descriptor_path, fit_samples
from pfdist.hashing import content_hash
from pfdist.experiments.tables import write_tables
from pfdist.experiments.units import Context

RESCORE_DIR = "rescore"


def rescore_dir(run_dir: str | os.PathLike, name: str, fingerprint: str | None) -> Path:
    """``RUN_DIR/rescore/<name>-<12 hex digits of the descriptor's fingerprint>``: two descriptors
    of one name (two kernel specs) never share a directory; the same one always finds its own."""
    if fingerprint is None:
        raise PFDistError(f"the {name} descriptor has no content fingerprint, so its results cannot be keyed.")
    return Path(run_dir) / RESCORE_DIR / f"{name}-{content_hash('rescore_dir/v1', fingerprint)[:12]}"


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
    """Recompute a run's tables in the space ``descriptor``: a spec ('pixels', a dict, JSON text or a
    descriptor file; :func:`pfdist.descriptors.check_spec`), a kernel spec fitted on the run's teacher."""
    from pfdist.experiments.outcome import analyze_run, read_run, summary_results  # scipy: only when asked

    spec = check_spec(descriptor)
    run_dir = Path(run_dir)
    preset = load_run(run_dir)
    ctx = Context(preset, run_dir, device)
    samples = fit_samples(ctx.teacher, ctx.shape, preset.eval, device=ctx.device, cache_dir=ctx.cache)
    psi = resolve(spec, samples=samples)
    fingerprint = descriptor_fingerprint(psi)
    out_dir = rescore_dir(run_dir, spec["name"], fingerprint)
    if isinstance(psi, KernelDescriptor) and not descriptor_path(out_dir, spec["name"]).is_file():
        psi.save(descriptor_path(out_dir, spec["name"]))
    spaces = NamedDescriptors({spec["name"]: psi})
    tables = write_tables(ctx, spaces=spaces, out_dir=out_dir)
    summary: dict[str, Any] = {"descriptor": {k: v for k, v in spec.items()},
                               "fingerprint": fingerprint, "out_dir": str(out_dir),
                               "tables": [str(t) for t in tables]}
    found = analyze_run(read_run(out_dir, spaces=(spec["name"],)))
    summary.update(summary_results(found))
    if found.result("scaling") is not None:
        summary["students"] = len(found.result("scaling").rows)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
