"""``pfdist distance``: PFD between two models on shared seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import (AUTOCAST_HELP, CHANNELS_LAST_HELP, COMPILE_HELP, Command, SPEC_HELP, app, fail, log,
                               progress_bar)
from pfdist.errors import PFDistError
from pfdist.settings import MAX_STEPS, MIN_STEPS, FlowSettings


@app.command(cls=Command)
def distance(
    a: Path = typer.Argument(..., help="First model: a distribution file (.json/.safetensors), a checkpoint, an EDM/EDM2 snapshot (or a JSON spec naming one with its guide and VAE), a diffusers directory (or a JSON spec naming one with its conditioning file), a .pt2 program or a distilled student's directory (its few-step map)."),
    b: Path = typer.Argument(..., help="Second model, same data shape."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", "-n", show_default="10000", help="Shared noise seeds M."),
    seed: Optional[int] = typer.Option(None, show_default="100000", help="First evaluation seed; seeds are seed..seed+M-1."),
    seeds: Optional[str] = typer.Option(None, help="Seeds in EDM's syntax instead of --seed/-n: ranges and lists, e.g. 0-49999 or 0-9,20,30-39."),
    steps: int = typer.Option(FlowSettings.steps, help=f"Sigma-grid steps, {MIN_STEPS}..{MAX_STEPS} (Heun: 2*steps-1 denoiser calls)."),
    solver: str = typer.Option(FlowSettings.solver, help="heun, euler, dpmpp_2m, dpmpp_3m, unipc or reference (adaptive dopri5)."),
    sigma_max: float = typer.Option(FlowSettings.sigma_max, help="T: x_T ~ N(0, T^2 I)."),
    descriptor: Optional[str] = typer.Option(None, help=SPEC_HELP + " A kernel spec is fitted on A's samples on the "
                                             "protocol's test seeds, as the presets fit theirs on the teacher's."),
    batch_size: int = typer.Option(256, help="Seeds per batch (not the noise; a network's last float32 bit may depend on it: compare results made with one batch size)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cpu)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result JSON here."),
    per_sample: bool = typer.Option(False, help="Include the per-seed squared distances in the JSON."),
    error_estimate: bool = typer.Option(
        True, "--error-estimate/--no-error-estimate",
        help="Estimate each map's discretisation error on its grid (doubled steps on the first 128 seeds, "
             "Richardson; about 3 x 128 / M of the run): solver_error bounds |PFD - PFD of the exact maps|. "
             "Not made for the adaptive reference solver."),
    autocast: Optional[str] = typer.Option(None, help=AUTOCAST_HELP),
    channels_last: bool = typer.Option(False, "--channels-last", help=CHANNELS_LAST_HELP),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
) -> None:
    """PFD between two models on shared seeds; prints value ± CI and writes a JSON result.

    Under torchrun (``torchrun --nproc_per_node=K -m pfdist distance A B``) each process evaluates
    one block of the seeds on its device (``--device cuda`` is cuda:LOCAL_RANK); rank 0 prints
    and writes the result, which is the same as one process's.
    """
    from pfdist import checks, distributed
    from pfdist.accel import Accel, accelerate
    from pfdist.atomic import atomic_write_json, check_writable
    from pfdist.descriptors import check_spec
    from pfdist.metric import pfd

    num_samples, seed, total = _seeds_option(num_samples, seed, seeds)
    checks.integer("--steps", steps, lo=MIN_STEPS, hi=MAX_STEPS)
    checks.integer("--batch-size", batch_size, lo=1)
    if device is not None:
        checks.device("--device", device)
    if out is not None:
        check_writable(out)
    try:
        spec = check_spec(descriptor or "pixels")
        flow = FlowSettings(steps=steps, solver=solver, sigma_max=sigma_max)
    except PFDistError as e:
        fail(str(e))

    main = distributed.is_main()
    log.info("PFD of %s and %s on %d seeds (%s), %s with %d steps", a, b, total,
             seeds or f"{seed}-{seed + num_samples - 1}", solver, steps)
    try:
        accel = Accel(autocast, channels_last, compile_)
        with distributed.process_group(device) as device:
            da, db = distributed.together(lambda: (_model(a, flow), _model(b, flow)))
            da, db = accelerate(da, accel), accelerate(db, accel)
            psi = distributed.together(lambda: _descriptor(spec, da, flow, device))
            with progress_bar(total, "PFD", disable=not main) as bar:
                result = pfd(
                    da, db, num_samples=num_samples, seed=seed, seeds=seeds, steps=steps, solver=solver,
                    sigma_max=sigma_max, descriptor=psi, batch_size=batch_size, device=device,
                    progress=bar.update, error_estimate=error_estimate and solver != "reference",
                )
    except PFDistError as e:
        fail(str(e) if main else None)
    if not main:
        return
    typer.echo(str(result))
    record = {"a": str(a), "b": str(b), "solver": solver, "steps": steps, "sigma_max": sigma_max,
              "descriptor": spec, "seeds": seeds, **result.to_dict(per_sample=per_sample)}
    if out is not None:
        atomic_write_json(out, record)
        typer.echo(f"wrote {out}")


def _seeds_option(num_samples: int | None, seed: int | None, seeds: str | None) -> tuple[int | None, int | None, int]:
    """``--seeds``, or ``--seed`` and ``-n`` with their defaults filled in; and the number of seeds."""
    from pfdist import checks

    if seeds is not None:
        if num_samples is not None or seed is not None:
            fail("--seeds replaces --seed and --num-samples/-n; give one or the other.")
        return None, None, sum(map(len, checks.seed_ranges("--seeds", seeds)))
    num_samples, seed = 10_000 if num_samples is None else num_samples, 100_000 if seed is None else seed
    total = checks.integer("--num-samples", num_samples, lo=1)
    checks.seed_range("--seed", seed, num_samples, "--num-samples")
    return num_samples, seed, total


def _model(path: Path, flow: FlowSettings):
    """A model as ``pfdist distance`` compares it: a distilled student's few-step map, else :func:`load_map`'s."""
    from pfdist.specs import distilled_student, load_map

    student = distilled_student(path)
    if student is None:
        return load_map(path, flow)
    from pfdist.protocol import load_distilled

    return load_distilled(student)


def _descriptor(spec: dict, model, flow: FlowSettings, device):
    """The descriptor ``spec`` names; a kernel is fitted on ``model``'s samples on seeds TEST_SEED..
    (the seeds the presets fit their kernels on)."""
    from pfdist.descriptors import resolve
    from pfdist.maps import ODEMap
    from pfdist.ode import data_shape
    from pfdist.flows import flow_outputs
    from pfdist.protocol import TEST_SEED, teacher_samples

    def samples(n: int):
        if isinstance(model, ODEMap):  # a spec's own map (decoded, one class): its outputs on those seeds
            return flow_outputs(model, num_samples=n, seed=TEST_SEED, device=device).values.cpu()
        shape = data_shape(model)
        if shape is None:
            raise PFDistError("a kernel spec is fitted on A's samples, but A does not say its data shape; fit a "
                              "KernelDescriptor in Python, save it and give the .safetensors file.")
        return teacher_samples(model, range(TEST_SEED, TEST_SEED + n), shape=shape, flow=flow, device=device)

    return resolve(spec, samples=samples)
