"""The teacher-student protocol for one student: data -> training -> E_gen / E_mem -> results.json."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from pfdist import checks, distributed
from pfdist.atomic import CorruptFileError, atomic_write_json, read_json_checked, warn_corrupt
from pfdist.descriptors import Descriptor, NamedDescriptors, check_spaces, descriptor_fingerprint, identity
from pfdist.errors import PFDistError
from pfdist.flows import FlowOutputs, flow_outputs, resolve_device
from pfdist.hashing import content_hash, file_sha256, fingerprint
from pfdist.lock import DirectoryLock
from pfdist.nets import NetSpec, count_parameters
from pfdist.ode import data_shape
from pfdist.protocol.data import TEST_SEED, dataset_seeds, teacher_samples
from pfdist.protocol.evaluate import EvalConfig, copier_outputs, evaluate_student
from pfdist.training import TrainConfig, TrainResult, load_denoiser, save_denoiser, train
from pfdist.training.metrics import METRICS

RESULTS = "results.json"
STUDENT = "student.safetensors"


def teacher_map(teacher: Callable, shape: Sequence[int], config: EvalConfig, *, device: Any = None,
                cache_dir: str | os.PathLike | None = None, progress: Callable[[int], None] | None = None) -> FlowOutputs:
    """The teacher's pixel outputs on the evaluation seeds: computed once, reused by every student."""
    return flow_outputs(teacher, shape=shape, num_samples=config.num_samples, seed=config.seed,
                        flow=config.flow, batch_size=config.batch_size, device=device,
                        cache_dir=cache_dir, progress=progress)


def student_key(teacher: Callable, n: int, net: NetSpec | dict, train_config: TrainConfig, eval_config: EvalConfig,
                dataset_index: int, descriptor: Descriptor, eval_epochs: Sequence[int], data_key: str | None = None) -> str:
    """Content hash naming one unit of work: rerunning the same unit finds its results.
    ``net``: the student's :class:`~pfdist.nets.NetSpec` (a dict is validated into one);
    ``data_key`` names training data that are not the teacher's samples (e.g. real images)."""
    parts = ["student/v1", fingerprint(teacher), n, NetSpec(net).config, train_config.to_dict(),
             eval_config.to_dict(), dataset_index, descriptor_fingerprint(descriptor), sorted(eval_epochs)]
    return content_hash(*parts, *([] if data_key is None else [{"train_data": data_key}]))


def student_net(net_config: NetSpec | dict, shape: Sequence[int]) -> NetSpec:
    """The student's network on the teacher's data ``shape``: a spec as it is, a dict validated
    with ``shape`` filled in; either must have the teacher's shape."""
    if isinstance(net_config, dict):
        net_config = NetSpec({"shape": list(shape), **net_config})
    elif not isinstance(net_config, NetSpec):
        raise PFDistError(f"net_config must be a dict such as {{'arch': 'mlp', 'width': 64}}, got {type(net_config).__name__}.")
    if net_config.shape != tuple(shape):
        raise PFDistError(
            f"the student's data shape {net_config.shape} differs from the teacher's {tuple(shape)}; "
            "set net_config['shape'] to the teacher's shape."
        )
    return net_config


def missing_evaluations(record: dict) -> list[int]:
    """Evaluation epochs a results record asked for (``eval_epochs``) but has no history entry for."""
    have = {h.get("epoch") for h in record.get("history", []) if isinstance(h, dict)}
    return [e for e in record.get("eval_epochs", []) if e not in have]


