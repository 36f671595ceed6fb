"""Teacher-student protocol at tiny sizes: memorization, generalization, bias-variance, bad input."""

import json

import pytest
import torch

import pfdist
from pfdist.protocol import EvalConfig, bias_variance, dataset_seeds, decompose, teacher_samples, teacher_student
from pfdist.training import TrainConfig

EVAL = EvalConfig(num_samples=128, test_samples=128, loss_repeats=1, batch_size=128)


def mlp(shape, width=64, depth=2):
    return {"arch": "mlp", "shape": list(shape), "width": width, "depth": depth, "sigma_data": 1.0}


def short(epochs=10, epoch_images=128 * 25, lr=3e-3):
    return TrainConfig(batch_size=128, lr=lr, lr_schedule="onecycle", epochs=epochs, epoch_images=epoch_images,
                       ema_halflife_images=20_000, checkpoint_every=5)


@pytest.fixture(scope="module")
def teacher():
    return pfdist.random_low_rank_mixture(4, 2, 2, scale=1.5, mean_scale=2.0, noise_std=0.1, seed=0)


def test_student_on_few_points_memorizes(teacher, tmp_path):
    rec = teacher_student(teacher, 2, mlp([4]), short(), tmp_path, eval_config=EVAL)
    assert rec["mem_ratio"]["value"] > 0.9  # its samples copy training points
    assert rec["e_mem"]["pfd"] < 0.5 * rec["e_gen"]["pfd"]
    data = teacher_samples(teacher, dataset_seeds(2), shape=(4,))
    student = pfdist.training.load_denoiser(tmp_path / "student.safetensors")
    out = pfdist.flow_map(student, pfdist.noise(range(100_000, 100_032), (4,)))
    dist, _ = pfdist.nearest_neighbors(out, data, k=1)
    scale = torch.cdist(data, data).max()
    assert dist.median() < 0.1 * scale  # its flow lands (near) its training points


def test_student_on_many_samples_approaches_gaussian_teacher(tmp_path):
    teacher = pfdist.Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]))
    rec = teacher_student(teacher, 4096, mlp([2], 64, 2), short(epochs=12, lr=5e-3), tmp_path, eval_config=EVAL)
    data_scale = (teacher.eigvals.sum() + (teacher.mean**2).sum()).sqrt().item()  # RMS norm of the data
    assert rec["e_gen"]["pfd"] < 0.15 * data_scale, rec["e_gen"]
    # In 2-d, fresh points have d1/d2 < 1/3 by chance with probability (1/3)^2 = 1/9 (Poisson
    # points); a copying student would be near 1.
    assert rec["mem_ratio"]["ci95"][0] < 1 / 9 < rec["mem_ratio"]["ci95"][1] + 0.05


def test_results_are_reused_not_recomputed(teacher, tmp_path, monkeypatch):
    first = teacher_student(teacher, 4, mlp([4], 16, 1), short(epochs=2, epoch_images=256), tmp_path, eval_config=EVAL)
    import pfdist.protocol.student as student_module

    monkeypatch.setattr(student_module, "train", lambda *a, **k: pytest.fail("retrained a finished student"))
    again = teacher_student(teacher, 4, mlp([4], 16, 1), short(epochs=2, epoch_images=256), tmp_path, eval_config=EVAL)
    assert again == first
    assert json.loads((tmp_path / "results.json").read_text())["key"] == first["key"]


def test_eval_epochs_record_history(teacher, tmp_path):
    rec = teacher_student(teacher, 8, mlp([4], 16, 1), short(epochs=3, epoch_images=256), tmp_path,
                          eval_config=EVAL, eval_epochs=[0, 1, 3])
    assert [h["epoch"] for h in rec["history"]] == [0, 1, 3]
    assert rec["history"][-1]["e_gen"]["pfd"] == pytest.approx(rec["e_gen"]["pfd"])


def test_bias_variance_identity_holds_exactly():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(500, 3, 4, 4, generator=g)
    students = [teacher + 0.3 * torch.randn(500, 3, 4, 4, generator=g) + 0.1 * k for k in range(5)]
    bv = decompose(teacher, students, batch_size=64)
    assert abs(bv.identity_gap) < 1e-12 * bv.mean_e_gen_sq
    # brute force oracle
    s = torch.stack(students).double().flatten(2)
    t = teacher.double().flatten(1)
    m = s.mean(0)
    assert bv.e_bias**2 == pytest.approx(((t - m) ** 2).sum(1).mean().item(), rel=1e-12)
    assert bv.e_var == pytest.approx(((s - m) ** 2).sum(2).mean().item(), rel=1e-12)


