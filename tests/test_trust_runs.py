"""Runs that cannot hurt each other: a locked run directory, temporaries cleaned only when their
writer is dead, workers that die with their parent, shards over unique students, and a
directory claimed only after every input was validated."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import pfdist
from pfdist.atomic import remove_temporaries, temporary_name
from pfdist.experiments import BiasVarianceStudy, Preset, Scaling, Student, reproduce, units_of
from pfdist.experiments.presets import MIXTURE_TEACHER
from pfdist.experiments.run import prepare, run_preset, units_to_run, worker_count
from pfdist.lock import DirectoryLock
from pfdist.protocol import EvalConfig
from pfdist.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN = TrainConfig(batch_size=32, lr=3e-3, lr_schedule="onecycle", epochs=1, epoch_images=64, checkpoint_every=1)
EVAL = EvalConfig(num_samples=16, test_samples=16, loss_repeats=1, flow=pfdist.FlowSettings(steps=4), batch_size=16)


def mlp(width):
    return Student(f"w{width}", {"arch": "mlp", "width": width, "depth": 1, "sigma_data": 1.0})


def tiny(**changes):
    preset = Preset(name="tiny", teacher={**MIXTURE_TEACHER, "shape": [4]}, eval=EVAL,
                    scaling=Scaling((4, 8), (mlp(8), mlp(16)), TRAIN),
                    bias_variance=BiasVarianceStudy((8,), (mlp(8),), TRAIN, k=2))
    return replace(preset, **changes)


def python(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def hold_lock(directory: Path, seconds: float, marker: Path | None = None) -> subprocess.Popen:
    """A process holding ``directory``'s lock for ``seconds``, then writing ``marker`` before releasing it."""
    proc = python(f"import time, pathlib; from pfdist.lock import DirectoryLock\n"
                  f"with DirectoryLock({str(directory)!r}):\n    print('held', flush=True); time.sleep({seconds})\n"
                  f"    {'pathlib.Path(' + repr(str(marker)) + ').write_text(str(time.time()))' if marker else 'pass'}")
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_on_one_directory_is_refused_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path, 60)
    try:
        with pytest.raises(pfdist.PFDistError, match=f"in use by pid {holder.pid} on .*--wait"):
            run_preset(tiny(), tmp_path, show_progress=False)
        assert not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no stale lock.
    run_preset(tiny(bias_variance=None, scaling=Scaling((4,), (mlp(8),), TRAIN)), tmp_path, show_progress=False)


def test_wait_waits_for_the_holder(tmp_path):
    marker = tmp_path.parent / f"{tmp_path.name}-released"
    holder = hold_lock(tmp_path, 1.0, marker)
    with DirectoryLock(tmp_path, wait=True):
        assert marker.exists()  # we got the lock only once the holder was done
    holder.wait()


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temporary_name(tmp_path / "a.json")
    theirs_dead = Path(str(temporary_name(tmp_path / "sub" / "b.json")).replace(f"-{os.getpid()}-", f"-{dead.pid}-"))
    alive = python("import time; time.sleep(60)")
    theirs_alive = Path(str(temporary_name(tmp_path / "c.json")).replace(f"-{os.getpid()}-", f"-{alive.pid}-"))
    try:
        for p in (mine, theirs_dead, theirs_alive):
            p.parent.mkdir(exist_ok=True)
            p.write_text("partial")
        assert remove_temporaries(tmp_path) == [theirs_dead]
        assert mine.exists() and theirs_alive.exists() and not theirs_dead.exists()
    finally:
        alive.kill()
        alive.wait()


def test_a_killed_run_leaves_nothing_that_breaks_the_next(tmp_path):
    preset = tiny(bias_variance=None, scaling=Scaling((4,), (mlp(8),), TRAIN))
    killed = python(
        "import os, signal\n"
        "import pfdist.atomic as atomic\n"
        "real = atomic.os.replace\n"
        "def die(src, dst):\n"
        "    if str(dst).endswith('.safetensors') and 'checkpoint-' in str(dst): os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(src, dst)\n"
        "atomic.os.replace = die\n"
        "from tests.test_trust_runs import tiny, Scaling, mlp, TRAIN\n"
        "from pfdist.experiments.run import run_preset\n"
        f"run_preset(tiny(bias_variance=None, scaling=Scaling((4,), (mlp(8),), TRAIN)), {str(tmp_path)!r}, show_progress=False)\n"
    )
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert list(tmp_path.rglob(".*.tmp"))  # it died holding a temporary
    run_preset(preset, tmp_path, show_progress=False)
    assert not list(tmp_path.rglob(".*.tmp"))
    assert len((tmp_path / "scaling.csv").read_text().splitlines()) == 2


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    pids = tmp_path / "pids"
    script = tmp_path / "parent.py"  # a file, so that spawned workers can import its functions
    script.write_text(  # the local engine's pool, with jobs that record their pid and sleep
        "import os, time\n"
        "from dataclasses import dataclass\n"
        "from pfdist.experiments.engines.local import LocalEngine\n"
        "@dataclass(frozen=True)\n"
        "class Job:\n"
        "    threads: int | None = None\n"
        "    def __call__(self):\n"
        f"        open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    print('started', flush=True)\n"
        "    LocalEngine(2).run([Job(), Job()], lambda job: None)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 60
    while (not pids.exists() or len(pids.read_text().split()) < 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(p) for p in pids.read_text().split()]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (dead, not yet reaped by init) counts as gone.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)


