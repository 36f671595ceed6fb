"""Probability flow distance between two maps on shared seeds (docs/method.md, §2).

    PFD(p, q) = ( E_{x_T ~ N(0, T^2 I)} |Psi(Phi_p(x_T)) - Psi(Phi_q(x_T))|^2 )^(1/2)

estimated on seeds seed..seed+M-1 shared by both maps. The distance itself is a pure function
(:func:`pfdist.distance.squared_distances`); reduction and intervals live in :class:`PFDResult`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from pfdist.descriptors import Descriptor
from pfdist.distance import PFDResult, squared_distances
from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.plan import make_plan
from pfdist.settings import FlowSettings

__all__ = ["PFDResult", "pfd", "squared_distances"]


def pfd(
    a: Any,
    b: Any,
    *,
    shape: Sequence[int] | None = None,
    num_samples: int = 10_000,
    seed: int = 100_000,
    descriptor: Descriptor | str | None = None,
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
    progress: Callable[[int], None] | None = None,
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
    Precomputed outputs are refused unless made with this descriptor (its fingerprint, or the
    very object for a callable without one), dtype, grid, T and labels.

    shape: the data shape (taken from a or b when they know it). Seeds are
    seed..seed+num_samples-1; any range can be evaluated alone and joined exactly with
    :meth:`PFDResult.combine`. Streams in batches; ``progress(n)`` gets samples done.
    ``result.nfe_a`` / ``nfe_b`` are each side's evaluations per sample, ``nfe`` the larger.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise PFDistError(f"num_samples must be an integer >= 2 (got {num_samples!r}).")
    checks.seed_range("seed", seed, num_samples)
    if progress is not None and not callable(progress):
        raise PFDistError(f"progress must be a function of the number of samples done (got {type(progress).__name__}).")
    keywords = dict(steps=steps, solver=solver, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    if flow is not None or any(v is not None for v in keywords.values()):
        flow = FlowSettings.of(flow, **keywords)
    p = make_plan({"a": a, "b": b}, reduce=lambda outs: squared_distances(*outs), shape=shape, flow=flow,
                  class_labels=class_labels, descriptor=descriptor, device=device, dtype=dtype, batch_size=batch_size)
    per_sample = p.evaluate_range(range(seed, seed + num_samples), progress)
    side_a, side_b = p.sides
    return PFDResult.from_per_sample(
        per_sample, seed=seed, nfe_a=side_a.nfe, nfe_b=side_b.nfe,
        flow_a=side_a.flow and side_a.flow.to_dict(), flow_b=side_b.flow and side_b.flow.to_dict(),
    )
