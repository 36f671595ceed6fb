"""PFD: axioms, invariance to batching and seed order, reuse, caching, and bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pfdist

M = 24


def _mixture(seed, shape=(5,)):
    return pfdist.random_low_rank_mixture(shape, 3, 2, scale=1.5, mean_scale=1.5, noise_std=0.1, seed=seed)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
def test_metric_axioms_on_random_mixtures(s1, s2, s3):
    a, b, c = _mixture(s1), _mixture(s2), _mixture(s3)
    ab, ba = pfdist.pfd(a, b, num_samples=M), pfdist.pfd(b, a, num_samples=M)
    assert torch.equal(ab.per_sample, ba.per_sample)  # symmetry, seed by seed
    assert pfdist.pfd(a, a, num_samples=M).value == 0.0  # identity
    ac, bc = pfdist.pfd(a, c, num_samples=M), pfdist.pfd(b, c, num_samples=M)
    assert ac.value <= ab.value + bc.value + 1e-9  # triangle inequality (Minkowski on shared seeds)
    assert ab.value >= 0


def test_same_numbers_whatever_the_batch_size(mixture):
    emp = pfdist.EmpiricalDenoiser(mixture.sample(30, generator=torch.Generator().manual_seed(0)))
    r1 = pfdist.pfd(mixture, emp, num_samples=40, batch_size=40)
    r2 = pfdist.pfd(mixture, emp, num_samples=40, batch_size=7)
    torch.testing.assert_close(r1.per_sample, r2.per_sample, rtol=1e-5, atol=1e-6)


def test_seed_ranges_combine_exactly(mixture):
    other = _mixture(11, (6,))
    whole = pfdist.pfd(mixture, other, num_samples=30, seed=500)
    parts = [pfdist.pfd(mixture, other, num_samples=n, seed=s) for s, n in ((520, 10), (500, 12), (512, 8))]
    joined = pfdist.PFDResult.combine(parts)
    torch.testing.assert_close(joined.per_sample, whole.per_sample, rtol=1e-6, atol=0)
    assert joined.value == pytest.approx(whole.value, rel=1e-6)
    with pytest.raises(pfdist.PFDistError, match="contiguous"):
        pfdist.PFDResult.combine(parts[:2])  # 500..511 then 520..: a gap


def test_noise_is_addressed_by_seed():
    a = pfdist.noise([3, 1, 2], (2, 3))
    b = pfdist.noise([1, 2, 3], (2, 3))
    assert torch.equal(a[0], b[2]) and torch.equal(a[1], b[0])
    assert torch.equal(pfdist.noise([7], (2, 3))[0], b[0] * 0 + pfdist.noise([7, 8], (2, 3))[0])
    assert pfdist.noise(range(2000), (10,)).std().item() == pytest.approx(80.0, rel=0.02)


def test_precomputed_outputs_give_the_same_result(mixture, tmp_path):
    other = _mixture(4, (6,))
    direct = pfdist.pfd(mixture, other, num_samples=20, seed=100)
    teacher = pfdist.flow_outputs(other, shape=(6,), num_samples=30, seed=95)
    reused = pfdist.pfd(mixture, teacher, num_samples=20, seed=100)
    assert torch.equal(direct.per_sample, reused.per_sample)
    with pytest.raises(pfdist.PFDistError, match="seeds"):
        pfdist.pfd(mixture, teacher, num_samples=20, seed=120)


def test_flow_outputs_are_cached_by_content(mixture, tmp_path):
    calls = []

    class Counting:
        shape = mixture.shape

        def __call__(self, x, sigma):
            calls.append(1)
            return mixture(x, sigma)

        def fingerprint(self):
            return "counting-" + mixture.fingerprint()

    first = pfdist.flow_outputs(Counting(), shape=(6,), num_samples=8, cache_dir=tmp_path)
    n = len(calls)
    second = pfdist.flow_outputs(Counting(), shape=(6,), num_samples=8, cache_dir=tmp_path)
    assert len(calls) == n and torch.equal(first.values, second.values)
    pfdist.flow_outputs(Counting(), shape=(6,), num_samples=8, seed=1, cache_dir=tmp_path)
    assert len(calls) > n  # other seeds, other key
    assert len(list(tmp_path.glob("flow-*.safetensors"))) == 2


def test_torchscript_descriptor(tmp_path, mixture):
    lin = torch.nn.Linear(6, 3).double()
    path = tmp_path / "desc.pt"
    torch.jit.script(lin).save(str(path))
    other = _mixture(8, (6,))
    by_path = pfdist.pfd(mixture, other, num_samples=10, descriptor=pfdist.descriptors.resolve(str(path)),
                         dtype=torch.float64)
    by_callable = pfdist.pfd(mixture, other, num_samples=10, descriptor=lin, dtype=torch.float64)
    torch.testing.assert_close(by_path.per_sample, by_callable.per_sample)


def test_normalized_descriptor_pfd_is_at_most_two(tmp_path, mixture):
    path = tmp_path / "desc.pt"
    torch.jit.script(torch.nn.Linear(6, 4)).save(str(path))
    d = pfdist.TorchScriptDescriptor(path, normalize=True)
    assert pfdist.pfd(mixture, _mixture(9, (6,)), num_samples=10, descriptor=d).value <= 2.0


# Bad input: one clear error each.

def test_different_shapes(mixture):
    with pytest.raises(pfdist.PFDistError, match="different data shapes"):
        pfdist.pfd(mixture, _mixture(1, (5,)), num_samples=4)


def test_nan_model_names_the_seed_range(mixture):
    def broken(x, sigma):  # NaN for the second batch only
        out = mixture(x, sigma)
        return out * float("nan") if x[0, 0] == pfdist.noise([100_008], (6,))[0, 0] else out

    with pytest.raises(pfdist.NonFiniteError, match=r"seeds 100008\.\.100015"):
        pfdist.pfd(mixture, broken, num_samples=16, batch_size=8, seed=100_000)


def test_inf_model(mixture):
    with pytest.raises(pfdist.NonFiniteError, match="NaN or Inf"):
        pfdist.pfd(mixture, lambda x, s: x * float("inf"), num_samples=4)


def test_wrong_dtype_output(mixture):
    with pytest.raises(pfdist.PFDistError, match="float64"):
        pfdist.pfd(mixture, lambda x, s: mixture(x, s).double(), num_samples=4)


def test_module_on_another_device(mixture):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1, device="meta"))

        def forward(self, x, sigma):
            return x

    with pytest.raises(pfdist.PFDistError, match="device"):
        pfdist.pfd(mixture, Net(), num_samples=4, device="cpu")


def test_absent_device(mixture):
    absent = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or any GPU where there is none
    with pytest.raises(pfdist.PFDistError, match="CUDA is not available|does not exist"):
        pfdist.pfd(mixture, mixture, num_samples=4, device=absent)
    with pytest.raises(pfdist.PFDistError, match="not a torch device"):
        pfdist.pfd(mixture, mixture, num_samples=4, device="gpu0")


def test_num_samples_below_two(mixture):
    with pytest.raises(pfdist.PFDistError, match="num_samples"):
        pfdist.pfd(mixture, mixture, num_samples=1)


@pytest.mark.parametrize("content", [b"not a model", None])
def test_descriptor_not_torchscript(tmp_path, mixture, content):
    path = tmp_path / "desc.pt"
    if content is None:
        torch.save({"weights": torch.ones(2)}, path)  # a pickle, not TorchScript
    else:
        path.write_bytes(content)
    with pytest.raises(pfdist.PFDistError, match="not a TorchScript"):
        pfdist.pfd(mixture, mixture, num_samples=4, descriptor=pfdist.descriptors.resolve(str(path)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 60), unique=True, min_size=1), st.randoms())
def test_seed_syntax_reads_back_any_set_of_seeds(seeds, rnd):
    """Seeds written in EDM's syntax (runs as a-b, in the given order) read back as those seeds."""
    from pfdist.checks import seed_ranges

    rnd.shuffle(seeds)
    items, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1 and rnd.random() < 0.8:
            j += 1
        items.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    assert [s for run in seed_ranges("seeds", ",".join(items)) for s in run] == seeds


