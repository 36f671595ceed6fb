"""One comparison, resolved: maps on shared seed-addressed noise, evaluated one seed range at a time.

:func:`make_plan` turns the sides of a comparison (denoisers, maps, precomputed outputs) into a
:class:`Plan` after checking that they can share x_T: one data shape, one noise level T, one
grid range (the intersection of the models' sigma ranges), the same labels, and precomputed
outputs made with this descriptor and dtype. :meth:`Plan.evaluate_range` is the only seed-batch
loop of the package; ``pfd`` and ``flow_outputs`` both run through it, and a contiguous seed
range can be evaluated alone (on another process or machine) and joined in seed order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from pfdist import distributed
from pfdist.descriptors import Descriptor, check_descriptor, describe, identity
from pfdist import checks
from pfdist.errors import NonFiniteError, PFDistError
from pfdist.maps import GeneratorMap, ODEMap, label_dim
from pfdist.noise import noise, seeded_labels
from pfdist.ode import data_shape
from pfdist.outputs import FlowOutputs
from pfdist.settings import FlowSettings

Source = ODEMap | GeneratorMap | FlowOutputs


def resolve_device(device: Any, *models: Any) -> torch.device:
    """The requested device, else the first module's, else the CPU; refuses devices that are absent."""
    if device is None:
        return next((d for d in map(_module_device, models) if d is not None), torch.device("cpu"))
    return checks.device("device", device)  # refuses absent devices and 'meta'


def _module(model: Any) -> torch.nn.Module | None:
    """The torch module behind a denoiser, a map or a bound method, if any."""
    if isinstance(model, ODEMap):
        model = model.denoiser
    elif isinstance(model, GeneratorMap):
        model = model.fn
    model = getattr(model, "__self__", model)
    return model if isinstance(model, torch.nn.Module) else None


def _module_device(model: Any) -> torch.device | None:
    p = next(_module(model).parameters(), None) if _module(model) is not None else None
    return None if p is None else p.device


@dataclass
class Side:
    """One map of a comparison: its source, the grid it runs on, and its evaluation count."""

    name: str
    source: Source
    flow: FlowSettings | None  # the grid actually used (None for a generator)
    calls: int = 0
    batches: int = 0

    @property
    def nfe(self) -> float:
        """Network evaluations per sample (counted for ODE maps, declared or recorded otherwise)."""
        if isinstance(self.source, ODEMap):
            return self.calls / self.batches if self.batches else float(self.flow.nfe or math.nan)
        return float(self.source.nfe)


@dataclass
class Plan:
    """Sides that share x_T = T z(seed) (and labels), reduced batch by batch (see module docstring)."""

    sides: list[Side]
    shape: tuple[int, ...]  # of x_T (a decoded map's outputs have their own data shape)
    sigma_max: float  # T
    descriptor: Descriptor
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    reduce: Callable[[list[Tensor]], Tensor]  # per-side outputs of one batch -> (batch, ...)
    label_dim: int = 0
    class_labels: int | None = None
    autocast: torch.dtype | None = None  # networks' matmuls and convolutions in this dtype; the ODE state stays in dtype

    @property
    def precision(self) -> str:
        """The record of how the maps ran: ``dtype``, and the autocast dtype when one is used."""
        return str(self.dtype) if self.autocast is None else f"{self.dtype}+autocast:{self.autocast}"

    def labels(self, seeds: range) -> Tensor | None:
        if not self.label_dim:
            return None
        if self.class_labels is None:
            return seeded_labels(seeds, self.label_dim, device=self.device, dtype=self.dtype)
        one_hot = torch.zeros(len(seeds), self.label_dim, device=self.device, dtype=self.dtype)
        one_hot[:, self.class_labels] = 1
        return one_hot

    def evaluate_range(self, seeds: range, progress: Callable[[int], None] | None = None) -> Tensor:
        """``reduce`` of every side's Psi(Phi(x_T)) for a contiguous seed range, in seed order, on the CPU.

        The only seed-batch loop: each seed's noise and label are pure functions of the seed, so
        results depend on ``batch_size`` only through the float rounding of a network's batched
        arithmetic; in a process group each rank takes whole batches of this loop, so they do not
        depend on the number of processes at all.
        """
        if not isinstance(seeds, range) or seeds.step != 1 or len(seeds) == 0:
            raise PFDistError(f"seeds must be a non-empty contiguous range (got {seeds!r}).")
        for side in self.sides:
            if isinstance(side.source, FlowOutputs):
                side.source.slice(seeds.start, len(seeds))  # range check before any work
        live = any(not isinstance(s.source, FlowOutputs) for s in self.sides)
        counted = [(side.calls, side.batches) for side in self.sides]

        def block(first: int, count: int) -> tuple[Tensor, list[tuple[int, int]]]:
            chunks = []
            with torch.no_grad():
                for start in range(first, first + count, self.batch_size):
                    batch = range(start, min(start + self.batch_size, first + count))
                    x_T = noise(batch, self.shape, self.sigma_max, device=self.device, dtype=self.dtype) if live else None
                    labels = self.labels(batch) if live else None
                    outs = [self._side_batch(side, batch, x_T, labels) for side in self.sides]
                    if len({tuple(o.shape) for o in outs}) > 1:
                        raise PFDistError(f"the maps' outputs differ in shape {[tuple(o.shape[1:]) for o in outs]}; "
                                          "PFD compares maps on the same space (decode latent models to images).")
                    chunks.append(self.reduce(outs).cpu())
                    if progress:
                        progress(len(batch))
            return torch.cat(chunks), [(s.calls - c, s.batches - b) for s, (c, b) in zip(self.sides, counted)]

        # In a torch.distributed group each rank does one contiguous block (pfdist.distributed).
        values, counts = distributed.over_seeds(block, seeds.start, len(seeds), progress, unit=self.batch_size)
        for i, (side, (calls, batches)) in enumerate(zip(self.sides, counted)):  # every rank's evaluations
            side.calls, side.batches = calls + sum(c[i][0] for c in counts), batches + sum(c[i][1] for c in counts)
        return values

    def _side_batch(self, side: Side, seeds: range, x_T: Tensor | None, labels: Tensor | None) -> Tensor:
        if isinstance(side.source, FlowOutputs):
            return side.source.slice(seeds.start, len(seeds)).to(self.device)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            x_0, calls = side.source.run(x_T, labels, side.flow, name=side.name)
        x_0 = x_0.to(self.dtype)
        side.calls, side.batches = side.calls + calls, side.batches + 1
        where = f"seeds {seeds.start}..{seeds.stop - 1}"
        if not torch.isfinite(x_0).all():
            bad = [s for s, ok in zip(seeds, torch.isfinite(x_0.flatten(1)).all(1).tolist()) if not ok]
            raise NonFiniteError(f"model {side.name} produced NaN or Inf on {where} ({len(bad)} bad, first "
                                 f"{bad[0]}); check the model at small and large sigma.")
        return describe(x_0, self.descriptor, len(x_0), where=f" on {where} for model {side.name}")


