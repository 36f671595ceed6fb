"""The descriptor spaces of a run: built from the preset's specs once, saved in the run directory.

A kernel descriptor is fitted on the teacher's samples on the test seeds (TEST_SEED ..) at the
start of a run and saved as ``descriptors/<name>.safetensors``; later processes and reruns load
that file, so every student of a run is measured in the same space. Its fingerprint is part of
every unit's key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pfdist import distributed
from pfdist.descriptors import KernelDescriptor, NamedDescriptors, check_spec, kernel, resolve
from pfdist.errors import PFDistError
from pfdist.protocol import TEST_SEED, EvalConfig, teacher_samples

DESCRIPTORS_DIR = "descriptors"

# The presets' spaces: a saturating kernel space first (random Fourier features, bandwidth half the
# median nearest-neighbour distance of 1000 teacher samples), where a copier sits at a flat plateau
# as under the paper's SSCD, and pixels second.
KERNEL = {"type": "kernel", **kernel.SPEC_DEFAULTS}
SPACES = (KERNEL, "pixels")


def descriptor_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / DESCRIPTORS_DIR / f"{name}.safetensors"


def fit_samples(teacher: Callable, shape: tuple[int, ...], config: EvalConfig, *, device: Any = None,
                cache_dir: Any = None) -> Callable[[int], Any]:
    """n -> the teacher's samples on seeds TEST_SEED .. TEST_SEED + n - 1 (``progress(k)`` gets samples done)."""
    def samples(n: int, progress: Callable[[int], None] | None = None):
        return teacher_samples(teacher, range(TEST_SEED, TEST_SEED + n), shape=shape, flow=config.flow,
                               device=device, cache_dir=cache_dir, progress=progress)
    return samples


def build_spaces(specs: tuple, run_dir: str | Path, samples: Callable[[int], Any]) -> NamedDescriptors:
    """``{name: descriptor}`` for a preset's specs; kernels are fitted once and saved in ``run_dir``."""
    built = {}
    for spec in specs:
        spec = check_spec(spec)
        if spec["type"] == "kernel":
            path = descriptor_path(run_dir, spec["name"])
            if distributed.all_true(path.is_file()):  # every rank of a group, or none
                psi = KernelDescriptor.load(path)
                if psi.num_features != spec["num_features"] or psi.seed != spec["seed"]:
                    raise PFDistError(f"{path} does not match the preset's {spec['name']} descriptor; "
                                      "delete it to refit, or use another --out.")
            else:
                psi = resolve(spec, samples=samples)
                if distributed.is_main():
                    psi.save(path)
            built[spec["name"]] = psi
        else:
            built[spec["name"]] = resolve(spec)
    return NamedDescriptors(built)
