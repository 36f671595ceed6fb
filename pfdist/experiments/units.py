"""Units of work: one student each, with its own directory and results file.

A unit's directory is named by the content hash of everything that determines its result, so
a rerun skips finished units, a killed unit resumes from its checkpoint, and two experiments
that need the same student (scaling and bias-variance at dataset 0) share it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from pfdist.data import real_data
from pfdist.errors import PFDistError
from pfdist.flows import resolve_device
from pfdist.hashing import content_hash
from pfdist.experiments.config import Preset
from pfdist.experiments.studies import STUDIES, Student, Unit
from pfdist.nets import NetSpec
from pfdist.protocol import (TEST_SEED, EvalConfig, copier_outputs, dataset_seeds, read_results, student_key,
                             teacher_map, teacher_samples, teacher_student)
from pfdist.specs import build_distribution, data_shape, load_spec


def load_teacher(spec: Any) -> Any:
    """A teacher from a preset: a spec dict (exact distribution) or a path (file or checkpoint)."""
    if isinstance(spec, dict):
        return build_distribution(spec)
    return load_spec(spec)


def units_of(preset: Preset) -> list[Unit]:
    """Every unit a preset needs, in a stable order (the registry's, then each study's)."""
    units = []
    for study in STUDIES.values():
        config = study.config(preset)
        if config is not None:
            units += study.units(config)
    return units


class Context:
    """What every unit of one run shares: the teacher, its maps, the data shape, the cache."""

    def __init__(self, preset: Preset, run_dir: str | os.PathLike, device: Any = None):
        self.preset, self.run_dir = preset, Path(run_dir)
        self.device = resolve_device(device)
        self.teacher = load_teacher(preset.teacher)
        shape = data_shape(self.teacher)
        if shape is None:
            raise PFDistError("the preset's teacher does not say its data shape; use a distribution or checkpoint that does.")
        self.shape = shape
        self.cache = self.run_dir / "cache"
        self._teacher_outputs = None
        self._datasets: dict[tuple[int, int], torch.Tensor] = {}
        self._real_data: dict[str, torch.Tensor] = {}
        self._data_keys: dict[tuple[str, int], str] = {}
        self._descriptors = None
        self._nets: dict[str, NetSpec] = {}
        # Set by the driver: (description, total) -> a context manager giving progress(n) for one phase.
        self.phases: Callable[[str, int], Any] | None = None

    def phase(self, what: str, total: int):
        """One phase's progress callback (None when no bars were asked for)."""
        return self.phases(what, total) if self.phases is not None else contextlib.nullcontext(None)

    @property
    def descriptors(self):
        """The run's descriptor spaces (kernels fitted on teacher samples once, saved in the run dir)."""
        if self._descriptors is None:
            from pfdist.experiments.spaces import build_spaces, fit_samples

            fit = fit_samples(self.teacher, self.shape, self.preset.eval, device=self.device, cache_dir=self.cache)

            def samples(n: int):
                with self.phase("descriptor fit: teacher samples", n) as progress:
                    return fit(n, progress)

            self._descriptors = build_spaces(self.preset.descriptors, self.run_dir, samples)
        return self._descriptors

    def net_config(self, student: Student) -> NetSpec:
        """The student's network config, validated once per run (the config becomes an object here)."""
        key = json.dumps(student.net, sort_keys=True)
        if key not in self._nets:
            self._nets[key] = NetSpec({**student.net, "shape": list(self.shape)})
        return self._nets[key]

    def data_key(self, unit: Unit) -> str | None:
        """None for teacher samples; else the real data's name and content hash."""
        if unit.source == "teacher":
            return None
        if (unit.source, unit.n) not in self._data_keys:
            self._data_keys[unit.source, unit.n] = f"{unit.source}:{content_hash(self.train_data(unit))}"
        return self._data_keys[unit.source, unit.n]

    def key(self, unit: Unit) -> str:
        return STUDIES[unit.experiment].unit_key(self, unit)

    def student_key(self, unit: Unit) -> str:
        """The key of a student trained on N samples (:func:`pfdist.protocol.student_key`)."""
        return student_key(self.teacher, unit.n, self.net_config(unit.student), unit.train, self.preset.eval,
                           unit.dataset_index, self.descriptors, unit.eval_epochs, self.data_key(unit))

    def unit_dir(self, unit: Unit) -> Path:
        return self.run_dir / "units" / self.key(unit)[:16]

    def is_done(self, unit: Unit) -> bool:
        return read_results(self.unit_dir(unit), self.key(unit)) is not None

    @property
    def teacher_outputs(self):
        if self._teacher_outputs is None:
            with self.phase("teacher maps", self.preset.eval.num_samples) as progress:
                self._teacher_outputs = teacher_map(self.teacher, self.shape, self.preset.eval, device=self.device,
                                                    cache_dir=self.cache, progress=progress)
        return self._teacher_outputs

    def train_data(self, unit: Unit) -> torch.Tensor:
        """Nested sets: dataset 0 of every size is a prefix of one stream (computed once, cached);
        real data are the first N of their fixed shuffled order."""
        if unit.source != "teacher":
            return self._real(unit.source, unit.n)
        if unit.dataset_index == 0:
            n_max = max(u.n for u in units_of(self.preset) if u.dataset_index == 0 and u.source == "teacher")
            return self._dataset(n_max, 0)[: unit.n]
        return self._dataset(unit.n, unit.dataset_index)

    def _real(self, name: str, n: int) -> torch.Tensor:
        if name not in self._real_data:
            data = real_data(name)
            if tuple(data.shape[1:]) != self.shape:
                raise PFDistError(f"real data {name!r} have shape {tuple(data.shape[1:])}, the teacher {self.shape}; "
                                  "compare real and synthetic data of one shape.")
            self._real_data[name] = data
        data = self._real_data[name]
        if n > data.shape[0]:
            raise PFDistError(f"real data {name!r} hold {data.shape[0]} items, fewer than N = {n}; "
                              "use smaller N in real_vs_synthetic.")
        return data[:n]

    def _dataset(self, n: int, index: int) -> torch.Tensor:
        if (n, index) not in self._datasets:
            ev: EvalConfig = self.preset.eval
            seeds = dataset_seeds(n, index, eval_seeds=range(ev.seed, ev.seed + ev.num_samples))
            with self.phase(f"training set N={n}" + (f" #{index}" if index else ""), len(seeds)) as progress:
                self._datasets[(n, index)] = teacher_samples(self.teacher, seeds, shape=self.shape,
                                                             flow=ev.flow, device=self.device,
                                                             cache_dir=self.cache, progress=progress)
        return self._datasets[(n, index)]

    def prepare(self, units: list[Unit]) -> None:
        """What the driver computes (and caches) once before fanning ``units`` out, a bar per phase:
        the teacher's maps, its test samples, each training set and its ideal copier's map."""
        ev = self.preset.eval
        self.teacher_outputs
        with self.phase("teacher test samples", ev.test_samples) as progress:
            teacher_samples(self.teacher, range(TEST_SEED, TEST_SEED + ev.test_samples), shape=self.shape,
                            flow=ev.flow, device=self.device, cache_dir=self.cache, progress=progress)
        sets = {(u.source, u.n, u.dataset_index): u for u in units}
        for unit in sets.values():
            self.train_data(unit)
        for (source, n, index), unit in sets.items():
            label = f"ideal copier N={n}" + (f" #{index}" if index else "") + ("" if source == "teacher" else f" {source}")
            with self.phase(label, ev.num_samples) as progress:
                copier_outputs(self.train_data(unit), ev, device=self.device, cache_dir=self.cache, progress=progress)

    def check(self) -> None:
        """Everything a unit would refuse later, refused now (nothing is computed or written):
        each unit's own checks (a student's network, training set seeds, real data), the descriptor files."""
        from pfdist.descriptors.files import module_format

        for unit in units_of(self.preset):
            STUDIES[unit.experiment].check_unit(self, unit)
        for spec in self.preset.descriptors:
            if spec["type"] in ("file", "sscd"):
                module_format(Path(spec["path"]))
            elif spec["type"] == "saved" and not Path(spec["path"]).is_file():
                raise PFDistError(f"descriptor file {spec['path']} does not exist.")

    def check_student(self, unit: Unit) -> None:
        """A student's network, and its training set's seeds or real data."""
        ev = self.preset.eval
        try:
            self.net_config(unit.student)
        except PFDistError as e:
            raise PFDistError(f"{unit.experiment} student {unit.student.label!r}: {e}") from None
        if unit.source == "teacher":
            dataset_seeds(unit.n, unit.dataset_index, eval_seeds=range(ev.seed, ev.seed + ev.num_samples))
        else:
            self._real(unit.source, unit.n)

    def run(self, unit: Unit, progress: Callable | None = None) -> dict:
        """Do one unit (resuming from its checkpoint), as its study does it."""
        return STUDIES[unit.experiment].run_unit(self, unit, progress)

    def train_student(self, unit: Unit, progress: Callable | None = None) -> dict:
        """Train a student on the unit's N samples and evaluate it (:func:`pfdist.protocol.teacher_student`)."""
        return teacher_student(
            self.teacher, unit.n, self.net_config(unit.student), unit.train, self.unit_dir(unit), shape=self.shape,
            eval_config=self.preset.eval, dataset_index=unit.dataset_index, teacher_outputs=self.teacher_outputs,
            train_data=self.train_data(unit), eval_epochs=unit.eval_epochs, device=self.device, descriptor=self.descriptors,
            cache_dir=self.cache, progress=progress, data_key=self.data_key(unit),
        )
