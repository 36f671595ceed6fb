"""The ``pfdist`` command line. Strings become functions here and nowhere below."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from pfdist.errors import PFDistError
from pfdist.settings import FlowSettings

MAX_STEPS = 10_000  # sigma-grid steps; EDM uses 18 to 256


class _OneLineErrors(TyperGroup):
    """Every command's bad input and file-system failure ends as one line on stderr, exit code 2."""

    def invoke(self, ctx):
        import warnings

        from pfdist.atomic import CorruptFileWarning

        show = warnings.showwarning

        def one_line(message, category, *args, **kwargs):
            if issubclass(category, CorruptFileWarning):
                typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line
        try:
            return super().invoke(ctx)
        except PFDistError as e:
            fail(str(e))
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e} (check the path, its permissions and free disk space).")
        finally:
            warnings.showwarning = show


app = typer.Typer(
    cls=_OneLineErrors,
    help="Probability flow distance (PFD) for measuring generalization in diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Probability flow distance (PFD) for measuring generalization in diffusion models."""


DESCRIPTOR_HELP = ("Descriptor file; default: pixels. A .safetensors kernel descriptor (no code), or a TorchScript / "
                   ".pt2 network such as SSCD. TorchScript and .pt2 files are CODE and run when loaded: use only "
                   "files you trust.")


def fail(message: str | None) -> None:
    """Exit with status 2 and one line (none on the non-zero ranks of a process group)."""
    if message is not None:
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def progress_bar(total: int, desc: str, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr, disable=disable)


@app.command()
def distance(
    a: Path = typer.Argument(..., help="First model: a distribution file (.json/.safetensors), a checkpoint, a diffusers directory or a .pt2 program."),
    b: Path = typer.Argument(..., help="Second model, same data shape."),
    num_samples: int = typer.Option(10_000, "--num-samples", "-n", help="Shared noise seeds M."),
    seed: int = typer.Option(100_000, help="First evaluation seed; seeds are seed..seed+M-1."),
    steps: int = typer.Option(FlowSettings.steps, help=f"Sigma-grid steps, 1..{MAX_STEPS} (Heun: 2*steps-1 denoiser calls)."),
    solver: str = typer.Option(FlowSettings.solver, help="heun, euler, dpmpp_2m or reference (adaptive dopri5)."),
    sigma_max: float = typer.Option(FlowSettings.sigma_max, help="T: x_T ~ N(0, T^2 I)."),
    descriptor: Optional[Path] = typer.Option(None, help=DESCRIPTOR_HELP),
    batch_size: int = typer.Option(256, help="Seeds per batch (does not change the result)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cpu)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the result JSON here."),
    per_sample: bool = typer.Option(False, help="Include the per-seed squared distances in the JSON."),
) -> None:
    """PFD between two models on shared seeds; prints value ± CI and writes a JSON result.

    Under torchrun (``torchrun --nproc_per_node=K -m pfdist distance A B``) each process evaluates
    one block of the seeds on its device (``--device cuda`` is cuda:LOCAL_RANK); rank 0 prints
    and writes the result, which is the same as one process's.
    """
    from pfdist import checks, distributed
    from pfdist.atomic import atomic_write_json, check_writable
    from pfdist.metric import pfd
    from pfdist.specs import load_spec

    checks.integer("--num-samples", num_samples, lo=1)
    checks.integer("--seed", seed, lo=0, hi=checks.SEED_MAX - num_samples + 1)
    checks.integer("--steps", steps, lo=1, hi=MAX_STEPS)
    checks.integer("--batch-size", batch_size, lo=1)
    if device is not None:
        checks.device("--device", device)
    if out is not None:
        check_writable(out)

    main = distributed.is_main()
    try:
        with distributed.process_group(device) as device:
            da, db = distributed.together(lambda: (load_spec(a), load_spec(b)))
            with progress_bar(num_samples, "PFD", disable=not main) as bar:
                result = pfd(
                    da, db, num_samples=num_samples, seed=seed, steps=steps, solver=solver,
                    sigma_max=sigma_max, descriptor=descriptor, batch_size=batch_size, device=device,
                    progress=bar.update,
                )
    except PFDistError as e:
        fail(str(e) if main else None)
    if not main:
        return
    typer.echo(str(result))
    record = {"a": str(a), "b": str(b), "solver": solver, "steps": steps, "sigma_max": sigma_max,
              "descriptor": str(descriptor) if descriptor else None, **result.to_dict(per_sample=per_sample)}
    if out is not None:
        atomic_write_json(out, record)
        typer.echo(f"wrote {out}")


def _json_option(value: Optional[str], what: str) -> dict:
    """A JSON object given inline or as a path to a .json file."""
    if not value:
        return {}
    text = Path(value).read_text() if value.endswith(".json") and Path(value).is_file() else value
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"--{what} must be a JSON object or a .json file ({e}).")
    if not isinstance(obj, dict):
        fail(f"--{what} must be a JSON object, e.g. '{{\"epochs\": 20}}'.")
    return obj


