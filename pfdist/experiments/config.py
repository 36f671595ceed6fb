"""The preset: frozen, JSON round-trippable, hashed into run and unit identities.

A preset holds the teacher, the evaluation, the descriptor spaces and the config of each study it
runs (a study of :data:`pfdist.experiments.studies.STUDIES`, by name): ``Preset(name=..., teacher=...,
eval=..., scaling=Scaling(...), dynamics=Dynamics(...))``, read back as ``preset.scaling``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from pfdist import checks
from pfdist.descriptors import check_spec
from pfdist.errors import PFDistError
from pfdist.experiments.studies import STUDIES
from pfdist.experiments.studies.base import fields_of
from pfdist.hashing import content_hash
from pfdist.protocol import EvalConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # one path component: never "..", "/x" or "a/b"
OWN = tuple(name for name, s in STUDIES.items() if s.in_preset)  # the studies with a config of their own


@dataclass(frozen=True, init=False)
class Preset:
    """Everything one ``pfdist reproduce`` run does. ``teacher`` is a spec dict or a file path.

    Studies are keyword arguments named as in the registry (``scaling=``, ``dynamics=``, ...; None:
    not run) and read back as attributes; ``studies`` maps the names of those run to their configs.

    ``descriptors``: the spaces every error is measured in (specs of ``pfdist.descriptors.specs``),
    the first one primary (tables' unsuffixed columns, figures, fits); the others get columns
    suffixed with their name. A kernel descriptor is fitted on teacher samples at the start of the
    run and saved in the run directory.
    """

    name: str
    teacher: Any
    eval: EvalConfig
    studies: dict = field(default_factory=dict)
    workers: int = 1
    notes: str = ""
    descriptors: tuple = ("pixels",)

    def __init__(self, name: str, teacher: Any, eval: EvalConfig, studies: dict | None = None, workers: int = 1,
                 notes: str = "", descriptors: tuple = ("pixels",), **configs: Any):
        unknown = sorted(set(configs) - set(OWN))
        if unknown:
            raise PFDistError(f"Preset: unknown studies {unknown}; the studies are {', '.join(OWN)}.")
        merged = {**(studies or {}), **configs}
        for key, value in (("name", name), ("teacher", teacher), ("eval", eval), ("workers", workers),
                           ("notes", notes), ("descriptors", descriptors)):
            object.__setattr__(self, key, value)
        object.__setattr__(self, "studies", {s: merged[s] for s in OWN if merged.get(s) is not None})
        self._check()

    def __getattr__(self, name: str) -> Any:
        if name in OWN:  # preset.scaling: the study's config, None when not run
            return self.__dict__.get("studies", {}).get(name)
        raise AttributeError(f"'Preset' object has no attribute {name!r}")

    def _check(self) -> None:
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise PFDistError(f"preset name {self.name!r} is not a plain name: it names the default run directory "
                              "runs/<name>, so use letters, digits, '.', '_' and '-' (starting with a letter or "
                              "digit, at most 64), e.g. \"my-run\"; choose the directory itself with --out.")
        if not self.studies:
            raise PFDistError(f"preset {self.name!r} has no study; give at least one of {', '.join(OWN)}.")
        if isinstance(self.descriptors, (str, dict)) or not self.descriptors:
            raise PFDistError("Preset.descriptors must be a non-empty list of descriptor specs, e.g. "
                              '["pixels"] or [{"type": "kernel"}, "pixels"].')
        specs = tuple(check_spec(s) for s in self.descriptors)
        names = [s["name"] for s in specs]
        if len(set(names)) != len(names):
            raise PFDistError(f"descriptor names must be distinct (got {names}); give one a \"name\".")
        object.__setattr__(self, "descriptors", specs)
        for name, config in self.studies.items():  # what one study needs of the others
            STUDIES[name].check_preset(self, config)

    @property
    def spaces(self) -> tuple[str, ...]:
        """Descriptor names, primary first."""
        return tuple(s["name"] for s in self.descriptors)

    def to_dict(self) -> dict:
        d = {"name": self.name, "teacher": self.teacher, "eval": self.eval.to_dict()}
        for name in OWN:
            config = self.studies.get(name)
            d[name] = None if config is None else STUDIES[name].to_dict(config)
        return {**d, "workers": self.workers, "notes": self.notes, "descriptors": list(self.descriptors)}

    def key(self) -> str:
        """Identity of the science (not of how it is run: workers and notes are left out).

        Studies added after the first preset format are left out when absent, and fields added
        later at their defaults, so older run directories keep their key."""
        d = {"teacher": self.teacher, "eval": self.eval.to_dict()}
        for name in OWN:
            config = self.studies.get(name)
            if config is not None:
                d[name] = STUDIES[name].key_dict(config)
            elif STUDIES[name].keyed_when_absent:
                d[name] = None
        d["descriptors"] = list(self.descriptors)
        return content_hash("preset/v1", d)

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        """A preset from the form of :meth:`to_dict` (a parsed JSON file): missing keys take their
        defaults (an EvalConfig / TrainConfig field, ``workers``, ``notes``, an absent study);
        unknown keys, missing required ones and wrong types are refused with a PFDistError."""
        d = fields_of(d, "preset", {"name", "teacher"}, {"eval", "workers", "notes", "descriptors", *OWN})
        if not isinstance(d["name"], str) or not d["name"]:
            raise PFDistError(f"preset: name must be a non-empty string (got {d['name']!r}).")
        if not isinstance(d["teacher"], (str, dict)):
            raise PFDistError("preset: teacher must be a distribution spec (object) or a file path (string).")
        studies = {name: STUDIES[name].from_dict(d.pop(name)) for name in OWN if d.get(name) is not None}
        for name in OWN:
            d.pop(name, None)
        d["eval"] = _eval(d.get("eval", {}))
        checks.integer("preset: workers", d.get("workers", 1), lo=1)
        if not isinstance(d.get("notes", ""), str):
            raise PFDistError("preset: notes must be a string.")
        if "descriptors" in d:
            if not isinstance(d["descriptors"], (list, tuple)):
                raise PFDistError('preset: descriptors must be a list of descriptor specs, e.g. [{"type": "kernel"}, "pixels"].')
            d["descriptors"] = tuple(d["descriptors"])
        return cls(**d, studies=studies)

    def replace(self, **changes: Any) -> "Preset":
        return replace(self, **changes)


def _eval(d: Any) -> EvalConfig:
    d = fields_of(d, "eval", set(), set(EvalConfig.keys()))
    try:
        return EvalConfig.from_dict(d)
    except TypeError as e:
        raise PFDistError(f"eval: {e}.") from None
