"""Engines: the same tables whether the local pool, Ray or Slurm (submitit) runs the units, also
after a worker is killed or a task preempted mid-unit; preset files."""

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pfdist
from pfdist.cli import app
from pfdist.experiments import BiasVarianceStudy, Preset, Scaling, Student, load_preset, run_preset
from pfdist.experiments.presets import MIXTURE_TEACHER
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

TABLES = ("scaling.csv", "bias_variance.csv")
TRAIN = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=4, epoch_images=1024, checkpoint_every=1)


def tiny() -> Preset:
    """Five unique students (bias-variance set 0 is the scaling student at N = 16)."""
    st = [Student(f"w{w}", {"arch": "mlp", "width": w, "depth": 1, "sigma_data": 1.0}) for w in (8, 16)]
    return Preset(name="tiny", teacher={**MIXTURE_TEACHER, "shape": [4]},
                  eval=EvalConfig(num_samples=32, test_samples=32, loss_repeats=1, flow=pfdist.FlowSettings(steps=6), batch_size=32),
                  scaling=Scaling((4, 16), tuple(st), TRAIN),
                  bias_variance=BiasVarianceStudy((16,), (st[0],), TRAIN, k=2))


def tables(run_dir: Path) -> dict:
    return {name: (run_dir / name).read_text() for name in TABLES}


@pytest.fixture(scope="module")
def preset_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.json"
    path.write_text(json.dumps(tiny().to_dict()))
    return path


@pytest.fixture(scope="module")
def reference(preset_file, tmp_path_factory, one_thread) -> dict:
    """``pfdist reproduce --preset tiny.json --engine local``: the uninterrupted run."""
    out = tmp_path_factory.mktemp("local")
    r = CliRunner().invoke(app, ["reproduce", "--preset", str(preset_file), "--engine", "local", "--out", str(out)])
    assert r.exit_code == 0, r.output
    found = tables(out)
    assert len(found["scaling.csv"].splitlines()) == 1 + 4 and len(found["bias_variance.csv"].splitlines()) == 1 + 1
    return found


def _watch_and_hit(run_dir: Path, find, hit, stop: threading.Event, log: list) -> None:
    """Once a unit has a checkpoint but no results, hit the process running it (once)."""
    while not stop.is_set():
        midway = [c.parent for c in run_dir.glob("units/*/checkpoint.json") if not (c.parent / "results.json").exists()]
        procs = find() if midway else []
        if procs:
            hit(procs[0])
            log.append((procs[0].pid, midway))
            return
        time.sleep(0.01)


def _processes(prefix: str):
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if prefix in cmd:
            found.append(p)
    return found


def _run_with_hit(run_dir: Path, find, hit, **run_kwargs) -> list:
    stop, log = threading.Event(), []
    watcher = threading.Thread(target=_watch_and_hit, args=(run_dir, find, hit, stop, log), daemon=True)
    watcher.start()
    try:
        run_preset(tiny(), run_dir, show_progress=False, **run_kwargs)
    finally:
        stop.set()
        watcher.join()
    return log


# Preset files.