def read_results(out_dir: str | os.PathLike, key: str | None = None) -> dict | None:
    """The finished, verified results in ``out_dir``, or None (absent, for another key, or bad).

    A record that fails its checksum, whose history lacks some of its evaluation epochs, or whose
    ``metrics.jsonl`` differs from the one it recorded, is not used: one warning line says so and
    the unit counts as unfinished (rerunning it resumes from its checkpoint, which holds the
    evaluations, and writes the files again).
    """
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        return None
    try:
        record = read_json_checked(path)
    except CorruptFileError as e:
        warn_corrupt(e, "the student counts as unfinished")
        return None
    if key is not None and record.get("key") != key:
        return None
    lost = missing_evaluations(record)
    if lost:
        warn_corrupt(CorruptFileError(f"{path} lacks the evaluations at epochs {lost}"), "the student counts as unfinished")
        return None
    metrics = Path(out_dir) / METRICS
    if "metrics_sha256" in record and (not metrics.is_file() or file_sha256(metrics) != record["metrics_sha256"]):
        warn_corrupt(CorruptFileError(f"{metrics} is missing or damaged (it differs from the one {path} records)"),
                     "the student counts as unfinished; rerunning writes it again from its checkpoint")
        return None
    return record


def load_student(out_dir: str | os.PathLike, *, device: Any = None) -> torch.nn.Module:
    """The final student of a finished unit; a damaged one says how the unit writes it again."""
    out_dir = Path(out_dir)
    fix = (f"delete {out_dir / RESULTS} and run the same command again: the student resumes from its finished "
           "checkpoint and is written again, without retraining")
    return load_denoiser(out_dir / STUDENT, device=device, fix=fix)


@dataclass(frozen=True)
class _Unit:
    """One student's validated inputs and the content key that names its results."""

    teacher: Callable
    n: int
    shape: tuple[int, ...]
    net: NetSpec
    train: TrainConfig
    eval: EvalConfig
    dataset_index: int
    descriptor: Descriptor
    eval_epochs: list[int]
    seeds: Any  # the training set's teacher seeds
    data_key: str | None
    key: str

    def about(self) -> dict[str, Any]:
        """What the results record says about its unit (its first fields, in the file's order)."""
        return {"key": self.key, "n": self.n, "dataset_index": self.dataset_index, "train_data": self.data_key or "teacher",
                "shape": list(self.shape), "net_config": self.net.config, "train_config": self.train.to_dict(),
                "eval_config": self.eval.to_dict(), "teacher": fingerprint(self.teacher), "epochs": self.train.epochs}


def _unit(teacher: Callable, n: int, net_config: NetSpec | dict, train_config: TrainConfig, shape: Sequence[int] | None,
          eval_config: EvalConfig, dataset_index: int, descriptor: Descriptor | str | None, eval_epochs: Iterable[int],
          train_data: Tensor | None, data_key: str | None) -> _Unit:
    """Every check of :func:`teacher_student`'s arguments, before anything is computed or written."""
    shape = shape if shape is not None else data_shape(teacher)
    if shape is None:
        raise PFDistError("pass shape=...: the teacher does not say its data shape.")
    shape = checks.shape("shape", shape)
    net = student_net(net_config, shape)
    if not isinstance(train_config, TrainConfig):
        raise PFDistError(f"train_config must be a TrainConfig, got {type(train_config).__name__}.")
    if not isinstance(eval_config, EvalConfig):
        raise PFDistError(f"eval_config must be an EvalConfig, got {type(eval_config).__name__}.")
    desc = check_spaces(descriptor)
    eval_epochs = sorted({checks.integer("eval epoch", e, lo=0, hi=train_config.epochs) for e in eval_epochs})
    seeds = dataset_seeds(n, checks.integer("dataset_index", dataset_index, lo=0),
                          eval_seeds=range(eval_config.seed, eval_config.seed + eval_config.num_samples))
    if data_key is not None and train_data is None:
        raise PFDistError("data_key names training data that are not the teacher's; pass them as train_data.")
    key = student_key(teacher, n, net, train_config, eval_config, dataset_index, desc, eval_epochs, data_key)
    return _Unit(teacher, n, shape, net, train_config, eval_config, dataset_index, desc, eval_epochs, seeds, data_key, key)


