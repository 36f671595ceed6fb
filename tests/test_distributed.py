"""Data-parallel PFD in a torch.distributed group: same per-seed values as one process, errors on
one rank raised on all ranks, and the torchrun command line."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import pfdist
from pfdist import distributed
from pfdist.protocol import EvalConfig, evaluate_student
from pfdist.specs import load_spec

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this PyTorch has no torch.distributed with gloo")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NAN_SEED = 100_020  # in the second rank's block of 29 seeds from 100 000 (batches of 8: blocks of 16 and 13)


def test_blocks_are_contiguous_and_balanced():
    for n in range(0, 40):
        for world in range(1, 9):
            for unit in (1, 3, 8):
                blocks = [distributed.block(n, r, world, unit) for r in range(world)]
                covered = [i for offset, count in blocks for i in range(offset, offset + count)]
                assert covered == list(range(n))  # contiguous, in rank order, nothing twice
                assert all(offset % unit == 0 for offset, count in blocks if count)  # whole units
                units = [-(-c // unit) for _, c in blocks]
                assert max(units) - min(units) <= 1


def _models():
    teacher, other = (load_spec(EXAMPLES / f) for f in ("teacher.json", "other.json"))
    torch.manual_seed(0)
    student = pfdist.build_network({"arch": "mlp", "width": 32, "depth": 2, "sigma_data": 1.0, "shape": [16]}).eval()
    return teacher, other, student


def _broken(model):
    """NaN on the first call for a batch holding NAN_SEED's noise."""
    x_T = pfdist.noise([NAN_SEED], (16,))[0]

    def denoiser(x, sigma):
        out = model(x, sigma)
        hit = (x == x_T).all(1).any()
        return out * float("nan") if hit else out

    return denoiser


def _batch_sized(model):
    """A denoiser whose output depends on the size of its batch, as a network's rounding may."""
    return lambda x, sigma: model(x, sigma) + 1e-3 * x.shape[0]


def _computations(teacher, other, student):
    """What both one process and each rank compute; returns tensors and records."""
    r = pfdist.pfd(teacher, other, num_samples=29, batch_size=8, error_estimate=True)
    flow = pfdist.flow_outputs(other, shape=(16,), num_samples=13, batch_size=4)
    # Each rank forms the batches of one process (4, 4 | 4, 1), not batches of its own (4, 3 | 4, 2).
    sized = pfdist.flow_outputs(_batch_sized(other), shape=(16,), num_samples=13, batch_size=4)
    config = EvalConfig(num_samples=21, batch_size=8, test_samples=16, loss_repeats=1)
    t_out = pfdist.flow_outputs(teacher, shape=(16,), num_samples=21, batch_size=8)
    train_data, test_data = teacher.sample(8, generator=torch.Generator().manual_seed(1)), teacher.sample(16, generator=torch.Generator().manual_seed(2))
    record = evaluate_student(student, teacher_outputs=t_out, train_data=train_data.float(),
                              test_data=test_data.float(), config=config)
    return {"pfd": r.per_sample, "flow": flow.values, "flow_nfe": torch.tensor(flow.nfe), "batch_sized": sized.values}, \
        {"value": r.value, "nfe": r.nfe, "student": record, "solver_error": [r.solver_error_a, r.solver_error_b]}


def _rank_main(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))  # a hang fails the test instead of stalling it
    torch.set_num_threads(1)
    try:
        teacher, other, student = _models()
        tensors, record = _computations(teacher, other, student)
        try:
            pfdist.pfd(teacher, _broken(other), num_samples=29, batch_size=8)
        except pfdist.NonFiniteError as e:
            record["nan_error"] = str(e)
        try:  # a file only rank 0 lacks
            distributed.together(lambda: open(os.path.join(out, "absent")) if rank == 0 else None)
        except (OSError, pfdist.DistributedError) as e:
            record["file_error"] = f"{type(e).__name__}: {e}"
        record["after_errors"] = pfdist.pfd(teacher, other, num_samples=5).value  # still in step
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, f"rank{rank}.safetensors"))
        Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path, one_thread):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    teacher, other, student = _models()
    tensors, record = _computations(teacher, other, student)
    alone = pfdist.pfd(teacher, other, num_samples=5).value
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        for name, t in tensors.items():
            assert torch.equal(got[name], t), name  # per-seed values identical to one process
        rec = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert rec["value"] == pytest.approx(record["value"], rel=1e-12)
        assert rec["nfe"] == record["nfe"]
        assert rec["solver_error"] == pytest.approx(record["solver_error"], rel=1e-12)  # its seeds spread too
        assert rec["student"] == json.loads(json.dumps(record["student"]))
        # NaN on rank 1's seeds: both ranks end with the same error, naming the seeds.
        assert "100016..100023" in rec["nan_error"]
        assert rec["nan_error"].startswith("on rank 1: ") == (rank == 0)
        # An unreadable file on rank 0 only: rank 1 is told instead of waiting.
        expected = "FileNotFoundError" if rank == 0 else "DistributedError: rank 0 failed with FileNotFoundError"
        assert rec["file_error"].startswith(expected)
        assert rec["after_errors"] == alone


