"""``pfdist student`` and ``pfdist bias-variance``: the teacher-student protocol, one run or K."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pfdist.cli.common import (AUTOCAST_HELP, CHANNELS_LAST_HELP, COMPILE_HELP, DESCRIPTOR_HELP,
                               RANKS_TIMEOUT_DAYS, Command, app, fail, json_option, train_bar)
from pfdist.errors import PFDistError

MLP_DEFAULTS = {"arch": "mlp", "width": 256, "depth": 3, "sigma_data": 1.0}  # the student when --net is not given
NET_HELP = ('Student network, JSON or .json file: {"arch": "mlp", "width": 256, "depth": 3, "sigma_data": 1.0} or '
            '{"arch": "songunet", "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1} (EDM\'s DDPM++ U-Net). '
            'shape comes from the teacher.')


def student_train():
    """What unset ``--train`` fields take: the quick preset's scaling training (one-cycle lr, EMA
    half-life 5% of training), set once in :mod:`pfdist.training.recipes`."""
    from pfdist.training.recipes import QUICK_STUDENT

    return QUICK_STUDENT


def _spaced(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


def _train_help() -> str:
    t = student_train()
    return (f'TrainConfig fields as JSON, e.g. {{"epochs": 20}}; an epoch is {_spaced(t.epoch_images)} images whatever '
            f"N is. Unset fields take the quick preset's scaling training: batch_size {t.batch_size}, lr {t.lr:g}, "
            f"lr_schedule {t.lr_schedule}, epochs {t.epochs}, EMA half-life {_spaced(t.ema_halflife_images)} images.")


TRAIN_HELP = _train_help()
EVAL_HELP = 'EvalConfig fields as JSON, e.g. {"num_samples": 2000, "steps": 35, "solver": "euler"}.'


def _epochs_option(text: str, epochs: int) -> list[int]:
    """--eval-epochs '0,10,20' -> [0, 10, 20], each in [0, epochs]."""
    from pfdist import checks

    try:
        values = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        fail(f"--eval-epochs must be comma-separated integers, e.g. 0,10,20 (got {text!r}).")
    return [checks.integer("--eval-epochs", e, lo=0, hi=epochs) for e in values]


def _protocol_inputs(teacher: Path, net: Optional[str], train_cfg: Optional[str], eval_cfg: Optional[str],
                     device: Optional[str] = None, accel: Optional[dict] = None):
    """Validate every input (configs, device, teacher) before anything is written or trained."""
    from pfdist import checks
    from pfdist.protocol import EvalConfig
    from pfdist.protocol.student import student_net
    from pfdist.ode import data_shape
    from pfdist.specs import load_spec
    from pfdist.training import TrainConfig

    if device is not None:
        checks.device("--device", device)
    model = load_spec(teacher)
    shape = data_shape(model)
    if shape is None:
        fail(f"{teacher} does not say its data shape.")
    given = json_option(net, "net")
    net_config = student_net({**(MLP_DEFAULTS if given.get("arch", "mlp") == "mlp" else {}), **given}, shape)
    accel = {k: v for k, v in (accel or {}).items() if v}  # the flags set both configs' fields
    train_config = TrainConfig.from_dict({**student_train().to_dict(), **json_option(train_cfg, "train"), **accel})
    given = json_option(eval_cfg, "eval")
    unknown = sorted(set(given) - set(EvalConfig.keys()))
    if unknown:
        fail(f"unknown --eval keys {unknown}; valid: {sorted(EvalConfig.keys())}.")
    eval_config = EvalConfig.from_dict({**given, **accel})
    return model, shape, net_config, train_config, eval_config


@app.command(cls=Command)
def student(
    teacher: Path = typer.Argument(..., help="Teacher: a distribution file or a trained network."),
    n: int = typer.Option(..., "--n", "-N", help="Training set size N (teacher seeds 0..N-1)."),
    out: Path = typer.Option(..., "--out", "-o", help="Student directory (checkpoint, student, results.json)."),
    net: Optional[str] = typer.Option(None, help=NET_HELP),
    train_config: Optional[str] = typer.Option(None, "--train", help=TRAIN_HELP),
    eval_config: Optional[str] = typer.Option(None, "--eval", help=EVAL_HELP),
    eval_epochs: str = typer.Option("", help="Comma-separated epochs at which to evaluate too, e.g. 0,10,20."),
    dataset_index: int = typer.Option(0, help="Training set index: 0 = seeds 0..N-1; i = independent set i."),
    descriptor: Optional[Path] = typer.Option(None, help=DESCRIPTOR_HELP),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache teacher maps here (keyed by content)."),
    wait: bool = typer.Option(False, "--wait", help="If another process is training in DIR, wait for it instead of failing."),
    autocast: Optional[str] = typer.Option(None, help=AUTOCAST_HELP),
    channels_last: bool = typer.Option(False, "--channels-last", help=CHANNELS_LAST_HELP),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
) -> None:
    """Train one student on N teacher samples; report E_gen, E_mem, losses and copy share.

    Under torchrun (``torchrun --nproc_per_node=K -m pfdist student ...``) rank 0 trains and
    writes; every rank evaluates one block of the evaluation seeds on its device (``--device
    cuda`` is cuda:LOCAL_RANK). The results are those of one process.
    """
    from datetime import timedelta

    from pfdist import distributed
    from pfdist.atomic import check_writable
    from pfdist.descriptors import resolve
    from pfdist.protocol import teacher_student

    check_writable(out, directory=True)
    if cache_dir is not None:
        check_writable(cache_dir, directory=True)
    main = distributed.is_main()
    try:
        accel = {"autocast": autocast, "channels_last": channels_last, "compile": compile_}
        model, shape, net_cfg, train_cfg, eval_cfg = _protocol_inputs(teacher, net, train_config, eval_config, device,
                                                                      accel)
        epochs = _epochs_option(eval_epochs, train_cfg.epochs)
        psi = resolve(descriptor or "pixels")
        with distributed.process_group(device, timeout=timedelta(days=RANKS_TIMEOUT_DAYS)) as device:
            bar, update = train_bar(disable=not main)
            with bar:
                rec = teacher_student(model, n, net_cfg, train_cfg, out, shape=shape, eval_config=eval_cfg,
                                      dataset_index=dataset_index, descriptor=psi, eval_epochs=epochs,
                                      device=device, cache_dir=cache_dir, progress=update, wait=wait)
    except (PFDistError, ValueError) as e:
        fail(str(e) if main else None)
    if not main:
        return
    typer.echo(f"|θ| = {rec['params']:,}  N = {n}")
    for name in ("e_gen", "e_mem"):
        r = rec[name]
        typer.echo(f"{name.upper():6s} = {r['pfd']:.4f}  (95% CI [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}])")
    mr = rec["mem_ratio"]
    typer.echo(f"copies = {mr['value']:.3f}  (95% CI [{mr['ci95'][0]:.3f}, {mr['ci95'][1]:.3f}])")
    typer.echo(f"train loss {rec['train_loss']:.4f}, test loss {rec['test_loss']:.4f}; wrote {out / 'results.json'}")


@app.command("bias-variance", cls=Command)
def bias_variance_cmd(
    teacher: Path = typer.Argument(..., help="Teacher: a distribution file or a trained network."),
    n: int = typer.Option(..., "--n", "-N", help="Training set size N of each student."),
    k: int = typer.Option(4, "--k", "-K", help="Number of students on independent datasets."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the K students and bias_variance.json."),
    net: Optional[str] = typer.Option(None, help=NET_HELP),
    train_config: Optional[str] = typer.Option(None, "--train", help=TRAIN_HELP),
    eval_config: Optional[str] = typer.Option(None, "--eval", help=EVAL_HELP),
    descriptor: Optional[Path] = typer.Option(None, help=DESCRIPTOR_HELP),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, ..."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache teacher maps here (keyed by content)."),
) -> None:
    """K students on independent datasets: E_bias, E_var, and the identity mean E_gen^2 = bias^2 + var.

    Under torchrun, rank 0 trains each student and every rank evaluates a block of seeds."""
    from datetime import timedelta

    from pfdist import checks, distributed
    from pfdist.atomic import check_writable
    from pfdist.descriptors import resolve
    from pfdist.protocol import bias_variance

    check_writable(out, directory=True)
    if cache_dir is not None:
        check_writable(cache_dir, directory=True)
    checks.size("--k", k, checks.MAX_STUDENTS, checks.STUDENTS_WHY, lo=2)
    main = distributed.is_main()
    try:
        model, shape, net_cfg, train_cfg, eval_cfg = _protocol_inputs(teacher, net, train_config, eval_config, device)
        psi = resolve(descriptor or "pixels")
        with distributed.process_group(device, timeout=timedelta(days=RANKS_TIMEOUT_DAYS)) as device:
            bar, update = train_bar(disable=not main)
            with bar:
                rep = bias_variance(model, n, net_cfg, train_cfg, out, k=k, shape=shape, eval_config=eval_cfg,
                                    descriptor=psi, device=device, cache_dir=cache_dir, progress=update)
    except (PFDistError, ValueError) as e:
        fail(str(e) if main else None)
    if not main:
        return
    typer.echo(f"K = {k}, N = {n}, |θ| = {rep['params']:,}")
    typer.echo(f"E_bias = {rep['e_bias']:.4f}, E_var = {rep['e_var']:.4f}, mean E_gen^2 = {rep['mean_e_gen_sq']:.6f} "
               f"= E_bias^2 + E_var + ({rep['identity_gap']:.2e})")
    typer.echo(f"wrote {out / 'bias_variance.json'}")