def teacher_student(
    teacher: Callable,
    n: int,
    net_config: NetSpec | dict,
    train_config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    shape: Sequence[int] | None = None,
    eval_config: EvalConfig = EvalConfig(),
    dataset_index: int = 0,
    descriptor: Descriptor | NamedDescriptors = identity,
    teacher_outputs: FlowOutputs | None = None,
    train_data: Tensor | None = None,
    eval_epochs: Iterable[int] = (),
    device: Any = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    wait: bool = False,
    data_key: str | None = None,
) -> dict[str, Any]:
    """Train a student on N teacher samples and report E_gen, E_mem, losses and copy share.

    ``net_config``: the student's network, a :class:`~pfdist.nets.NetSpec` or a config dict
    (its ``shape`` defaults to the teacher's). Writes ``out_dir/results.json`` (atomically, last)
    next to the training checkpoint and the final EMA student ``out_dir/student.safetensors``; if
    results for the same content key are already there, returns them without recomputing.
    ``eval_epochs`` adds the same report at those epochs (``history``). ``teacher_outputs`` /
    ``train_data`` may be passed in to share them across students (they must be the teacher's
    maps on the evaluation / dataset seeds). ``out_dir`` is locked while the student trains:
    another process gets a clear error naming the holder, or waits for it with ``wait=True``.
    Training data of another origin (real images) need ``train_data`` and a ``data_key`` naming
    them; it enters the content key and the record (E_mem and the copy share then refer to them).
    """
    device = resolve_device(device)
    unit = _unit(teacher, n, net_config, train_config, shape, eval_config, dataset_index, descriptor, eval_epochs,
                 train_data, data_key)
    done = distributed.broadcast(read_results(out_dir, unit.key))  # rank 0's view, in a group
    if done is not None:
        return done
    inputs = _Inputs(teacher, n, unit.shape, unit.seeds, eval_config, unit.descriptor, device, cache_dir, train_data,
                     teacher_outputs)
    if distributed.world()[0] > 0:  # under torchrun: rank 0 trains, every rank evaluates its block of seeds
        return _follow(inputs, unit.net, device)
    return _lead(unit, inputs, Path(out_dir), wait, progress)


def _lead(unit: _Unit, inputs: "_Inputs", out_dir: Path, wait: bool, progress: Callable | None) -> dict[str, Any]:
    """Rank 0 (or the only process): under the directory's lock, the finished record or a new one."""
    leader = _Leader()
    try:
        with DirectoryLock(out_dir, wait=wait):
            done = read_results(out_dir, unit.key)  # finished by another process while we waited
            if done is not None:
                leader.send("record", done)
                return done
            record = _train_and_evaluate(leader, inputs, unit, out_dir, progress)
            atomic_write_json(out_dir / RESULTS, record, checksum=True)
            leader.send("record", record)
    except BaseException as e:
        leader.send("error", (type(e).__name__, str(e)))  # to ranks waiting for the next step, if any
        raise
    return record


def _train_and_evaluate(leader: "_Leader", inputs: "_Inputs", unit: _Unit, out_dir: Path,
                        progress: Callable | None) -> dict:
    """Rank 0's work (all of it outside a group): inputs, training with its evaluations, the
    final student and its report; returns the results record."""
    t0, about = time.perf_counter(), unit.about()
    leader.send("inputs")
    inputs.compute()
    leader.waiting = True
    t_train = time.perf_counter()
    result = _train(leader, inputs, unit, out_dir, progress)
    train_s = time.perf_counter() - t_train
    student = result.denoiser.eval()
    save_denoiser(out_dir / STUDENT, student, info={k: about[k] for k in ("n", "dataset_index", "key")})
    leader.send("final", _cpu_state(student))
    report = inputs.evaluate(student, inputs.cache_dir)  # the final map is cached for bias-variance and sample grids
    leader.waiting = True
    return {"key": about["key"], "n": about["n"], "params": count_parameters(student), **about,  # the file's order
            "final_epoch_train_loss": result.history[-1] if result.history else None, **report,
            "eval_epochs": unit.eval_epochs, "history": result.evaluations,
            "wall_s": {"total": time.perf_counter() - t0, "train": train_s},
            "metrics_sha256": file_sha256(out_dir / METRICS)}