def requested_flow(flow: FlowSettings | None, **fields: Any) -> FlowSettings | None:
    """``FlowSettings.of(flow, **fields)`` when ``flow`` or a field is given, else None (then
    :func:`make_plan` takes the grid of precomputed outputs, or EDM's defaults)."""
    if flow is None and all(v is None for v in fields.values()):
        return None
    return FlowSettings.of(flow, **fields)


def make_plan(
    models: dict[str, Any],
    *,
    reduce: Callable[[list[Tensor]], Tensor],
    shape: Sequence[int] | None = None,
    flow: FlowSettings | None = None,
    class_labels: int | None = None,
    descriptor: Descriptor = identity,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 256,
    autocast: torch.dtype | None = None,
) -> Plan:
    """Resolve and check the sides of a comparison (see the module docstring).

    A plain denoiser becomes ``ode_map(denoiser, flow, class_labels=class_labels)``. ``flow=None``
    means: the grid of the first precomputed ODE outputs among the sides, else EDM's defaults;
    a given ``flow`` must also be the grid any precomputed ODE outputs were made on.
    """
    checks.integer("batch_size", batch_size, lo=1)
    if dtype not in (torch.float32, torch.float64):
        raise PFDistError(f"dtype must be torch.float32 or torch.float64 (got {dtype}).")
    if autocast is not None and (autocast not in (torch.bfloat16, torch.float16) or dtype != torch.float32):
        raise PFDistError(f"autocast must be torch.bfloat16 or torch.float16 with dtype=torch.float32 (got "
                          f"autocast={autocast}, dtype={dtype}): networks run in it, the ODE state in float32.")
    explicit = flow is not None
    precomputed = [m for m in models.values() if isinstance(m, FlowOutputs)]
    base = FlowSettings.of(flow) if explicit else next((p.flow for p in precomputed if p.flow), FlowSettings())
    sources: dict[str, Source] = {}
    for name, m in models.items():
        if isinstance(m, (ODEMap, GeneratorMap, FlowOutputs)):
            sources[name] = m
        elif callable(m):  # class_labels go to the class-conditional ones
            sources[name] = ODEMap(m, base, class_labels=class_labels if label_dim(m) else None)
        else:
            raise PFDistError(f"{name} is a {type(m).__name__}; pass a denoiser D(x, sigma), a map "
                              "(pfdist.ode_map, pfdist.generator) or pfdist.FlowOutputs.")
    if class_labels is not None and not any(isinstance(s, ODEMap) and s.class_labels is not None for s in sources.values()):
        raise PFDistError(f"class_labels={class_labels!r} was given but no plain denoiser here is class-conditional "
                          "(declares label_dim > 0); maps bring their own: ode_map(d, class_labels=...).")
    shape = _common_shape(sources, shape)
    grids = _grids(sources, base if explicit else None)
    levels = {name: grids[name].sigma_max if isinstance(s, ODEMap) else s.sigma_max for name, s in sources.items()}
    if len(set(levels.values())) > 1:
        raise PFDistError(f"the maps draw x_T at different noise levels T {levels}; PFD compares maps on the same "
                          "x_T: give each the same sigma_max (FlowSettings(sigma_max=...), generator(fn, sigma_max=...)).")
    conds = {name: s.conditioning for name, s in sources.items() if s.conditioning is not None}
    if len(set(conds.values())) > 1:
        raise PFDistError(f"the maps use different class labels {conds}; give them the same label_dim and class_labels.")
    desc = check_descriptor(descriptor)
    for name, s in sources.items():
        if not isinstance(s, FlowOutputs):
            continue
        if not s.matches_descriptor(desc):
            raise PFDistError(
                f"{name}: precomputed outputs were made with descriptor {s.descriptor}, not with this call's "
                f"descriptor {getattr(desc, '__name__', type(desc).__name__)}; pass the same descriptor (a callable without "
                "fingerprint() matches only the very object used), or recompute them with flow_outputs(..., descriptor=...)."
            )
        precision = str(dtype) if autocast is None else f"{dtype}+autocast:{autocast}"
        if s.dtype != precision:
            raise PFDistError(f"{name}: precomputed in {s.dtype}, but this call runs in {precision}; pass the same "
                              "dtype= and autocast=.")
    live = {name: s for name, s in sources.items() if not isinstance(s, FlowOutputs)}
    device = resolve_device(device, *live.values())
    for name, s in live.items():
        _check_module(s, name, device, dtype)
    labelled = next((s for s in live.values() if s.label_dim), None)
    sides = [Side(name, s, grids[name]) for name, s in sources.items()]
    return Plan(sides, shape, next(iter(levels.values())), desc, device, dtype, batch_size, reduce,
                labelled.label_dim if labelled else 0, labelled.class_labels if labelled else None, autocast)