def test_pfd_on_seed_lists(mixture):
    other = _mixture(4, (6,))
    whole = pfdist.pfd(mixture, other, seed=0, num_samples=12)
    listed = pfdist.pfd(mixture, other, seeds="8-11,0-2,5")
    assert torch.equal(listed.per_sample, whole.per_sample[[8, 9, 10, 11, 0, 1, 2, 5]]) and listed.seed is None
    assert pfdist.pfd(mixture, other, seeds=range(0, 12)).seed == 0
    with pytest.raises(pfdist.PFDistError, match="not both"):
        pfdist.pfd(mixture, other, seeds="0-9", num_samples=10)
    with pytest.raises(pfdist.PFDistError, match="at least 2 seeds"):
        pfdist.pfd(mixture, other, seeds="7")


def test_precomputed_outputs_bring_their_seeds(mixture):
    other = _mixture(4, (6,))
    cached = pfdist.flow_outputs(other, num_samples=9, seed=30)
    r = pfdist.pfd(mixture, cached)  # no seeds given: those of the cached outputs
    assert r.seed == 30 and torch.equal(r.per_sample, pfdist.pfd(mixture, other, seed=30, num_samples=9).per_sample)
    assert pfdist.pfd(mixture, cached, seed=32, num_samples=4).seed == 32  # any sub-range, when asked
