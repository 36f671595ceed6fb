"""How far a PFD's maps are from their exact ODE maps: step doubling and Richardson (docs/method.md, §2).

A fixed-grid solver of order p on N steps has, for smooth flows, a global error
e_N(x_T) = Phi_N(x_T) - Phi_exact(x_T) ~ C(x_T) N^-p, so Phi_N - Phi_2N ~ e_N (1 - 2^-p) and

    e_N  ~=  (Phi_N - Phi_2N) 2^p / (2^p - 1)                          (Richardson)

The side's ``solver_error`` is the RMS over seeds of |Psi(Phi_N) - Psi(Phi_2N)| times that
factor, on the first ``ERROR_SEEDS`` seeds of the comparison (the same x_T, labels and
descriptor as the PFD), so the estimate depends on the seeds only, never on batch size or
process count. The finer grid doubles ``steps`` and keeps everything else of the side's grid.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from pfdist.distance import squared_distances
from pfdist.errors import PFDistError
from pfdist.maps import GeneratorMap, ODEMap
from pfdist.outputs import FlowOutputs
from pfdist.plan import Plan, Side, make_plan
from pfdist.settings import FlowSettings
from pfdist.solvers import order

ERROR_SEEDS = 128  # seeds the estimate is made on (the first of the comparison's range)


def check_estimable(plan: Plan) -> None:
    """Refuse, before any work, a side whose discretisation error cannot be estimated."""
    for side in plan.sides:
        if isinstance(side.source, FlowOutputs) and side.flow is not None:
            raise PFDistError(
                f"error_estimate needs the model behind every ODE side, but {side.name} is precomputed outputs; "
                "pass its denoiser (or ode_map) instead, or leave error_estimate off.")
        if isinstance(side.source, ODEMap) and order(side.flow.solver) is None:
            raise PFDistError(
                f"error_estimate works on fixed-grid solvers; {side.name} uses the adaptive {side.flow.solver!r} "
                "solver, whose error is set by its tolerance (rtol 1e-7). Choose a fixed-grid solver.")


def richardson(grid: Tensor, doubled: Tensor, solver: str) -> float:
    """RMS over rows of the extrapolated error of ``grid``: |grid - doubled| 2^p / (2^p - 1); (batch, ...) each."""
    p = order(solver)
    if p is None:
        raise PFDistError(f"no convergence order for the adaptive {solver!r} solver; choose a fixed-grid solver.")
    return math.sqrt(squared_distances(grid, doubled).mean().item()) * 2**p / (2**p - 1)


def doubled_grid(flow: FlowSettings) -> FlowSettings:
    """The finer grid of the estimate: ``flow`` with twice the steps."""
    return replace(flow, steps=2 * flow.steps)


def side_error(plan: Plan, side: Side, seeds: range) -> float:
    """Estimated RMS of |Psi(Phi_grid(x_T)) - Psi(Phi_exact(x_T))| over ``seeds`` for one side.

    0 for a generator (or its precomputed outputs): it is its own exact map, nothing is discretised.
    """
    if isinstance(side.source, GeneratorMap) or side.flow is None:
        return 0.0
    source = side.source
    # The same map on both grids: its labels, its decoder (a latent model) and its start (pure noise).
    maps = {name: ODEMap(source.denoiser, flow, class_labels=source.class_labels, decoder=source.decoder,
                         pure_noise=source.pure_noise)
            for name, flow in (("grid", side.flow), ("doubled", doubled_grid(side.flow)))}
    pair = make_plan(maps, reduce=lambda outs: torch.stack(outs, 1), shape=plan.shape, descriptor=plan.descriptor,
                     device=plan.device, dtype=plan.dtype, batch_size=plan.batch_size, autocast=plan.autocast)
    outs = pair.evaluate_range(seeds)  # (seeds, 2, *features)
    return richardson(outs[:, 0], outs[:, 1], side.flow.solver)


def solver_errors(plan: Plan, seed: int, num_samples: int) -> tuple[float, float]:
    """(solver_error_a, solver_error_b) of a two-sided plan, on its first ERROR_SEEDS seeds."""
    seeds = range(seed, seed + min(num_samples, ERROR_SEEDS))
    a, b = (side_error(plan, side, seeds) for side in plan.sides)
    return a, b


def map_solver_error(model: object, *, flow: FlowSettings | None = None, shape: tuple[int, ...] | None = None,
                     seed: int = 100_000, num_samples: int = ERROR_SEEDS, device: object = None,
                     dtype: torch.dtype = torch.float32, batch_size: int = 256) -> float:
    """One map's estimated discretisation error on its grid: the RMS over ``seed ..`` of
    |Phi_grid(x_T) - Phi_exact(x_T)| (step doubling and Richardson, as in ``pfd(error_estimate=True)``).

    ``model``: a denoiser (mapped with ``flow``) or an ODE map; 0 for a generator.
    """
    source = model if isinstance(model, (ODEMap, GeneratorMap)) else ODEMap(model, flow)
    plan = make_plan({"map": source}, reduce=lambda outs: outs[0], shape=shape, device=device, dtype=dtype,
                     batch_size=batch_size)
    check_estimable(plan)
    return side_error(plan, plan.sides[0], range(seed, seed + num_samples))