NET_HELP = ('Student network, JSON or .json file: {"arch": "mlp", "width": 256, "depth": 3, "sigma_data": 1.0} or '
            '{"arch": "songunet", "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1} (EDM\'s DDPM++ U-Net). '
            'shape comes from the teacher.')
TRAIN_HELP = ('TrainConfig fields as JSON, e.g. {"epochs": 20}; an epoch is 12 800 images whatever N is. Unset fields: '
              'batch_size 256, lr 2e-3, lr_schedule onecycle, epochs 80, EMA half-life 51 200 images (the quick preset).')
EVAL_HELP = 'EvalConfig fields as JSON, e.g. {"num_samples": 2000, "steps": 35, "solver": "euler"}.'


def _epochs_option(text: str, epochs: int) -> list[int]:
    """--eval-epochs '0,10,20' -> [0, 10, 20], each in [0, epochs]."""
    from pfdist import checks

    try:
        values = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        fail(f"--eval-epochs must be comma-separated integers, e.g. 0,10,20 (got {text!r}).")
    return [checks.integer("--eval-epochs", e, lo=0, hi=epochs) for e in values]


# Unset --train fields take the quick preset's scaling training: 80 epochs of 12 800 images,
# one-cycle lr 2e-3, batch 256, EMA half-life 5% of training (a properly trained student).
TRAIN_DEFAULTS = {"batch_size": 256, "lr": 2e-3, "lr_schedule": "onecycle", "epochs": 80, "epoch_images": 12_800,
                  "ema_halflife_images": 51_200, "ema_rampup_ratio": None, "checkpoint_every": 20}


def _protocol_inputs(teacher: Path, net: Optional[str], train_cfg: Optional[str], eval_cfg: Optional[str],
                     device: Optional[str] = None):
    """Validate every input (configs, device, teacher) before anything is written or trained."""
    from pfdist import checks
    from pfdist.protocol import EvalConfig
    from pfdist.ode import data_shape
    from pfdist.specs import load_spec
    from pfdist.training import TrainConfig

    if device is not None:
        checks.device("--device", device)
    model = load_spec(teacher)
    shape = data_shape(model)
    if shape is None:
        fail(f"{teacher} does not say its data shape.")
    net_config = {"arch": "mlp", "width": 256, "depth": 3, "sigma_data": 1.0, **_json_option(net, "net")}
    net_config.setdefault("shape", list(shape))
    try:
        train_config = TrainConfig.from_dict({**TRAIN_DEFAULTS, **_json_option(train_cfg, "train")})
        eval_config = EvalConfig(**_json_option(eval_cfg, "eval"))
    except TypeError as e:
        fail(f"unknown field in --train/--eval: {e}.")
    return model, shape, net_config, train_config, eval_config


def _train_bar():
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        if step % 20 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()

    return bar, update


