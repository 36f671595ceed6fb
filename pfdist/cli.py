"""The ``pfdist`` command line. Strings become functions here and nowhere below."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from pfdist.errors import PFDistError

app = typer.Typer(
    help="Probability flow distance (PFD) for measuring generalization in diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Probability flow distance (PFD) for measuring generalization in diffusion models."""


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr)


@app.command()
def distance(
    a: Path = typer.Argument(..., help="First model: a distribution file (.json/.safetensors) or a checkpoint."),
    b: Path = typer.Argument(..., help="Second model, same data shape."),
    num_samples: int = typer.Option(10_000, "--num-samples", "-n", help="Shared noise seeds M."),
    seed: int = typer.Option(100_000, help="First evaluation seed; seeds are seed..seed+M-1."),
    steps: int = typer.Option(18, help="Sigma-grid steps (Heun: 2*steps-1 denoiser calls)."),
    solver: str = typer.Option("heun", help="heun, euler, dpmpp_2m or reference (adaptive dopri5)."),
    sigma_max: float = typer.Option(80.0, help="T: x_T ~ N(0, T^2 I)."),
    descriptor: Optional[Path] = typer.Option(None, help="TorchScript descriptor file (e.g. SSCD); default: pixels."),
    batch_size: int = typer.Option(256, help="Seeds per batch (does not change the result)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cpu)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result JSON here."),
    per_sample: bool = typer.Option(False, help="Include the per-seed squared distances in the JSON."),
) -> None:
    """PFD between two models on shared seeds; prints value ± CI and writes a JSON result."""
    from pfdist.atomic import atomic_write_json
    from pfdist.metric import pfd
    from pfdist.specs import load_spec

    try:
        da, db = load_spec(a), load_spec(b)
        shape = getattr(da, "shape", None) or getattr(db, "shape", None)
        with progress_bar(num_samples, "PFD") as bar:
            result = pfd(
                da, db, shape=shape, num_samples=num_samples, seed=seed, steps=steps, solver=solver,
                sigma_max=sigma_max, descriptor=descriptor, batch_size=batch_size, device=device,
                progress=bar.update,
            )
    except PFDistError as e:
        fail(str(e))
    typer.echo(str(result))
    record = {"a": str(a), "b": str(b), "solver": solver, "steps": steps, "sigma_max": sigma_max,
              "descriptor": str(descriptor) if descriptor else None, **result.to_dict(per_sample=per_sample)}
    if out is not None:
        atomic_write_json(out, record)
        typer.echo(f"wrote {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