def test_bias_variance_end_to_end(teacher, tmp_path):
    rep = bias_variance(teacher, 16, mlp([4], 16, 1), short(epochs=2, epoch_images=256), tmp_path, k=3, eval_config=EVAL)
    assert rep["k"] == 3 and abs(rep["identity_gap"]) < 1e-9 * rep["mean_e_gen_sq"]
    # E_gen^2 from the protocol's PFD equals the decomposition's per-student value
    for e, sq in zip(rep["e_gen"], rep["e_gen_sq"]):
        assert e**2 == pytest.approx(sq, rel=1e-5)
    from pfdist.atomic import read_json_checked

    assert read_json_checked(tmp_path / "bias_variance.json")["e_gen"] == pytest.approx(rep["e_gen"])


def test_the_student_config_is_validated_once_at_the_entry(teacher, tmp_path, monkeypatch):
    import pfdist.nets.build as build_module

    calls, normalize = [], build_module.normalize_config
    monkeypatch.setattr(build_module, "normalize_config", lambda c: calls.append(c) or normalize(c))
    config = {"arch": "mlp", "width": 8, "depth": 1, "sigma_data": 1.0}
    rec = teacher_student(teacher, 2, config, short(epochs=1, epoch_images=128), tmp_path, eval_config=EVAL,
                          eval_epochs=[1])
    assert len(calls) == 1 and rec["net_config"] == normalize({**config, "shape": [4]})
    spec = pfdist.NetSpec({**config, "shape": [4]})
    calls.clear()
    again = teacher_student(teacher, 2, spec, short(epochs=1, epoch_images=128), tmp_path, eval_config=EVAL,
                            eval_epochs=[1])
    assert calls == [] and again == rec  # a spec names the same unit and is not validated again


# Bad input: one clear error, nothing half-written.

def test_student_shape_must_match_teacher(teacher, tmp_path):
    with pytest.raises(pfdist.PFDistError, match="differs from the teacher"):
        teacher_student(teacher, 4, mlp([5]), short(), tmp_path, eval_config=EVAL)
    assert not (tmp_path / "results.json").exists()


def test_n_beyond_a_finite_teacher(tmp_path):
    finite = pfdist.EmpiricalDenoiser(torch.randn(10, 4))
    with pytest.raises(pfdist.PFDistError, match="finite set of 10 points"):
        teacher_student(finite, 11, mlp([4]), short(), tmp_path, eval_config=EVAL)


def test_training_seeds_stay_off_evaluation_seeds():
    with pytest.raises(pfdist.PFDistError, match="overlap the evaluation seeds"):
        dataset_seeds(200_000)
    assert dataset_seeds(8, 2) == range(2 * 2**20, 2 * 2**20 + 8)


def test_error_estimate_puts_each_maps_solver_error_beside_the_intervals(teacher, tmp_path):
    config = EvalConfig(num_samples=128, test_samples=64, loss_repeats=1, batch_size=128,
                        flow=pfdist.FlowSettings(steps=8), error_estimate=True)
    rec = teacher_student(teacher, 4, mlp([4], 16, 1), short(epochs=2, epoch_images=256), tmp_path, eval_config=config)
    e_gen, e_mem = rec["e_gen"], rec["e_mem"]
    assert e_gen["solver_error_a"] == e_mem["solver_error_a"] > 0  # the student's map, in both
    assert e_gen["solver_error"] == pytest.approx(e_gen["solver_error_a"] + e_gen["solver_error_b"])
    assert e_mem["solver_error_b"] > 0  # the copier's map (the empirical flow) is solved too
    # The teacher's estimate against its dopri5 map on the same seeds: within a factor 3.
    x_T = pfdist.noise(range(config.seed, config.seed + 128), (4,), dtype=torch.float64)
    grid = pfdist.flow_map(teacher, x_T, flow=config.flow)
    truth = pfdist.squared_distances(grid, pfdist.flow_map(teacher, x_T, solver="reference")).mean().sqrt().item()
    assert 1 / 3 <= e_gen["solver_error_b"] / truth <= 3, (e_gen["solver_error_b"], truth)


def test_error_estimate_is_validated_and_leaves_older_keys_alone():
    assert "error_estimate" not in EvalConfig().to_dict()  # runs made before it existed keep their keys
    assert EvalConfig(error_estimate=True).to_dict()["error_estimate"] is True
    with pytest.raises(pfdist.PFDistError, match="error_estimate"):
        EvalConfig(error_estimate="yes")


def test_the_copy_share_is_gus_pixel_rule_in_every_space():
    """Gu et al.'s rule on 8-bit pixels, kept apart from the descriptor space: a space that maps
    every image to one point gives the same copy share as pixels."""
    from pfdist.descriptors import identity
    from pfdist.protocol.evaluate import space_errors

    g = torch.Generator().manual_seed(0)
    train = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1
    student = torch.cat([train + 0.001, torch.rand(8, 1, 4, 4, generator=g) * 2 - 1])  # 8 copies of 16
    collapse = lambda x: torch.zeros(x.shape[0], 2)  # noqa: E731
    shares = [space_errors(student, student, student, train, psi, seed=0)["mem_ratio"] for psi in (identity, collapse)]
    assert shares[0] == shares[1] and shares[0]["value"] == 0.5