@app.command()
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
) -> None:
    """Train one student on N teacher samples; report E_gen, E_mem, losses and copy share."""
    from pfdist.atomic import check_writable
    from pfdist.protocol import teacher_student

    check_writable(out, directory=True)
    try:
        model, shape, net_cfg, train_cfg, eval_cfg = _protocol_inputs(teacher, net, train_config, eval_config, device)
        epochs = _epochs_option(eval_epochs, train_cfg.epochs)
        bar, update = _train_bar()
        with bar:
            rec = teacher_student(model, n, net_cfg, train_cfg, out, shape=shape, eval_config=eval_cfg,
                                  dataset_index=dataset_index, descriptor=descriptor, eval_epochs=epochs,
                                  device=device, cache_dir=cache_dir, progress=update, wait=wait)
    except (PFDistError, ValueError) as e:
        fail(str(e))
    typer.echo(f"|θ| = {rec['params']:,}  N = {n}")
    for name in ("e_gen", "e_mem"):
        r = rec[name]
        typer.echo(f"{name.upper():6s} = {r['pfd']:.4f}  (95% CI [{r['ci95'][0]:.4f}, {r['ci95'][1]:.4f}])")
    mr = rec["mem_ratio"]
    typer.echo(f"copies = {mr['value']:.3f}  (95% CI [{mr['ci95'][0]:.3f}, {mr['ci95'][1]:.3f}])")
    typer.echo(f"train loss {rec['train_loss']:.4f}, test loss {rec['test_loss']:.4f}; wrote {out / 'results.json'}")


@app.command("bias-variance")
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
    """K students on independent datasets: E_bias, E_var, and the identity mean E_gen^2 = bias^2 + var."""
    from pfdist import checks
    from pfdist.atomic import check_writable
    from pfdist.protocol import bias_variance

    check_writable(out, directory=True)
    checks.integer("--k", k, lo=2)
    try:
        model, shape, net_cfg, train_cfg, eval_cfg = _protocol_inputs(teacher, net, train_config, eval_config, device)
        bar, update = _train_bar()
        with bar:
            rep = bias_variance(model, n, net_cfg, train_cfg, out, k=k, shape=shape, eval_config=eval_cfg,
                                descriptor=descriptor, device=device, cache_dir=cache_dir, progress=update)
    except (PFDistError, ValueError) as e:
        fail(str(e))
    typer.echo(f"K = {k}, N = {n}, |θ| = {rep['params']:,}")
    typer.echo(f"E_bias = {rep['e_bias']:.4f}, E_var = {rep['e_var']:.4f}, mean E_gen^2 = {rep['mean_e_gen_sq']:.6f} "
               f"= E_bias^2 + E_var + ({rep['identity_gap']:.2e})")
    typer.echo(f"wrote {out / 'bias_variance.json'}")


ENGINE_HELP = "Where units run: local (this machine, --workers processes), ray (a Ray cluster) or slurm (a job array)."


