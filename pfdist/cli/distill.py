"""``pfdist distill``: a few-step student fitted to its teacher's map on N pairs, with its E_gen and E_mem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import Command, app, fail, json_option, progress_bar, train_bar
from pfdist.errors import PFDistError

NUM_SAMPLES = 1000  # evaluation seeds 100 000.. when --num-samples is not given


def _net_help() -> str:
    from pfdist.protocol.distill import STUDENT_NET

    return (f"Student network, JSON or .json file; default {json.dumps(STUDENT_NET)} (EDM-preconditioned, "
            "conditioned on the noise level); shape comes from the teacher.")


def _train_help() -> str:
    from pfdist.training import TrainConfig

    t = TrainConfig()
    return (f'TrainConfig fields as JSON or .json file, e.g. {{"epochs": 10, "epoch_images": 25600}}; unset fields '
            f"take TrainConfig's defaults: batch_size {t.batch_size}, lr {t.lr:g}, lr_schedule {t.lr_schedule}, "
            f"epochs {t.epochs} of {t.epoch_images} images, checkpoint_every {t.checkpoint_every}. "
            "Its seed is --seed; each progressive round trains with all of it.")


def _methods() -> str:
    from pfdist.protocol.few_step import METHODS

    return ", ".join(METHODS)


def _record(result) -> dict:
    return {"pfd": result.value, "stderr": result.stderr, "ci95": list(result.ci)}


@app.command(cls=Command)
def distill(
    teacher: Path = typer.Argument(..., help="Teacher: a distribution file or a trained network (its PF-ODE map)."),
    method: str = typer.Option(..., help=f"Distillation method: {_methods()} (docs/distillation.md)."),
    steps: int = typer.Option(..., help="The student's number of steps (its NFE)."),
    num_pairs: int = typer.Option(..., "--num-pairs", "-N", help="N pairs (x_T, teacher map) on seeds 0..N-1."),
    out: Path = typer.Option(..., "--out", "-o", help="Student directory (checkpoints, student, results.json)."),
    net: Optional[str] = typer.Option(None, help=_net_help()),
    train_config: Optional[str] = typer.Option(None, "--train", help=_train_help()),
    multistep: str = typer.Option("segments", help="Consistency with several steps: segments (one consistency "
                                  "function per segment between the student's levels, along x_T's trajectory), "
                                  "ddim or fresh (one function to sigma_min, re-noised between steps)."),
    seed: int = typer.Option(0, help="Training seed (initialisation, batches, noise)."),
    num_samples: int = typer.Option(NUM_SAMPLES, help="Evaluation seeds 100000.. for E_gen and E_mem."),
) -> None:
    """Distill a few-step student from TEACHER; report E_gen (PFD to the teacher's map) and E_mem
    (PFD to the empirical flow of its N pair outputs).

    A rerun with the same settings resumes from DIR's checkpoint (a finished one trains no more).
    """
    import pfdist
    from pfdist import checks
    from pfdist.atomic import atomic_write_text, check_writable
    from pfdist.protocol.data import EVAL_SEED
    from pfdist.specs import load_spec
    from pfdist.training import TrainConfig

    try:
        check_writable(out, directory=True)
        checks.integer("--steps", steps, lo=1)  # the teacher's grid bounds it too (pfdist.distill says)
        checks.integer("--num-pairs", num_pairs, lo=1)
        checks.integer("--num-samples", num_samples, lo=1, hi=1_000_000)
        net_config = json_option(net, "net") or None
        train = TrainConfig.from_dict(json_option(train_config, "train"))
        teacher_map = pfdist.ode_map(load_spec(teacher))
        bars = []  # the bar opens at the first training step: distill checks every input before that

        def update(step: int, total: int, loss: float) -> None:
            if not bars:
                bars.append(train_bar())
            bars[0][1](step, total, loss)

        try:
            student = pfdist.distill(teacher_map, method=method, steps=steps, num_pairs=num_pairs, net=net_config,
                                     train=train, seed=seed, out_dir=out, progress=update,
                                     multistep=multistep)
        finally:
            for bar, _ in bars:
                bar.close()
        outputs = pfdist.distill_pairs(teacher_map, num_pairs)[1]
        results = {}
        for name, other in (("e_gen", teacher_map), ("e_mem", pfdist.EmpiricalDenoiser(outputs))):
            with progress_bar(num_samples, name) as bar:
                results[name] = pfdist.pfd(student, other, num_samples=num_samples, seed=EVAL_SEED,
                                           progress=bar.update)
    except (PFDistError, ValueError) as e:
        fail(str(e))
    record = {"teacher": str(teacher), "method": method, "steps": steps, "num_pairs": num_pairs, "seed": seed,
              **({"multistep": multistep} if method == "consistency" and steps > 1 else {}),
              "nfe": student.nfe, "eval_seeds": [EVAL_SEED, EVAL_SEED + num_samples - 1],
              **{name: _record(r) for name, r in results.items()}}
    atomic_write_text(out / "results.json", json.dumps(record, indent=2) + "\n")
    typer.echo(f"{method}, {steps} step(s), N = {num_pairs}")
    for name, r in results.items():
        typer.echo(f"{name.upper():6s} = {r.value:.4f}  (95% CI [{r.ci[0]:.4f}, {r.ci[1]:.4f}])")
    typer.echo(f"wrote {out / 'results.json'}")