def test_shards_split_unique_students(tmp_path, monkeypatch):
    preset = tiny()
    ctx = prepare(preset, tmp_path)
    keys = [ctx.key(u) for u in units_of(preset)]
    assert len(set(keys)) < len(keys)  # scaling and bias-variance share the dataset-0 students
    parts = [units_to_run(ctx, (i, 3)) for i in range(3)]
    trained = [keys[i] for part in parts for i in part]
    assert sorted(trained) == sorted(set(keys))  # every unique student exactly once
    import pfdist.protocol.student as student_module

    real_train, dirs = student_module.train, []
    monkeypatch.setattr(student_module, "train", lambda *a, **k: dirs.append(a[3]) or real_train(*a, **k))
    ran = [run_preset(preset, tmp_path, shard=(i, 2), show_progress=False)["ran"] for i in range(2)]
    assert sum(ran) == len(set(keys)) == len(dirs) == len(set(dirs))


def test_failed_start_claims_nothing(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(pfdist.PFDistError, match="does not exist"):
        reproduce(tiny(teacher=str(tmp_path / "missing.json")), run_dir, show_progress=False)
    with pytest.raises(pfdist.PFDistError, match="cannot run models"):
        reproduce(tiny(), run_dir, device="meta", show_progress=False)
    assert not run_dir.exists()
    small = tiny(bias_variance=None, scaling=Scaling((4,), (mlp(8),), TRAIN))
    run_preset(small, run_dir, show_progress=False)  # the corrected command is accepted
    assert (run_dir / "config.json").is_file()


def test_workers_are_capped():
    preset = tiny()
    assert worker_count(100, preset, 3) == min(3, os.cpu_count())
    assert worker_count(None, replace(preset, workers=1), 10) == 1
    assert worker_count(4, preset, 0) == 1
    for bad in (0, -1, 2.5):
        with pytest.raises(pfdist.PFDistError, match="workers"):
            worker_count(bad, preset, 3)


def test_tables_are_refused_when_a_unit_lacks_its_results(tmp_path, monkeypatch):
    import pfdist.experiments.run as run_module

    class Idle:  # an engine that runs nothing, as if a unit's results were lost
        def run(self, jobs, done):
            pass

    monkeypatch.setattr(run_module, "get_engine", lambda name, **options: Idle())
    with pytest.raises(pfdist.PFDistError, match="no complete results"):
        run_preset(tiny(bias_variance=None, scaling=Scaling((4,), (mlp(8),), TRAIN)), tmp_path, show_progress=False)
    assert not (tmp_path / "scaling.csv").exists()


def test_shards_started_together_queue_instead_of_refusing_each_other(tmp_path):
    """Both shards meet a lock held by another shard (claiming the directory) and wait for it:
    the documented multi-machine use works when every shard starts at once, without --wait."""
    import json

    preset = tiny(bias_variance=None, scaling=Scaling((4, 8), (mlp(8),), TRAIN))  # one student per shard
    holder = python(f"import time; from pfdist.lock import DirectoryLock\n"
                    f"with DirectoryLock({str(tmp_path)!r}, shared=True):\n    print('held', flush=True); time.sleep(1.5)")
    assert holder.stdout.readline().strip() == "held"
    code = ("import json, sys; from pfdist.experiments import Preset; from pfdist.experiments.run import run_preset\n"
            f"preset = Preset.from_dict(json.loads({json.dumps(json.dumps(preset.to_dict()))}))\n"
            f"print(run_preset(preset, {str(tmp_path)!r}, shard=(int(sys.argv[1]), 2), show_progress=False)['ran'])")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    shards = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [s.communicate(timeout=300) for s in shards]
    holder.wait()
    assert [s.returncode for s in shards] == [0, 0], [err[-500:] for _, err in outs]
    assert sum(int(out.split()[-1]) for out, _ in outs) == len(units_of(preset))
    ctx = prepare(preset, tmp_path)
    assert all(ctx.is_done(u) for u in units_of(preset))


def test_a_shard_is_still_refused_by_a_whole_run(tmp_path):
    holder = hold_lock(tmp_path, 60)  # an unsharded run holds the directory for its whole length
    try:
        with pytest.raises(pfdist.PFDistError, match=f"in use by pid {holder.pid}"):
            run_preset(tiny(), tmp_path, shard=(0, 2), show_progress=False)
    finally:
        holder.kill()
        holder.wait()


def test_rescore_refuses_a_config_edited_under_its_key(tmp_path):
    import json

    from typer.testing import CliRunner

    from pfdist.cli import app
    from pfdist.experiments.run import claim_run_dir

    claim_run_dir(tiny(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["preset"]["eval"]["num_samples"] = 32  # another science under the old key
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = CliRunner().invoke(app, ["rescore", str(tmp_path), "--descriptor", "pixels"])
    assert r.exit_code == 2 and "was edited" in r.output and "students rescored" not in r.output, r.output
    assert not (tmp_path / "rescore").exists()