def test_torchrun_distance_writes_the_per_seed_values_of_one_process(tmp_path, one_thread):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pfdist",
           "distance", str(EXAMPLES / "teacher.json"), str(EXAMPLES / "other.json"), "-n", "301", "--per-sample",
           "-o", "r.json"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("PFD = ") == 1 and done.stdout.count("wrote r.json") == 1  # rank 0 alone prints
    teacher, other, _ = _models()
    alone = pfdist.pfd(teacher, other, shape=(16,), num_samples=301)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["per_sample"] == alone.per_sample.tolist()
    assert written["pfd"] == pytest.approx(alone.value, rel=1e-12)


def _torchrun(args, cwd, nproc=2):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "pfdist",
           *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


STUDENT_ARGS = ["student", str(EXAMPLES / "teacher.json"), "-N", "24", "--net", '{"arch": "mlp", "width": 16, "depth": 1}',
                "--train", '{"epochs": 2, "epoch_images": 256, "batch_size": 32, "checkpoint_every": 1}',
                "--eval", '{"num_samples": 37, "test_samples": 16, "loss_repeats": 1, "steps": 6, "batch_size": 8}',
                "--eval-epochs", "0,1"]


def _without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("wall_s", "content_sha256")}  # times differ


def test_torchrun_student_gives_the_results_of_one_process(tmp_path, one_thread):
    """Rank 0 trains, both ranks evaluate their blocks of the 37 seeds: the record of one process."""
    done = _torchrun([*STUDENT_ARGS, "--out", "two"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("E_GEN") == 1  # rank 0 alone prints
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    alone = subprocess.run([sys.executable, "-m", "pfdist", *STUDENT_ARGS, "--out", "one"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    two, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("two", "one"))
    assert [h["epoch"] for h in two["history"]] == [0, 1]
    assert _without_times(two) == _without_times(one)


def _tiny_preset() -> dict:
    """Five unique students (bias-variance set 0 is the scaling student at N = 16)."""
    from pfdist.experiments import BiasVarianceStudy, Preset, Scaling, Student
    from pfdist.experiments.presets import MIXTURE_TEACHER
    from pfdist.training import TrainConfig

    train = TrainConfig(batch_size=64, lr=3e-3, lr_schedule="onecycle", epochs=2, epoch_images=512, checkpoint_every=1)
    st = [Student(f"w{w}", {"arch": "mlp", "width": w, "depth": 1, "sigma_data": 1.0}) for w in (8, 16)]
    return Preset(name="tiny", teacher={**MIXTURE_TEACHER, "shape": [4]},
                  eval=EvalConfig(num_samples=33, test_samples=32, loss_repeats=1, flow=pfdist.FlowSettings(steps=6), batch_size=16),
                  scaling=Scaling((4, 16), tuple(st), train),
                  bias_variance=BiasVarianceStudy((16,), (st[0],), train, k=2)).to_dict()


def test_torchrun_reproduce_writes_the_tables_of_one_process(tmp_path, one_thread):
    """Two ranks share the teacher's maps, train 3 and 2 of the 5 students; rank 0's tables are
    those of one process."""
    from typer.testing import CliRunner

    from pfdist.cli import app

    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(_tiny_preset()))
    done = _torchrun(["reproduce", "--preset", str(preset), "--out", "two"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("report: ") == 1  # rank 0 alone prints
    r = CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    for table in ("scaling.csv", "bias_variance.csv"):
        assert (tmp_path / "two" / table).read_text() == (tmp_path / "one" / table).read_text()
    assert (tmp_path / "two" / "report.md").is_file()


def test_torchrun_reproduce_on_a_held_directory_ends_every_rank_with_one_error(tmp_path, one_thread):
    """Rank 0 cannot lock the run directory: both ranks stop at once (no rank left waiting)."""
    from pfdist.lock import DirectoryLock

    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps(_tiny_preset()))
    (tmp_path / "run").mkdir()
    with DirectoryLock(tmp_path / "run"):
        done = _torchrun(["reproduce", "--preset", str(preset), "--out", "run"], tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "in use" in errors[0], done.stderr[-2000:]
    assert "]: Traceback" not in done.stderr, done.stderr[-2000:]  # no rank fails otherwise ([rank1]: ...)
    assert not (tmp_path / "run" / "config.json").exists()