def _train(leader: "_Leader", inputs: "_Inputs", unit: _Unit, out_dir: Path, progress: Callable | None) -> TrainResult:
    """The student, built once from its spec and trained with its checkpoints (resuming from
    ``out_dir``'s), evaluated at ``unit.eval_epochs`` with every rank."""

    def callback(epoch: int, ema: torch.nn.Module, stats: dict) -> dict:
        ema.eval()
        leader.send("evaluate", _cpu_state(ema))
        record = {"epoch": epoch, "images": stats["images"], "epoch_train_loss": stats["loss"], **inputs.evaluate(ema)}
        leader.waiting = True
        ema.train()
        return record

    net = unit.net.build(seed=unit.train.init_seed)
    return train(net, inputs.train_data.to(inputs.device), unit.train, out_dir, callback=callback,
                 epochs_to_eval=unit.eval_epochs, progress=progress)


class _Inputs:
    """What a student is evaluated against (teacher samples and maps, the copier's map), and
    the evaluation itself: computed by every rank of a group together, one block of seeds each."""

    def __init__(self, teacher, n, shape, seeds, config, descriptor, device, cache_dir, train_data, teacher_outputs):
        self.teacher, self.n, self.shape, self.seeds, self.config = teacher, n, shape, seeds, config
        self.descriptor, self.device, self.cache_dir = descriptor, device, cache_dir
        self.train_data, self.teacher_outputs = train_data, teacher_outputs

    def compute(self) -> None:
        flow, device, cache_dir = self.config.flow, self.device, self.cache_dir
        if self.train_data is None:
            self.train_data = teacher_samples(self.teacher, self.seeds, shape=self.shape, flow=flow,
                                              device=device, cache_dir=cache_dir)
        elif self.train_data.shape != (self.n, *self.shape):
            raise PFDistError(f"train_data must be (N, *shape) = {(self.n, *self.shape)}; "
                              f"got {tuple(self.train_data.shape)}.")
        self.test_data = teacher_samples(self.teacher, range(TEST_SEED, TEST_SEED + self.config.test_samples),
                                         shape=self.shape, flow=flow, device=device, cache_dir=cache_dir)
        if self.teacher_outputs is None:
            self.teacher_outputs = teacher_map(self.teacher, self.shape, self.config, device=device, cache_dir=cache_dir)
        self.copier = copier_outputs(self.train_data, self.config, device=device, cache_dir=cache_dir)  # the ideal copier's map

    def evaluate(self, student: torch.nn.Module, cache: Any = None) -> dict[str, Any]:
        return evaluate_student(student, teacher_outputs=self.teacher_outputs, train_data=self.train_data,
                                test_data=self.test_data, config=self.config, descriptor=self.descriptor,
                                device=self.device, cache_dir=cache, copier=self.copier, teacher=self.teacher)


class _Leader:
    """Rank 0's messages to the other ranks, which wait for them between collective steps."""

    def __init__(self):
        self.waiting = distributed.world()[1] > 1

    def send(self, kind: str, payload: Any = None) -> None:
        if self.waiting:
            self.waiting = False
            distributed.broadcast((kind, payload))


def _cpu_state(net: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def _follow(inputs: _Inputs, net: NetSpec, device: Any) -> dict[str, Any]:
    """A rank other than 0: compute the inputs and each evaluation with rank 0, one block of
    seeds each, until rank 0 sends the record it wrote."""
    model = None
    while True:
        kind, payload = distributed.broadcast()
        if kind == "record":
            return payload
        if kind == "error":
            distributed.raise_remote(0, *payload)
        if kind == "inputs":
            inputs.compute()
        elif kind in ("evaluate", "final"):
            if model is None:
                model = net.build().to(device).eval()
            model.load_state_dict(payload)
            inputs.evaluate(model, inputs.cache_dir if kind == "final" else None)
