"""PFDMetric: batches accumulated, then reduced, give the PFD of one pfd call over the same seeds,
in one process or split over a torch.distributed group."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import pfdist
from pfdist import distributed
from pfdist.streaming import PlainPFDMetric

M, SEED = 37, 100_000
KINDS = [PlainPFDMetric] + ([pfdist.PFDMetric] if pfdist.PFDMetric is not PlainPFDMetric else [])


def _outputs():
    """Two maps' outputs on seeds SEED..SEED+M-1."""
    teacher = pfdist.random_low_rank_mixture(6, 3, 2, scale=1.5, mean_scale=1.5, noise_std=0.1, seed=0)
    student = pfdist.EmpiricalDenoiser(teacher.sample(20, generator=torch.Generator().manual_seed(1)))
    flow = pfdist.FlowSettings(steps=6)
    return (pfdist.flow_outputs(student, num_samples=M, seed=SEED, flow=flow),
            pfdist.flow_outputs(teacher, num_samples=M, seed=SEED, flow=flow))


def _feed(metric, a, b, start, stop, sizes=(5, 1, 9)):
    """Update with uneven batches of seeds start..stop-1 (row indices into a and b)."""
    i, k = start, 0
    while i < stop:
        j = min(i + sizes[k % len(sizes)], stop)
        metric.update(a.values[i:j], b.values[i:j])
        i, k = j, k + 1
    return metric


def _same(r, whole):
    assert r.num_samples == whole.num_samples
    assert r.value == pytest.approx(whole.value, rel=1e-12)
    assert r.stderr == pytest.approx(whole.stderr, rel=1e-9)
    assert r.ci == pytest.approx(whole.ci, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_batches_give_the_pfd_of_one_call(kind, one_thread):
    a, b = _outputs()
    whole = pfdist.pfd(a, b, num_samples=M, seed=SEED)
    kept = _feed(kind(per_sample=True), a, b, 0, M).compute()
    _same(kept, whole)
    assert torch.equal(kept.per_sample, whole.per_sample)  # the same d, in seed order
    sums = _feed(kind(), a, b, 0, M, sizes=(M,)).compute()
    _same(sums, whole)
    assert sums.per_sample is None and sums.seed is None
    with pytest.raises(pfdist.PFDistError, match="per-sample"):
        sums.to_dict(per_sample=True)
    with pytest.raises(pfdist.PFDistError, match="combine needs the per-seed values"):
        pfdist.PFDResult.combine([sums])


@pytest.mark.parametrize("kind", KINDS)
def test_reset_forgets_and_flow_outputs_are_aligned_by_seed(kind, one_thread):
    a, b = _outputs()
    metric = _feed(kind(), b, b, 0, M)  # PFD 0 so far
    metric.reset()
    part = pfdist.FlowOutputs(a.values[10:30], seed=SEED + 10, shape=a.shape, nfe=a.nfe, flow=a.flow,
                              map_fingerprint=a.map_fingerprint)
    metric.update(part, b)  # b, covering SEED..SEED+M-1, is sliced to part's seeds
    _same(metric.compute(), pfdist.pfd(a, b, num_samples=20, seed=SEED + 10))


def test_bad_updates_get_one_clear_error(one_thread):
    a, b = _outputs()
    metric = pfdist.PFDMetric()
    with pytest.raises(pfdist.PFDistError, match="both as FlowOutputs"):
        metric.update(a, b.values)
    later = torch.cat([b.values[30:], b.values[:13]])  # seeds SEED+30..SEED+49: not inside a's
    with pytest.raises(pfdist.PFDistError, match=r"cover seeds 100000\.\.100036"):
        metric.update(a, pfdist.FlowOutputs(later[:20], seed=SEED + 30, shape=b.shape, nfe=b.nfe, flow=b.flow))
    with pytest.raises(pfdist.PFDistError, match="differ in sigma_max"):
        metric.update(a, pfdist.FlowOutputs(b.values, seed=SEED, shape=b.shape, nfe=1, flow=None, sigma_max=3.0))
    with pytest.raises(pfdist.PFDistError, match="differ in shape"):
        metric.update(a.values[:4], b.values[:5])
    with pytest.raises(pfdist.NonFiniteError, match="NaN or Inf at 1 rows"):
        metric.update(a.values[:4], b.values[:4] * torch.tensor([1, float("nan"), 1, 1]).reshape(-1, 1))
    metric.update(a.values[:1], b.values[:1])
    with pytest.raises(pfdist.PFDistError, match="at least 2"):
        metric.compute()


def _rank_main(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    try:
        a, b = _outputs()
        offset, count = distributed.block(M, rank, world)  # this rank's seeds, in its own batches
        record = {}
        for kind in KINDS:
            r = _feed(kind(per_sample=True), a, b, offset, offset + count, sizes=(4, 7)).compute()
            record[kind.__name__] = {**r.to_dict(per_sample=True), "seed": None}
        Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no torch.distributed with gloo")
def test_two_gloo_ranks_match_one_process(tmp_path, one_thread):
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    a, b = _outputs()
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(record) == {kind.__name__ for kind in KINDS}
        for kind in KINDS:
            alone = _feed(kind(per_sample=True), a, b, 0, M).compute()
            got = record[kind.__name__]
            assert got["per_sample"] == alone.per_sample.tolist()  # both ranks' d, in seed order
            assert got["num_samples"] == M
            assert got["pfd"] == pytest.approx(alone.value, rel=1e-12)
            assert got["stderr"] == pytest.approx(alone.stderr, rel=1e-9)
            assert got["ci95"] == pytest.approx(list(alone.ci), rel=1e-12)