def test_preset_file_takes_defaults_for_missing_keys(tmp_path):
    d = tiny().to_dict()
    del d["workers"], d["notes"], d["name"], d["eval"]["loss_seed"], d["scaling"]["train"]["P_std"]
    del d["bias_variance"]["k"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(d))
    expected = tiny().replace(name="mine", bias_variance=BiasVarianceStudy((16,), tiny().bias_variance.students, TRAIN))
    assert load_preset(path) == expected
    assert load_preset(path).key() == expected.key()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(scalling=d.pop("scaling")), "unknown keys"),
    (lambda d: d.pop("teacher"), "missing required keys"),
    (lambda d: d["scaling"].update(ns=[4, 0]), r"ns\[1\] must be an integer >= 1"),
    (lambda d: d["scaling"].update(ns="16"), "non-empty list"),
    (lambda d: d["bias_variance"].update(k=1), "k must be an integer >= 2"),
    (lambda d: d["eval"].update(num_sample=3), "unknown keys"),
    (lambda d: d["scaling"]["train"].update(lr=-1), "lr must be positive"),
    (lambda d: d["scaling"]["students"][0].pop("net"), "missing required keys"),
    (lambda d: d.update(workers=0), "workers"),
])
def test_bad_preset_files_are_refused(tmp_path, change, message):
    d = tiny().to_dict()
    change(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(pfdist.PFDistError, match=message):
        load_preset(path)


def test_unreadable_preset_files_and_engine_flags(tmp_path):
    (tmp_path / "broken.json").write_text("{")
    runner = CliRunner()
    for args, message in ((["--preset", str(tmp_path / "broken.json")], "not valid JSON"),
                          (["--preset", str(tmp_path / "absent.json")], "cannot read"),
                          (["--engine", "mpi"], "unknown engine"),
                          (["--engine", "local", "--address", "auto"], "--address"),
                          (["--engine", "ray", "--partition", "gpu"], "--partition"),
                          (["--engine", "slurm", "--gpus-per-unit", "0.5"], "whole number")):
        r = runner.invoke(app, ["reproduce", *args, "--out", str(tmp_path / "run")])
        assert r.exit_code == 2 and message in r.output, (args, r.output)
        assert not (tmp_path / "run").exists()  # nothing claimed before the input is valid


def test_reproduce_help_states_the_engines_own_defaults():
    import inspect

    from pfdist.experiments.engines.slurm import SlurmEngine

    text = " ".join(CliRunner().invoke(app, ["reproduce", "--help"], terminal_width=200).output.replace("│", " ").split())
    defaults = inspect.signature(SlurmEngine).parameters
    for name in ("time_min", "units_per_task"):
        assert f"default {defaults[name].default})" in text, name


def test_local_pool_of_two_workers_gives_the_same_tables(reference, tmp_path):
    run_preset(tiny(), tmp_path, workers=2, show_progress=False)
    assert tables(tmp_path) == reference
    with pytest.raises(pfdist.PFDistError, match="workers must be an integer >= 1"):
        run_preset(tiny(), tmp_path / "zero", workers=0, show_progress=False)
    assert not (tmp_path / "zero").exists()


@dataclass(frozen=True)
class _Nap:
    """A unit that sleeps (a job for the local pool: a callable dataclass with ``threads``)."""

    seconds: float
    threads: int | None = None

    def __call__(self) -> None:
        time.sleep(self.seconds)


def test_an_interrupted_local_pool_has_ended_its_manager_thread_when_it_raises():
    """Ctrl-C while units run: run() raises only once the pool's manager thread has ended, so it
    cannot close its wake-up pipe while the interpreter's exit writes to it ("Exception ignored ...
    Bad file descriptor" after the interrupt message)."""
    from concurrent.futures.process import _ExecutorManagerThread

    from pfdist.experiments.engines.local import LocalEngine

    def interrupt(job):
        raise KeyboardInterrupt

    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            LocalEngine(workers=2).run([_Nap(0.0), _Nap(60), _Nap(60), _Nap(60)], interrupt)
        assert not [t for t in threading.enumerate() if isinstance(t, _ExecutorManagerThread)]


# Ray.

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pfdist[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_gives_the_tables_of_the_local_pool(ray_cluster, reference, preset_file, tmp_path):
    r = CliRunner().invoke(app, ["reproduce", "--preset", str(preset_file), "--engine", "ray", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert tables(tmp_path) == reference
    assert len(_finished_in_worker_logs(tmp_path)) == len(list(tmp_path.glob("units/*/results.json")))


def test_killed_ray_worker_is_retried_and_the_tables_are_unchanged(ray_cluster, reference, tmp_path):
    pytest.importorskip("psutil", reason="psutil (a Ray dependency) finds the worker to kill")
    log = _run_with_hit(tmp_path, lambda: _processes("ray::run_unit"), lambda p: p.send_signal(signal.SIGKILL),
                        engine="ray")
    assert log, "no worker was caught mid-unit"
    assert tables(tmp_path) == reference


def test_ray_refuses_a_run_directory_a_node_cannot_see(ray_cluster, tmp_path):
    from pfdist.experiments.engines import get_engine

    with pytest.raises(pfdist.PFDistError, match="not shared with node"):  # no node holds this token
        get_engine("ray").check_shared_storage(ray_cluster, str(tmp_path), "a token the driver never wrote",
                                               driver_node=True)


def test_ray_starts_no_probe_task_on_the_driver_node(ray_cluster, tmp_path, monkeypatch):
    from pfdist.experiments.engines import get_engine

    def no_tasks(*args, **kwargs):
        raise AssertionError("a probe task was started on a one-node cluster")

    monkeypatch.setattr(ray_cluster, "remote", no_tasks)  # the driver wrote the token: nothing to ask
    get_engine("ray").check_shared_storage(ray_cluster, str(tmp_path), "a token the driver never wrote")


# Slurm through submitit's local executor.

def test_slurm_array_on_the_local_executor_survives_a_preemption(reference, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'pfdist[slurm]')")
    pytest.importorskip("psutil", reason="psutil finds the task to preempt")
    options = {"cluster": "local", "units_per_task": 3, "poll_s": 0.2, "time_min": 10}
    log = _run_with_hit(tmp_path, lambda: _processes("submitit.core._submit"), lambda p: p.send_signal(signal.SIGUSR2),
                        engine="slurm", engine_options=options)
    assert log, "no task was caught mid-unit"
    assert tables(tmp_path) == reference
    assert list(tmp_path.glob("slurm/*/*_log.out"))  # submitit's own logs, next to the run
    assert len(_finished_in_worker_logs(tmp_path)) == len(list(tmp_path.glob("units/*/results.json")))


def _finished_in_worker_logs(run_dir: Path) -> set:
    """The units whose worker logged their end in the run directory's log files."""
    lines = [line for path in run_dir.glob("logs/*.log") for line in path.read_text().splitlines()]
    return {line.split("job: ", 1)[1].split(": finished in")[0] for line in lines if ": finished in " in line}
