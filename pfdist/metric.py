"""Probability flow distance between two maps on shared seeds (docs/method.md, §2).

    PFD(p, q) = ( E_{x_T ~ N(0, T^2 I)} |Psi(Phi_p(x_T)) - Psi(Phi_q(x_T))|^2 )^(1/2)

estimated on seeds seed..seed+M-1 shared by both maps. The distance itself is a pure function
(:func:`pfdist.distance.squared_distances`); reduction and intervals live in :class:`PFDResult`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from pfdist.descriptors import Descriptor, descriptor_fingerprint, identity
from pfdist.distance import PFDResult, squared_distances
from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash
from pfdist.outputs import FlowOutputs
from pfdist.plan import Plan, make_plan, requested_flow
from pfdist.settings import FlowSettings
from pfdist.solver_error import check_estimable, solver_errors

__all__ = ["PFDResult", "pfd", "squared_distances"]


def pfd(
    a: Any,
    b: Any,
    *,
    shape: Sequence[int] | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
    seeds: str | Sequence[int] | range | None = None,
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
    progress: Callable[[int], None] | None = None,
    error_estimate: bool = False,
) -> PFDResult:
    """Probability flow distance between two maps on shared seeds.

    a, b (each independently): a denoiser ``D(x, sigma)`` (exact distributions, networks,
    callables), mapped by the PF-ODE with this call's flow settings; a map
    (:func:`pfdist.ode_map` with its own settings, :func:`pfdist.generator` for any x_T -> x_0
    callable); or :class:`FlowOutputs` precomputed on (a superset of) these seeds.

    Flow settings: ``flow=FlowSettings(...)`` and/or the keywords ``steps``, ``solver``,
    ``sigma_min``, ``sigma_max``, ``rho`` (replacing those fields of ``flow``). When none is
    given, denoisers use the grid of precomputed ODE outputs on the other side, else EDM's
    defaults (:class:`FlowSettings`); when given, precomputed ODE outputs must have been made
    on that grid. ODE grids are clamped to the intersection of the models' declared
    ``sigma_min`` / ``sigma_max`` (as EDM clamps to ``net.sigma_min`` / ``net.sigma_max``); the
    grids used are ``result.flow_a`` / ``result.flow_b``. Both maps must draw x_T at one T.

    ``class_labels``: for class-conditional denoisers (``label_dim`` > 0), None draws one label
    per seed (the same for both maps, whatever the batch), an int fixes the class.
    ``descriptor``: Psi, a callable (default identity, pixel space); :func:`pfdist.descriptors.resolve`
    makes one from a name, a JSON spec or a file. Precomputed outputs are refused unless made
    with this descriptor (its fingerprint, or the very object for a callable without one), dtype,
    grid, T and labels.

    ``autocast`` (``torch.bfloat16`` / ``torch.float16``): the networks (and decoders) run under
    ``torch.autocast`` in that precision; the ODE state, the outputs and the distance stay in
    ``dtype`` (float32). EDM2 networks also take ``load_edm(path, dtype=torch.bfloat16)``.

    shape: the shape of x_T, the data shape unless a map decodes latents (taken from a or b
    when they know it). Seeds are
    seed..seed+num_samples-1 (default: the seeds of precomputed outputs given as a or b, else
    100000..109999); any range can be evaluated alone and
    joined exactly with :meth:`PFDResult.combine`. Or ``seeds``, in EDM's syntax (``"0-49999"``,
    ``"0-9,20,30-39"``) or as a range or list, instead of ``seed`` and ``num_samples``: the
    per-sample values follow the seeds' order, and ``result.seed`` is None unless they are one
    contiguous range. Streams in batches; ``progress(n)`` gets samples done.
    ``result.nfe_a`` / ``nfe_b`` are each side's evaluations per sample, ``nfe`` the larger.

    ``error_estimate=True`` also estimates each map's discretisation error on its own grid
    (``result.solver_error_a`` / ``_b``, and ``result.solver_error``, a bound on how far the
    value is from the exact maps' PFD): each ODE side is rerun with doubled steps on the first
    :data:`pfdist.solver_error.ERROR_SEEDS` seeds and Richardson-extrapolated with the solver's
    order (:mod:`pfdist.solver_error`); it costs about 3 x 128 / num_samples of the PFD itself.
    Needs a fixed-grid solver and the model of every ODE side (not precomputed ODE outputs).
    """
    if not isinstance(error_estimate, bool):
        raise PFDistError(f"error_estimate must be True or False (got {error_estimate!r}).")
    precomputed = next((m for m in (a, b) if isinstance(m, FlowOutputs)), None)
    runs = _seed_runs(num_samples, seed, seeds, precomputed)
    if progress is not None and not callable(progress):
        raise PFDistError(f"progress must be a function of the number of samples done (got {type(progress).__name__}).")
    flow = requested_flow(flow, steps=steps, solver=solver, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    p = make_plan({"a": a, "b": b}, reduce=lambda outs: squared_distances(*outs), shape=shape, flow=flow,
                  class_labels=class_labels, descriptor=descriptor, device=device, dtype=dtype, batch_size=batch_size,
                  autocast=autocast)
    if error_estimate:
        check_estimable(p)
    return _evaluate(p, runs, progress, error_estimate)


def _evaluate(p: Plan, runs: list[range], progress: Callable[[int], None] | None, error_estimate: bool) -> PFDResult:
    """The plan's squared distances on every seed run, reduced to one result; the discretisation
    estimate runs on the first seeds of the first run."""
    side_a, side_b = p.sides
    per_sample = torch.cat([p.evaluate_range(run, progress) for run in runs])
    errors = solver_errors(p, runs[0].start, len(runs[0])) if error_estimate else (None, None)
    prints = [_fingerprint(side_a.source), _fingerprint(side_b.source), descriptor_fingerprint(p.descriptor)]
    return PFDResult.from_per_sample(
        per_sample, seed=runs[0].start if len(runs) == 1 else None, nfe_a=side_a.nfe, nfe_b=side_b.nfe,
        flow_a=side_a.flow and side_a.flow.to_dict(), flow_b=side_b.flow and side_b.flow.to_dict(),
        solver_error_a=errors[0], solver_error_b=errors[1],
        comparison=None if None in prints else content_hash("pfd/comparison/v1", prints),
    )


def _seed_runs(num_samples: int | None, seed: int | None, seeds: Any, precomputed: FlowOutputs | None) -> list[range]:
    """The contiguous seed runs of a call: ``seeds``, or ``seed .. seed + num_samples - 1``, or
    when none is given the seeds of the (first) precomputed outputs."""
    if seeds is None and num_samples is None and seed is None and precomputed is not None:
        return [range(precomputed.seed, precomputed.seed + precomputed.num_samples)]
    if seeds is not None:
        if num_samples is not None or seed is not None:
            raise PFDistError("give seeds= or seed= and num_samples=, not both.")
        runs = checks.seed_ranges("seeds", seeds)
        if sum(map(len, runs)) < 2:
            raise PFDistError(f"seeds must hold at least 2 seeds for an interval (got {seeds!r}).")
        checks.size("seeds", sum(map(len, runs)), checks.MAX_SEEDS, "each seed runs both maps' ODEs and keeps its distance")
        return runs
    num_samples = 10_000 if num_samples is None else num_samples
    seed = 100_000 if seed is None else seed
    checks.integer("num_samples", num_samples, lo=2, fix="a standard error needs two samples")
    checks.seed_range("seed", seed, num_samples)
    checks.size("num_samples", num_samples, checks.MAX_SEEDS, "each seed runs both maps' ODEs and keeps its distance")
    return [range(seed, seed + num_samples)]


def _fingerprint(source: Any) -> str | None:
    """A map's content hash; precomputed outputs carry the hash of the map that made them."""
    return source.map_fingerprint if isinstance(source, FlowOutputs) else source.fingerprint()
