"""Evaluating a map on seed-addressed noise once, to reuse (and cache on disk) its outputs.

``flow_outputs`` computes Psi(Phi(x_T)) for seeds seed..seed+n-1 once, so that a map used in
many comparisons (a teacher's) is reused; the result records what made it (:class:`FlowOutputs`)
and is cached under a key hashing all of it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pfdist import distributed
from pfdist.atomic import CorruptFileError, atomic_save_tensors, load_tensors_checked, warn_corrupt
from pfdist.descriptors import Descriptor, descriptor_fingerprint, identity
from pfdist import checks
from pfdist.errors import PFDistError, PFDistWarning
from pfdist.hashing import content_hash
from pfdist.maps import GeneratorMap, ODEMap
from pfdist.outputs import FlowOutputs
from pfdist.plan import Plan, make_plan, requested_flow, resolve_device
from pfdist.settings import FlowSettings

__all__ = ["FlowOutputs", "FlowSettings", "flow_outputs", "resolve_device"]

log = logging.getLogger(__name__)


def flow_outputs(
    model: Any,
    *,
    shape: Sequence[int] | None = None,
    num_samples: int = 10_000,
    seed: int = 100_000,
    descriptor: Descriptor = identity,
    flow: FlowSettings | None = None,
    steps: int | None = None,
    solver: str | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
    class_labels: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    autocast: torch.dtype | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> FlowOutputs:
    """Psi(Phi(x_T)) for seeds seed..seed+num_samples-1, computed once (and cached on disk).

    ``model``: a denoiser (mapped with ``flow``, default EDM's Heun 18 steps; the keywords ``steps``, ``solver``, ``sigma_min``, ``sigma_max``, ``rho``
    replace those fields, as in :func:`pfdist.pfd`), or a map (:func:`pfdist.ode_map`, :func:`pfdist.generator`), which brings
    its own settings. ``shape`` is needed when the model does not say it. With ``cache_dir``,
    outputs are stored as safetensors under a key hashing the map's content, the descriptor, the
    seeds, the grid, the dtype, the labels and a map's decoder; a map or descriptor without a
    fingerprint is not cached. ``shape`` is the shape of x_T (a decoded map's latents). ``progress(n)`` is called with the number of samples done.
    ``descriptor``: Psi, a callable (default identity, pixel space); :func:`pfdist.descriptors.resolve`
    makes one from a name, a JSON spec or a file.
    """
    if isinstance(model, FlowOutputs):
        raise PFDistError("model is already precomputed outputs; pass them to pfd directly.")
    flow = requested_flow(flow, steps=steps, solver=solver, sigma_min=sigma_min,
                          sigma_max=sigma_max, rho=rho)
    if isinstance(model, (ODEMap, GeneratorMap)) and (flow is not None or class_labels is not None):
        raise PFDistError("flow settings and class_labels= apply to a plain denoiser; a map brings its own "
                          "(ode_map(denoiser, flow, class_labels=...)).")
    checks.integer("num_samples", num_samples, lo=1)
    checks.seed_range("seed", seed, num_samples)
    checks.size("num_samples", num_samples, checks.MAX_SEEDS, "each seed runs the ODE and its output is kept")
    p = make_plan({"model": model}, reduce=lambda outs: outs[0], shape=shape, flow=flow, class_labels=class_labels,
                  descriptor=descriptor, device=device, dtype=dtype, batch_size=batch_size,
                  autocast=autocast)
    side = p.sides[0]
    checks.size("num_samples", num_samples, checks.MAX_HELD_VALUES // math.prod(side.source.shape or p.shape),
                f"the outputs of data of shape {p.shape} are kept in memory, {checks.MAX_HELD_VALUES:,} numbers at most")
    record, key = _record(p, seed, num_samples)
    path = _cache_path(cache_dir, key, record)
    if path is not None and distributed.all_true(path.is_file()):  # every rank of a group, or none
        out = _read_cache(path, key)
        if distributed.all_true(out is not None):  # a damaged entry anywhere is a miss everywhere
            log.debug("flow outputs of seeds %d..%d read from %s", seed, seed + num_samples - 1, path)
            if progress:
                progress(num_samples)
            return out
    values = p.evaluate_range(range(seed, seed + num_samples), progress)
    out = FlowOutputs(values, nfe=side.nfe, key=key, descriptor_object=p.descriptor, **record)
    if path is not None and distributed.is_main():
        atomic_save_tensors(path, {"values": values}, metadata={"pfdist": json.dumps(out.metadata())},
                            checksum=True, key=key)
        log.debug("flow outputs of seeds %d..%d cached in %s", seed, seed + num_samples - 1, path)
    return out


def _record(p: Plan, seed: int, num_samples: int) -> tuple[dict, str | None]:
    """What made the outputs of the plan's one side on these seeds, and their cache key (None when
    the map or the descriptor has no fingerprint)."""
    side = p.sides[0]
    record = dict(seed=seed, shape=side.source.shape or p.shape, flow=side.flow, sigma_max=p.sigma_max,
                  map_fingerprint=side.source.fingerprint(), descriptor=descriptor_fingerprint(p.descriptor),
                  dtype=p.precision, conditioning=side.source.conditioning)
    if record["shape"] != p.shape:  # a decoded map: images from latents (kept out of the key otherwise)
        record["noise_shape"] = p.shape
    key = None
    if record["map_fingerprint"] is not None and record["descriptor"] is not None:
        key = content_hash("flow_outputs/v2", num_samples, {**record, "flow": side.flow and side.flow.to_dict()})
    return record, key


def _cache_path(cache_dir: str | os.PathLike | None, key: str | None, record: dict) -> Path | None:
    """The cache file of ``key`` under ``cache_dir``; None (with a warning when a cache was asked
    for) when the outputs cannot be keyed."""
    if cache_dir is not None and key is None:
        which = "the model" if record["map_fingerprint"] is None else "the descriptor"
        warnings.warn(f"cache_dir is ignored: {which} has no fingerprint, so its outputs cannot be keyed by content "
                      "(a module holding a function or an arbitrary object, or a callable without fingerprint()); "
                      "they are computed, not cached.", PFDistWarning, stacklevel=3)
    return Path(cache_dir) / f"flow-{key}.safetensors" if cache_dir is not None and key else None


def _read_cache(path: Path, key: str) -> FlowOutputs | None:
    """The verified cache entry of ``key``, or None (with one warning line) when it is damaged,
    unverifiable or another key's entry (a copied file): then it is recomputed."""
    try:
        tensors, meta = load_tensors_checked(path, key=key)
        return FlowOutputs.from_metadata(tensors["values"], json.loads(meta["pfdist"]))
    except (CorruptFileError, KeyError, ValueError) as e:
        warn_corrupt(e if isinstance(e, CorruptFileError) else CorruptFileError(f"{path} is malformed ({e})"))
        return None
