"""``pfdist convert``, ``pfdist export`` and ``pfdist teacher``: model files in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import Command, Group, app, fail, json_option, train_bar
from pfdist.errors import PFDistError

teacher_app = typer.Typer(cls=Group, help="Train the teachers that ship with pfdist.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("digits", cls=Command)
def teacher_digits(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Weights file (.safetensors; .json and .png beside it). "
                                       "Default: the packaged pfdist:digits-unet."),
    seed: Optional[int] = typer.Option(None, help="Training seed (default: the shipped teacher's, 0)."),
    train_config: Optional[str] = typer.Option(None, "--train", help="TrainConfig fields replacing the shipped "
                                               'teacher\'s, JSON, e.g. {"epochs": 1, "epoch_images": 256}.'),
    num_samples: int = typer.Option(1000, help="Teacher samples for the copy-share report."),
    work_dir: Optional[Path] = typer.Option(None, help="Keep the training checkpoint here (a rerun resumes)."),
    threads: int = typer.Option(1, help="CPU threads (the shipped teacher was trained on 1; results are bit-exact "
                                        "only for the same thread count and torch build)."),
) -> None:
    """Train the U-Net teacher on all 1 797 scikit-learn digits (EDM loss); report its copy share."""
    import torch

    from pfdist.data import DIGITS_TEACHER
    from pfdist.experiments.digits_teacher import DIGITS_TEACHER_TRAIN, train_digits_teacher
    from pfdist.training import TrainConfig

    from pfdist import checks
    from pfdist.atomic import check_writable

    checks.integer("--num-samples", num_samples, lo=2)
    checks.integer("--threads", threads, lo=1)
    if work_dir is not None:
        check_writable(work_dir, directory=True)
    try:
        changes = {**json_option(train_config, "train"), **({} if seed is None else {"seed": seed})}
        config = TrainConfig.from_dict({**DIGITS_TEACHER_TRAIN.to_dict(), **changes})
        path = out or DIGITS_TEACHER
        if path.suffix != ".safetensors":
            fail(f"--out must end in .safetensors (got {path}).")
        torch.set_num_threads(threads)
        bar, update = train_bar()
        with bar:
            rep = train_digits_teacher(path, train_config=config, num_samples=num_samples, work_dir=work_dir,
                                       progress=update)
    except PFDistError as e:
        fail(str(e))
    cs, ideal = rep["copy_share"], rep["ideal_copier_copy_share"]
    typer.echo(f"|θ| = {rep['params']:,}; trained in {rep['train_s']:.0f} s")
    typer.echo(f"copy share = {cs['value']:.3f} (95% CI [{cs['ci95'][0]:.3f}, {cs['ci95'][1]:.3f}]); "
               f"ideal copier {ideal['value']:.3f}")
    typer.echo(f"wrote {path}, {path.with_suffix('.json')} and {path.with_suffix('.png')}")


@app.command(cls=Command)
def convert(
    snapshot: Path = typer.Argument(..., help="An EDM or EDM2 snapshot .pkl (read without running any of its code)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the checkpoint: model.safetensors + model.json."),
) -> None:
    """Convert an EDM or EDM2 snapshot into a pfdist checkpoint (safetensors weights + JSON config).

    The directory then works wherever a model is accepted: pfdist distance, --teacher, load_spec.
    An EDM2 snapshot's encoder record and data space are kept in the JSON config (as data), so
    pfdist.load_edm_decoder and an "edm" spec's "vae" read them from the checkpoint too.
    """
    from pfdist.atomic import check_writable
    from pfdist.hashing import file_sha256
    from pfdist.models.edm import load_edm
    from pfdist.training import save_denoiser

    check_writable(out, directory=True)
    try:
        net = load_edm(snapshot)
        out.mkdir(parents=True, exist_ok=True)
        info = {"converted_from": snapshot.name, "source_sha256": file_sha256(snapshot)}
        path = save_denoiser(out / "model.safetensors", net, info=info)
    except (PFDistError, OSError) as e:
        fail(str(e))
    c = net.config
    typer.echo(f"{type(net).__name__} around {c['arch']} for {c['shape']}, label_dim {net.label_dim}, "
               f"sigma in [{net.sigma_min:g}, {net.sigma_max:g}]"
               + (f", data space {net.data_space}" if getattr(net, "data_space", None) else "")
               + f"; wrote {path} and {path.with_suffix('.json')}")


@app.command(cls=Command)
def export(
    model: Path = typer.Argument(..., help="Any model pfdist loads: a checkpoint, an EDM snapshot, a diffusers directory, a distribution file."),
    out: Path = typer.Option(..., "--out", "-o", help="The .pt2 file to write."),
) -> None:
    """Write MODEL as a torch.export program (.pt2) with a dynamic batch dimension.

    A .pt2 file is a program, not data: share and load only files you trust.
    """
    from pfdist.models.export import export_denoiser
    from pfdist.specs import load_spec

    if out.suffix != ".pt2":
        fail(f"--out must end in .pt2 (got {out}).")
    try:
        export_denoiser(load_spec(model), out, source=model.name)
    except PFDistError as e:
        fail(str(e))
    typer.echo(f"wrote {out} (a program: load only .pt2 files you trust)")