def _noise_shape(source: Source) -> tuple[int, ...] | None:
    own = source.noise_shape if isinstance(source, (ODEMap, GeneratorMap)) else source.noise_shape or source.shape
    return None if own is None else tuple(own)


def _common_shape(sources: dict[str, Source], shape: Sequence[int] | None) -> tuple[int, ...]:
    """The shape of x_T shared by every side; their data shapes (decoded images) must agree too."""
    outputs = {name: data_shape(s) for name, s in sources.items() if data_shape(s) is not None}
    if len(set(outputs.values())) > 1:
        raise PFDistError(f"the maps have different data shapes {outputs}; PFD compares maps on the same space "
                          "(a latent model's map needs its decoder: ode_map(..., decoder=...)).")
    known = {name: _noise_shape(s) for name, s in sources.items() if _noise_shape(s) is not None}
    if len(set(known.values())) > 1:
        raise PFDistError(f"the maps draw x_T of different shapes {known}; PFD compares maps on the same noise.")
    if shape is None:
        if not known:
            raise PFDistError("pass shape=(...): no model says its data shape.")
        return next(iter(known.values()))
    shape = checks.shape("shape", shape)  # positive ints only: (0,) or (-1,) are refused
    for name, own in known.items():
        if own != shape:
            raise PFDistError(f"{name} works on data of shape {own} but shape={shape} was asked for; "
                              "compare models of the same data shape.")
    return shape


def _grids(sources: dict[str, Source], explicit: FlowSettings | None) -> dict[str, FlowSettings | None]:
    """Each side's grid: ODE grids clamped to the intersection of every model's sigma range."""
    ranges = [s.sigma_range for s in sources.values() if isinstance(s, ODEMap)]
    ranges += [(s.flow.sigma_min, s.flow.sigma_max) for s in sources.values() if isinstance(s, FlowOutputs) and s.flow]
    lo, hi = max((r[0] for r in ranges), default=0.0), min((r[1] for r in ranges), default=math.inf)
    grids = {}
    for name, s in sources.items():
        if isinstance(s, ODEMap):
            grids[name] = s.flow.clamped(lo, hi)
        elif isinstance(s, FlowOutputs):
            grids[name] = s.flow
            if explicit is not None and s.flow is not None and s.flow != explicit.clamped(lo, hi):
                raise PFDistError(f"{name}: precomputed on {s.flow}, but this call asks for {explicit.clamped(lo, hi)}; "
                                  "recompute them with those settings, or wrap the other side in ode_map(..., flow=...).")
        else:
            grids[name] = None
    return grids


def _check_module(source: ODEMap | GeneratorMap, name: str, device: torch.device, dtype: torch.dtype) -> None:
    module = _module(source)
    p = next(module.parameters(), None) if module is not None else None
    if p is None:
        return
    if p.device != device:
        raise PFDistError(f"{name}'s parameters are on {p.device} but device={device}; pass device='{p.device}' or move it.")
    casts = any(getattr(m, "compute_dtype", None) is not None for m in module.modules())  # EDM2 nets cast their weights
    if p.dtype != dtype and not casts:
        raise PFDistError(f"{name}'s parameters are {p.dtype} but dtype={dtype}; pass dtype={p.dtype} or cast it.")
