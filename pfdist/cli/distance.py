"""``pfdist distance``: PFD between two models on shared seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import (AUTOCAST_HELP, CHANNELS_LAST_HELP, COMPILE_HELP, DESCRIPTOR_HELP, app, fail, log,
                               progress_bar)
from pfdist.errors import PFDistError
from pfdist.settings import FlowSettings

MAX_STEPS = 10_000  # sigma-grid steps; EDM uses 18 to 256


@app.command()
def distance(
    a: Path = typer.Argument(..., help="First model: a distribution file (.json/.safetensors), a checkpoint, a diffusers directory (or a JSON spec naming one with its conditioning file) or a .pt2 program."),
    b: Path = typer.Argument(..., help="Second model, same data shape."),
    num_samples: Optional[int] = typer.Option(None, "--num-samples", "-n", show_default="10000", help="Shared noise seeds M."),
    seed: Optional[int] = typer.Option(None, show_default="100000", help="First evaluation seed; seeds are seed..seed+M-1."),
    seeds: Optional[str] = typer.Option(None, help="Seeds in EDM's syntax instead of --seed/-n: ranges and lists, e.g. 0-49999 or 0-9,20,30-39."),
    steps: int = typer.Option(FlowSettings.steps, help=f"Sigma-grid steps, 1..{MAX_STEPS} (Heun: 2*steps-1 denoiser calls)."),
    solver: str = typer.Option(FlowSettings.solver, help="heun, euler, dpmpp_2m, dpmpp_3m, unipc or reference (adaptive dopri5)."),
    sigma_max: float = typer.Option(FlowSettings.sigma_max, help="T: x_T ~ N(0, T^2 I)."),
    descriptor: Optional[Path] = typer.Option(None, help=DESCRIPTOR_HELP),
    batch_size: int = typer.Option(256, help="Seeds per batch (does not change the result)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cpu)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result JSON here."),
    per_sample: bool = typer.Option(False, help="Include the per-seed squared distances in the JSON."),
    error_estimate: bool = typer.Option(
        False, "--error-estimate",
        help="Also estimate each map's discretisation error on its grid (doubled steps on the first 128 seeds, "
             "Richardson): solver_error bounds |PFD - PFD of the exact maps|."),
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
    from pfdist.metric import pfd
    from pfdist.specs import load_spec

    if seeds is not None:
        if num_samples is not None or seed is not None:
            fail("--seeds replaces --seed and --num-samples/-n; give one or the other.")
        total = sum(map(len, checks.seed_ranges("--seeds", seeds)))
    else:
        num_samples, seed = 10_000 if num_samples is None else num_samples, 100_000 if seed is None else seed
        total = checks.integer("--num-samples", num_samples, lo=1)
        checks.integer("--seed", seed, lo=0, hi=checks.SEED_MAX - num_samples + 1)
    checks.integer("--steps", steps, lo=1, hi=MAX_STEPS)
    checks.integer("--batch-size", batch_size, lo=1)
    if device is not None:
        checks.device("--device", device)
    if out is not None:
        check_writable(out)

    main = distributed.is_main()
    log.info("PFD of %s and %s on %d seeds (%s), %s with %d steps", a, b, total,
             seeds or f"{seed}-{seed + num_samples - 1}", solver, steps)
    try:
        accel = Accel(autocast, channels_last, compile_)
        with distributed.process_group(device) as device:
            da, db = distributed.together(lambda: (load_spec(a), load_spec(b)))
            da, db = accelerate(da, accel), accelerate(db, accel)
            with progress_bar(total, "PFD", disable=not main) as bar:
                result = pfd(
                    da, db, num_samples=num_samples, seed=seed, seeds=seeds, steps=steps, solver=solver,
                    sigma_max=sigma_max, descriptor=descriptor, batch_size=batch_size, device=device,
                    progress=bar.update, error_estimate=error_estimate,
                )
    except PFDistError as e:
        fail(str(e) if main else None)
    if not main:
        return
    typer.echo(str(result))
    record = {"a": str(a), "b": str(b), "solver": solver, "steps": steps, "sigma_max": sigma_max,
              "descriptor": str(descriptor) if descriptor else None, "seeds": seeds,
              **result.to_dict(per_sample=per_sample)}
    if out is not None:
        atomic_write_json(out, record)
        typer.echo(f"wrote {out}")
