"""How noise becomes data: the one owner of the PF-ODE solver settings and their EDM defaults.

Every default of the sampler (18 steps, Heun, sigma_min 0.002, sigma_max 80, rho 7; EDM's
deterministic sampler) lives here and nowhere else: other modules refer to ``FlowSettings()``
or to its class attributes (``FlowSettings.sigma_max``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.schedules import edm_sigmas
from pfdist.solvers import SOLVERS, nfe

MIN_STEPS, MAX_STEPS = 2, 10_000  # sigma-grid steps; EDM uses 18 to 256
SIGMA_LIMIT = 1e6  # largest sigma_max: x_T ~ N(0, T^2 I) and T^2 stay far inside float32 (EDM: 80, VE models ~1e3)
SIGMA_FLOOR = 1e-10  # smallest sigma_min: sigma^2 stays a normal float (EDM: 0.002)


@dataclass(frozen=True)
class FlowSettings:
    """The PF-ODE solver and its sigma grid (EDM eq. 5): ``sigmas()`` is what the solver runs on.

    Validated when constructed: ``steps`` an integer in [MIN_STEPS, MAX_STEPS], ``solver`` one of
    ``pfdist.solvers.SOLVERS``, ``SIGMA_FLOOR <= sigma_min < sigma_max <= SIGMA_LIMIT``, ``rho`` finite and positive.
    Numbers are stored as ``int`` / ``float``, so ``FlowSettings(sigma_max=80)`` equals the default.
    """

    steps: int = 18
    solver: str = "heun"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "steps", checks.integer("steps", self.steps, lo=MIN_STEPS, hi=MAX_STEPS))
        if not isinstance(self.solver, str) or self.solver not in SOLVERS:
            raise PFDistError(f"unknown solver {self.solver!r}; choose one of {sorted(SOLVERS)}.")
        for name in ("sigma_min", "sigma_max", "rho"):
            set_(self, name, checks.real(name, getattr(self, name), positive=True))
        if self.sigma_min < SIGMA_FLOOR:
            raise PFDistError(f"sigma_min must be at least {SIGMA_FLOOR:g} (got {self.sigma_min:g}): below it sigma^2 "
                              "underflows; EDM uses 0.002.")
        if self.sigma_max > SIGMA_LIMIT:
            raise PFDistError(f"sigma_max must be at most {SIGMA_LIMIT:g} (got {self.sigma_max:g}): noise that large "
                              "overflows float32; EDM uses 80.")
        if not self.sigma_min < self.sigma_max:
            raise PFDistError(
                f"need sigma_min < sigma_max (got sigma_min={self.sigma_min}, sigma_max={self.sigma_max})."
            )

    @classmethod
    def of(cls, flow: "FlowSettings | None" = None, **overrides: Any) -> "FlowSettings":
        """``flow`` (default: EDM's) with the fields in ``overrides`` that are not None replaced."""
        if flow is not None and not isinstance(flow, FlowSettings):
            raise PFDistError(f"flow must be a FlowSettings (got {type(flow).__name__}).")
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(flow or cls(), **given)

    @classmethod
    def from_dict(cls, d: dict) -> "FlowSettings":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise PFDistError(f"unknown flow settings {unknown}; valid: {sorted(cls.__dataclass_fields__)}.")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def sigmas(self) -> Tensor:
        """The decreasing grid ``(steps + 1,)`` ending in 0, float64."""
        return edm_sigmas(self.steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho)

    @property
    def nfe(self) -> int | None:
        """Denoiser evaluations per sample (None for the adaptive reference solver)."""
        return nfe(self.solver, self.steps)

    def clamped(self, sigma_min: float = 0.0, sigma_max: float = math.inf) -> "FlowSettings":
        """The same settings on the part of the grid's range inside [sigma_min, sigma_max].

        As EDM's sampler clamps its grid to ``net.sigma_min`` / ``net.sigma_max``; refused when
        the two ranges do not overlap.
        """
        lo, hi = max(self.sigma_min, sigma_min), min(self.sigma_max, sigma_max)
        if not lo < hi:
            raise PFDistError(
                f"the grid [{self.sigma_min}, {self.sigma_max}] and the models' sigma range "
                f"[{sigma_min}, {sigma_max}] do not overlap; choose sigma_min/sigma_max inside the models' range."
            )
        return replace(self, sigma_min=lo, sigma_max=hi)
