"""No silent data loss: the dynamics history survives a resume, corrupt files are detected and
recomputed, metrics are logged per epoch, and nothing pfdist loads runs code."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

import pfdist
from pfdist.atomic import (CorruptFileError, CorruptFileWarning, atomic_save_tensors, atomic_write_json,
                           load_tensors_checked, read_json_checked)
from pfdist.protocol import EvalConfig, read_results, teacher_samples, teacher_student
from pfdist.nets import build_network
from pfdist.training import TrainConfig, train

EVAL = EvalConfig(num_samples=16, test_samples=16, loss_repeats=1, flow=pfdist.FlowSettings(steps=4), batch_size=16)
TRAIN = TrainConfig(batch_size=16, lr=2e-3, epochs=4, epoch_images=32, checkpoint_every=1)
NET = {"arch": "mlp", "shape": [4], "width": 8, "depth": 1, "sigma_data": 1.0}


@pytest.fixture(scope="module")
def teacher():
    return pfdist.random_low_rank_mixture(4, 2, 2, scale=1.5, mean_scale=2.0, noise_std=0.1, seed=0)


def record_of(epoch, ema, stats):
    return {"weight_sum": float(sum(p.double().sum() for p in ema.parameters())), "loss": stats["loss"]}


def test_history_is_restored_on_resume(tmp_path, one_thread):
    data = torch.randn(8, 4)
    full = train(build_network(NET, seed=TRAIN.init_seed), data, TRAIN, tmp_path / "full", callback=record_of, epochs_to_eval=(0, 1, 2, 3, 4))

    def dies_at_3(epoch, ema, stats):
        if epoch == 3:
            raise KeyboardInterrupt  # killed after the epoch-2 checkpoint
        return record_of(epoch, ema, stats)

    with pytest.raises(KeyboardInterrupt):
        train(build_network(NET, seed=TRAIN.init_seed), data, TRAIN, tmp_path / "cut", callback=dies_at_3, epochs_to_eval=(0, 1, 2, 3, 4))
    calls = []

    def counting(epoch, ema, stats):
        calls.append(epoch)
        return record_of(epoch, ema, stats)

    resumed = train(build_network(NET, seed=TRAIN.init_seed), data, TRAIN, tmp_path / "cut", callback=counting, epochs_to_eval=(0, 1, 2, 3, 4))
    assert calls == [3, 4]  # only what the killed run had not done
    assert [r["epoch"] for r in resumed.evaluations] == [0, 1, 2, 3, 4]

    def same(a, b):  # NaN (the loss before epoch 1) equals itself here
        return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)

    assert all(same(a, b) for a, b in zip(resumed.evaluations, full.evaluations))  # bit-identical


def test_checkpoint_without_the_history_is_not_resumed(tmp_path, one_thread):
    data = torch.randn(8, 4)
    train(build_network(NET, seed=TRAIN.init_seed), data, TrainConfig(**{**TRAIN.to_dict(), "epochs": 2}), tmp_path)  # no evaluations recorded
    with pytest.warns(RuntimeWarning, match="lacks the evaluations at epochs"):
        result = train(build_network(NET, seed=TRAIN.init_seed), data, TRAIN, tmp_path, callback=record_of, epochs_to_eval=(1, 3))
    assert [r["epoch"] for r in result.evaluations] == [1, 3]


def test_lost_results_of_a_dynamics_unit_keep_their_history(teacher, tmp_path, one_thread):
    first = teacher_student(teacher, 8, NET, TRAIN, tmp_path, eval_config=EVAL, eval_epochs=(0, 2, 4))
    (tmp_path / "results.json").unlink()
    again = teacher_student(teacher, 8, NET, TRAIN, tmp_path, eval_config=EVAL, eval_epochs=(0, 2, 4))
    assert [h["epoch"] for h in again["history"]] == [0, 2, 4]
    assert [h["e_gen"] for h in again["history"]] == [h["e_gen"] for h in first["history"]]


def test_interrupted_dynamics_unit_has_its_whole_history(teacher, tmp_path, one_thread):
    def killed(step, total, loss):
        if step == 6:  # in epoch 3, after the epoch-2 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        teacher_student(teacher, 8, NET, TRAIN, tmp_path, eval_config=EVAL, eval_epochs=(0, 1, 2, 3, 4), progress=killed)
    rec = teacher_student(teacher, 8, NET, TRAIN, tmp_path, eval_config=EVAL, eval_epochs=(0, 1, 2, 3, 4))
    assert [h["epoch"] for h in rec["history"]] == [0, 1, 2, 3, 4]
    # metrics.jsonl: one JSON line per epoch, evaluations flattened into columns.
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["e_gen_pfd"] for r in rows] == [h["e_gen"]["pfd"] for h in rec["history"]]
    assert rows[0]["epoch_train_loss"] is None and all(math.isfinite(r["epoch_train_loss"]) for r in rows[1:])
    assert [r["images"] for r in rows] == [e * 32 for e in range(5)]


def test_edited_or_malformed_results_are_an_unfinished_unit(teacher, tmp_path, one_thread):
    rec = teacher_student(teacher, 8, NET, TRAIN, tmp_path, eval_config=EVAL)
    path = tmp_path / "results.json"
    good = path.read_text()
    path.write_text(good.replace(json.dumps(rec["e_gen"]["pfd"]), json.dumps(rec["e_gen"]["pfd"] / 2)))
    with pytest.warns(CorruptFileWarning, match="fails its checksum"):
        assert read_results(tmp_path, rec["key"]) is None
    for bad in ("{", "[]", '{"key": 1}'):
        path.write_text(bad)
        with pytest.warns(CorruptFileWarning):
            assert read_results(tmp_path, rec["key"]) is None
    with pytest.warns(CorruptFileWarning):
        again = teacher_student(teacher, 8, NET, TRAIN, tmp_path, eval_config=EVAL)  # recomputed from the checkpoint
    assert again["e_gen"] == rec["e_gen"]
    assert read_results(tmp_path, rec["key"]) == again


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_dataset_cache_is_a_miss(teacher, tmp_path, damage):
    seeds = range(0, 16)
    clean = teacher_samples(teacher, seeds, shape=(4,), cache_dir=tmp_path)
    (path,) = tmp_path.glob("data-*.safetensors")
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-5] ^= 0x10  # a byte of the tensor data
    else:
        raw = raw[: len(raw) // 2]
    path.write_bytes(bytes(raw))
    with pytest.warns(CorruptFileWarning, match=str(path.name)):
        again = teacher_samples(teacher, seeds, shape=(4,), cache_dir=tmp_path)
    assert torch.equal(again, clean)
    assert torch.equal(load_tensors_checked(path)[0]["data"], clean)  # rewritten, good again


def test_checked_files_round_trip_and_detect_damage(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": [1, 2.5], "b": None}, checksum=True)
    assert read_json_checked(tmp_path / "r.json") == {"a": [1, 2.5], "b": None}
    atomic_save_tensors(tmp_path / "t.safetensors", {"x": torch.arange(6.0)}, {"note": "n"}, checksum=True)
    tensors, meta = load_tensors_checked(tmp_path / "t.safetensors")
    assert torch.equal(tensors["x"], torch.arange(6.0)) and meta == {"note": "n"}
    atomic_save_tensors(tmp_path / "plain.safetensors", {"x": torch.ones(2)})
    with pytest.raises(CorruptFileError, match="no pfdist_sha256"):
        load_tensors_checked(tmp_path / "plain.safetensors")


# ----------------------------------------------------------------- no code from data files

ROOT = Path(__file__).resolve().parents[1] / "pfdist"
UNPICKLING = ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads",
              "marshal.load", "marshal.loads", "shelve.open", "pickle.Unpickler", "jsonpickle.decode")
CODE_LOADERS = ("jit.load", "export.load", "package.PackageImporter")


def test_nothing_in_pfdist_unpickles_or_loads_code_from_data_files():
    """torch.load only with weights_only=True; no plain unpickling (a restricted Unpickler subclass
    must override find_class); TorchScript / torch.export archives only in modules whose docstring
    says that such files are code to be trusted."""
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT)
        doc = (ast.get_docstring(tree) or "").lower()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("Unpickler") for b in node.bases):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                assert "find_class" in methods, f"{rel}: {node.name} unpickles without restricting find_class"
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kwargs = {k.arg: k.value for k in node.keywords}
            if name.endswith("torch.load"):
                flag = kwargs.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, \
                    f"{rel}:{node.lineno}: torch.load without weights_only=True"
            assert not name.endswith(UNPICKLING), f"{rel}:{node.lineno}: {name} can run code from a data file"
            if name.endswith(("numpy.load", "np.load")):
                assert not (isinstance(kwargs.get("allow_pickle"), ast.Constant) and kwargs["allow_pickle"].value), rel
            if name.endswith(CODE_LOADERS) or name in ("eval", "exec"):
                assert "trust" in doc and ("code" in doc or "program" in doc), \
                    f"{rel}:{node.lineno}: {name} loads code; the module docstring must say such files are code to trust"


def test_docstrings_cite_sections_of_docs_method_that_exist():
    import re

    method = (ROOT.parent / "docs" / "method.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\.", method, re.M))
    cited = 0
    for path in ROOT.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "PAPER.md" not in text, f"{path} cites PAPER.md, which is not in the repository"
        for refs in re.findall(r"docs/method\.md, §([\d\-, §]+)", text):
            for n in re.findall(r"\d+", refs):
                assert n in sections, f"{path} cites docs/method.md §{n}, which does not exist"
                cited += 1
    assert cited >= 4


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_flow_cache_is_a_miss(teacher, tmp_path, damage):
    clean = pfdist.flow_outputs(teacher, num_samples=8, flow=pfdist.FlowSettings(steps=4), cache_dir=tmp_path).values
    (path,) = tmp_path.glob("flow-*.safetensors")
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0x01  # one bit of the last value: a silently different map without a checksum
    else:
        raw = raw[: len(raw) - 7]
    path.write_bytes(bytes(raw))
    with pytest.warns(CorruptFileWarning, match=path.name):
        again = pfdist.flow_outputs(teacher, num_samples=8, flow=pfdist.FlowSettings(steps=4), cache_dir=tmp_path).values
    assert torch.equal(again, clean)
    assert torch.equal(pfdist.flow_outputs(teacher, num_samples=8, flow=pfdist.FlowSettings(steps=4), cache_dir=tmp_path).values, clean)


def _swap(first, second):
    one, two = first.read_bytes(), second.read_bytes()
    first.write_bytes(two)
    second.write_bytes(one)


def test_swapped_cache_files_are_detected_and_recomputed(teacher, tmp_path):
    """A valid cache file copied over another (same format, checksum intact) is another key's
    entry: it is recomputed with a warning, never read as the entry asked for."""
    flow = pfdist.FlowSettings(steps=4)
    a = pfdist.flow_outputs(teacher, num_samples=8, seed=0, flow=flow, cache_dir=tmp_path).values
    b = pfdist.flow_outputs(teacher, num_samples=8, seed=50, flow=flow, cache_dir=tmp_path).values
    _swap(*tmp_path.glob("flow-*.safetensors"))
    with pytest.warns(CorruptFileWarning, match="not the cache entry asked for"):
        again = pfdist.flow_outputs(teacher, num_samples=8, seed=0, flow=flow, cache_dir=tmp_path).values
    assert torch.equal(again, a) and not torch.equal(again, b)

    d1 = teacher_samples(teacher, range(0, 16), shape=(4,), cache_dir=tmp_path)
    d2 = teacher_samples(teacher, range(16, 32), shape=(4,), cache_dir=tmp_path)
    _swap(*tmp_path.glob("data-*.safetensors"))
    with pytest.warns(CorruptFileWarning, match="not the cache entry asked for"):
        again = teacher_samples(teacher, range(0, 16), shape=(4,), cache_dir=tmp_path)
    assert torch.equal(again, d1) and not torch.equal(again, d2)


@pytest.fixture
def finished_student(teacher, tmp_path, one_thread):
    from pfdist.protocol import student as student_module

    args = dict(n=8, net_config=NET, train_config=TRAIN, out_dir=tmp_path / "s", eval_config=EVAL, eval_epochs=(2,))
    record = teacher_student(teacher, **args)
    rerun = lambda: teacher_student(teacher, **args)  # noqa: E731
    return tmp_path / "s", record, rerun, student_module


@pytest.mark.parametrize("damage", ["line", "truncate", "delete"])
def test_damaged_metrics_log_is_detected_and_written_again(finished_student, damage):
    out, record, rerun, student_module = finished_student
    metrics = out / "metrics.jsonl"
    good = metrics.read_bytes()
    if damage == "line":  # still valid JSON on every line, but not what training logged
        metrics.write_text(good.decode().replace('"epoch": 1', '"epoch": 7', 1))
    elif damage == "truncate":
        metrics.write_bytes(good[: len(good) // 2])
    else:
        metrics.unlink()
    with pytest.warns(CorruptFileWarning, match="metrics.jsonl is missing or damaged"):
        assert student_module.read_results(out, record["key"]) is None
    with pytest.warns(CorruptFileWarning):
        again = rerun()  # resumes from the finished checkpoint: no training, the log written again
    assert metrics.read_bytes() == good
    assert again["history"] == record["history"] and again["e_gen"] == record["e_gen"]


def test_damaged_student_file_advice_applies(finished_student):
    out, record, rerun, student_module = finished_student
    student = out / "student.safetensors"
    good = student.read_bytes()
    damaged = bytearray(good)
    damaged[-3] ^= 0xFF
    student.write_bytes(bytes(damaged))
    with pytest.raises(pfdist.CheckpointError) as e:
        student_module.load_student(out)
    message = str(e.value)
    assert f"delete {out / 'results.json'} and run the same command again" in message
    assert "save_denoiser" not in message  # advice for a user's own file, not for a unit of a run
    (out / "results.json").unlink()  # follow the advice
    again = rerun()
    assert student.read_bytes() == good and again["e_gen"] == record["e_gen"]
    student_module.load_student(out)


def test_kernel_file_without_its_fingerprint_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    desc = pfdist.KernelDescriptor.fit(torch.randn(20, 3), num_features=8)
    path = desc.save(tmp_path / "k.safetensors")
    assert pfdist.KernelDescriptor.load(path).fingerprint() == desc.fingerprint()
    config = desc.config()
    del config["fingerprint"]
    config["bandwidth"] *= 3  # the edit a missing fingerprint would let through
    save_file(load_file(path), str(path), metadata={"pfdist": json.dumps(config)})
    with pytest.raises(pfdist.PFDistError, match="records no fingerprint"):
        pfdist.KernelDescriptor.load(path)