@app.command()
def reproduce(
    preset: str = typer.Option("quick", help="quick (20–30 min on 2 CPU cores), full (37 min), paper (GPUs), "
                                             "digits (U-Nets on real 8x8 digits, CPU), digits-full, "
                                             "or a JSON file in the form of Preset.to_dict() (missing keys take defaults)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<preset>); shared storage "
                                                                "when units run on several machines."),
    teacher: Optional[Path] = typer.Option(None, help="Teacher file or checkpoint; replaces the preset's (paper needs one)."),
    workers: Optional[int] = typer.Option(None, help="Local engine: students trained in parallel processes (default: the preset's)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    shard: Optional[str] = typer.Option(None, help="Run only shard i of m ('i/m') of the unique students, e.g. on one of m machines."),
    engine: str = typer.Option("local", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, help="Ray: cluster address ('auto': the cluster of this machine; default: a new local one)."),
    cpus_per_unit: Optional[float] = typer.Option(None, help="Ray/Slurm: CPUs per unit (default 1)."),
    gpus_per_unit: Optional[float] = typer.Option(None, help="Ray/Slurm: GPUs per unit; Ray takes fractions (0.25) so small students share a GPU "
                                                             "(default: 1 with --device cuda, else 0)."),
    partition: Optional[str] = typer.Option(None, help="Slurm: partition."),
    time_min: int = typer.Option(24 * 60, help="Slurm: time limit of each array task in minutes (tasks are requeued on timeout or preemption)."),
    units_per_task: int = typer.Option(1, help="Slurm: units run one after another in each array task (group small units)."),
    max_parallel: Optional[int] = typer.Option(None, help="Slurm: array tasks running at once."),
    overrides: Optional[str] = typer.Option(None, "--set", help='Preset changes, JSON or .json file, e.g. {"eval": {"num_samples": 500}, "dynamics": null}.'),
    wait: bool = typer.Option(False, "--wait", help="If another run holds the directory, wait for it instead of failing."),
) -> None:
    """Run the three studies (scaling, dynamics, bias-variance); write CSVs, figures and a report.

    Rerunning resumes: finished students are kept, an interrupted one continues from its checkpoint.
    """
    from pfdist.experiments import load_preset
    from pfdist.experiments import reproduce as run
    from pfdist.experiments.presets import override

    from pfdist import checks

    if workers is not None:
        checks.integer("--workers", workers, lo=1)
    if device is not None:
        checks.device("--device", device)
    parts = None
    if shard:
        try:
            i, m = (int(v) for v in shard.split("/"))
            if not 0 <= i < m:
                raise ValueError
        except ValueError:
            fail(f"--shard must be i/m with 0 <= i < m (got {shard!r}).")
        parts = (i, m)
    try:
        options = _engine_options(engine, workers=workers, address=address, cpus_per_unit=cpus_per_unit, gpus_per_unit=gpus_per_unit,
                                  partition=partition, time_min=time_min, units_per_task=units_per_task,
                                  max_parallel=max_parallel, device=device)
        p = load_preset(preset)
        if teacher is not None:
            p = p.replace(teacher=str(teacher))
        if overrides:
            p = override(p, _json_option(overrides, "set"))
        summary = run(p, out or Path("runs") / p.name, workers=workers, device=device, shard=parts,
                      engine=engine, engine_options=options, wait=wait)
    except PFDistError as e:
        fail(str(e))
    typer.echo(f"{summary['units']} units = {summary['students']} distinct students ({summary['shared']} shared between "
               f"experiments); {summary['ran']} trained now; wall {summary['wall_s']:.0f} s "
               f"(compute of the run, summed over students: {summary['unit_wall_s_total']:.0f} s)")
    typer.echo(f"report: {summary['report'][0]} and {summary['report'][1]}")


def _engine_options(engine: str, *, workers, address, cpus_per_unit, gpus_per_unit, partition, time_min, units_per_task,
                    max_parallel, device) -> dict:
    """The CLI's engine flags as the chosen engine's options; flags of another engine are refused."""
    given = {"--workers": workers, "--address": address, "--partition": partition, "--max-parallel": max_parallel,
             "--units-per-task": units_per_task if units_per_task != 1 else None,
             "--time-min": time_min if time_min != 24 * 60 else None,
             "--cpus-per-unit": cpus_per_unit, "--gpus-per-unit": gpus_per_unit}
    allowed = {"local": {"--workers"}, "ray": {"--address", "--cpus-per-unit", "--gpus-per-unit"},
               "slurm": {"--partition", "--max-parallel", "--units-per-task", "--time-min", "--cpus-per-unit",
                         "--gpus-per-unit"}}.get(engine)
    if allowed is None:
        raise PFDistError(f"unknown engine {engine!r}; choose local, ray or slurm.")
    stray = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if stray:
        raise PFDistError(f"{', '.join(stray)} do(es) not apply to --engine {engine}.")
    if engine == "ray":
        return {k: v for k, v in {"address": address, "cpus_per_unit": cpus_per_unit,
                                  "gpus_per_unit": gpus_per_unit}.items() if v is not None}
    if engine == "slurm":
        for flag, v in (("--cpus-per-unit", cpus_per_unit), ("--gpus-per-unit", gpus_per_unit)):
            if v is not None and v != int(v):
                raise PFDistError(f"{flag} must be a whole number on Slurm (got {v}).")
        gpus = gpus_per_unit if gpus_per_unit is not None else (1 if (device or "").startswith("cuda") else 0)
        return {"partition": partition, "time_min": time_min, "units_per_task": units_per_task,
                "max_parallel": max_parallel, "cpus_per_unit": int(cpus_per_unit or 1), "gpus_per_unit": int(gpus)}
    return {}


teacher_app = typer.Typer(help="Train the teachers that ship with pfdist.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("digits")
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

    try:
        changes = {**_json_option(train_config, "train"), **({} if seed is None else {"seed": seed})}
        config = TrainConfig.from_dict({**DIGITS_TEACHER_TRAIN.to_dict(), **changes})
        path = out or DIGITS_TEACHER
        if path.suffix != ".safetensors":
            fail(f"--out must end in .safetensors (got {path}).")
        if threads < 1:
            fail(f"--threads must be >= 1 (got {threads}).")
        torch.set_num_threads(threads)
        bar, update = _train_bar()
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


@app.command()
def convert(
    snapshot: Path = typer.Argument(..., help="An EDM network-snapshot-*.pkl (read without running any of its code)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the checkpoint: model.safetensors + model.json."),
) -> None:
    """Convert an EDM snapshot into a pfdist checkpoint (safetensors weights + JSON config).

    The directory then works wherever a model is accepted: pfdist distance, --teacher, load_spec.
    """
    from pfdist.hashing import file_sha256
    from pfdist.models.edm import load_edm
    from pfdist.training import save_denoiser

    try:
        net = load_edm(snapshot)
        out.mkdir(parents=True, exist_ok=True)
        info = {"converted_from": snapshot.name, "source_sha256": file_sha256(snapshot)}
        path = save_denoiser(out / "model.safetensors", net, info=info)
    except (PFDistError, OSError) as e:
        fail(str(e))
    c = net.config
    typer.echo(f"{type(net).__name__} around {c['arch']} for {c['shape']}, label_dim {net.label_dim}, "
               f"sigma in [{net.sigma_min:g}, {net.sigma_max:g}]; wrote {path} and {path.with_suffix('.json')}")


@app.command()
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


@app.command()
def rescore(
    run_dir: Path = typer.Argument(..., help="A run directory written by pfdist reproduce."),
    descriptor: str = typer.Option(..., help="'pixels'; a JSON spec, e.g. '{\"type\": \"kernel\", \"num_features\": "
                                             "4096}' or '{\"type\": \"sscd\", \"path\": \"sscd.pt\"}'; or a file "
                                             "(.safetensors kernel descriptor; TorchScript / .pt2, which are CODE: "
                                             "trusted files only)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
) -> None:
    """Recompute E_gen, E_mem, copy share, the ideal copier and bias-variance of every finished
    student under another descriptor, from the run's cached maps (no retraining)."""
    from pfdist.experiments import rescore as run_rescore, spec_from_text

    try:
        summary = run_rescore(run_dir, spec_from_text(descriptor), device=device)
    except PFDistError as e:
        fail(str(e))
    alpha = summary.get("collapse_alpha")
    typer.echo(f"{summary.get('students', 0)} students rescored in {summary['descriptor']['name']} space"
               + (f"; collapse alpha = {alpha['alpha']:.3f}" if alpha else ""))
    for t in summary["tables"]:
        typer.echo(f"wrote {t}")


@app.command()
def plot(run_dir: Path = typer.Argument(..., help="A run directory written by pfdist reproduce.")) -> None:
    """Redraw every figure of a run from its results files, without running any model."""
    from pfdist.experiments import draw

    try:
        figures = draw(run_dir)
    except PFDistError as e:
        fail(str(e))
    for f in figures:
        typer.echo(f"wrote {f}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
