"""Evaluating a map on seed-addressed noise once, to reuse (and cache on disk) its outputs.

``flow_outputs`` computes Psi(Phi(x_T)) for seeds seed..seed+n-1 once, so that a map used in
many comparisons (a teacher's) is reused; the result records what made it (:class:`FlowOutputs`)
and is cached under a key hashing all of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pfdist import distributed
from pfdist.atomic import CorruptFileError, atomic_save_tensors, load_tensors_checked, warn_corrupt
from pfdist.descriptors import Descriptor, descriptor_fingerprint
from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.maps import GeneratorMap, ODEMap
from pfdist.outputs import FlowOutputs
from pfdist.plan import make_plan, resolve_device
from pfdist.settings import FlowSettings

__all__ = ["FlowOutputs", "FlowSettings", "flow_outputs", "resolve_device"]


def flow_outputs(
    model: Any,
    *,
    shape: Sequence[int] | None = None,
    num_samples: int = 10_000,
    seed: int = 100_000,
    descriptor: Descriptor | str | None = None,
    flow: FlowSettings | None = None,
    settings: FlowSettings | None = None,
    class_labels: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> FlowOutputs:
    """Psi(Phi(x_T)) for seeds seed..seed+num_samples-1, computed once (and cached on disk).

    ``model``: a denoiser (mapped with ``flow``, default EDM's Heun 18 steps; ``settings`` is
    the older name), or a map (:func:`pfdist.ode_map`, :func:`pfdist.generator`), which brings
    its own settings. ``shape`` is needed when the model does not say it. With ``cache_dir``,
    outputs are stored as safetensors under a key hashing the map's content, the descriptor, the
    seeds, the grid, the dtype and the labels; a map or descriptor without a fingerprint is not
    cached. ``progress(n)`` is called with the number of samples done.
    """
    if settings is not None and flow is not None and settings != flow:
        raise PFDistError("give the flow settings once: flow= (settings= is its older name).")
    flow = flow if flow is not None else settings
    if isinstance(model, FlowOutputs):
        raise PFDistError("model is already precomputed outputs; pass them to pfd directly.")
    if isinstance(model, (ODEMap, GeneratorMap)) and (flow is not None or class_labels is not None):
        raise PFDistError("flow= and class_labels= apply to a plain denoiser; a map brings its own "
                          "(ode_map(denoiser, flow, class_labels=...)).")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise PFDistError(f"num_samples must be a positive integer (got {num_samples!r}).")
    checks.seed_range("seed", seed, num_samples)
    p = make_plan({"model": model}, reduce=lambda outs: outs[0], shape=shape, flow=flow, class_labels=class_labels,
                  descriptor=descriptor, device=device, dtype=dtype, batch_size=batch_size)
    side = p.sides[0]
    record = dict(seed=seed, shape=p.shape, flow=side.flow, sigma_max=p.sigma_max,
                  map_fingerprint=side.source.fingerprint(), descriptor=descriptor_fingerprint(p.descriptor),
                  dtype=str(dtype), conditioning=side.source.conditioning)
    key = None
    if record["map_fingerprint"] is not None and record["descriptor"] is not None:
        key = content_hash("flow_outputs/v2", num_samples, {**record, "flow": side.flow and side.flow.to_dict()})
    path = Path(cache_dir) / f"flow-{key}.safetensors" if cache_dir is not None and key else None
    if path is not None and distributed.all_true(path.is_file()):  # every rank of a group, or none
        out = _read_cache(path)
        if distributed.all_true(out is not None):  # a damaged entry anywhere is a miss everywhere
            if progress:
                progress(num_samples)
            return out
    values = p.evaluate_range(range(seed, seed + num_samples), progress)
    out = FlowOutputs(values, nfe=side.nfe, key=key, descriptor_object=p.descriptor, **record)
    if path is not None and distributed.is_main():
        atomic_save_tensors(path, {"values": values}, metadata={"pfdist": json.dumps(out.metadata())}, checksum=True)
    return out


def _read_cache(path: Path) -> FlowOutputs | None:
    """A verified cache entry, or None (with one warning line) when it is damaged or unverifiable."""
    try:
        tensors, meta = load_tensors_checked(path)
        return FlowOutputs.from_metadata(tensors["values"], json.loads(meta["pfdist"]))
    except (CorruptFileError, KeyError, ValueError) as e:
        warn_corrupt(e if isinstance(e, CorruptFileError) else CorruptFileError(f"{path} is malformed ({e})"))
        return None
