"""The prepared GPU check runs end to end in its CPU --tiny mode (seconds)."""

import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.fast
def test_gpu_check_tiny_runs_on_cpu(tmp_path, one_thread, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCHMARKS))
    out = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text()) == json.loads(json.dumps(out))
    assert [row["fp32"]["width"] for row in out["train"]] == list(gpu_check.TINY.widths)
    rates = [r["images_per_s"] for row in out["train"] for r in row.values()]
    rates += [r["seeds_per_s"] for r in out["pfd"].values()]
    assert all(math.isfinite(r) and r > 0 for r in rates)
    assert out["pfd"]["fp32"]["nfe"] == 2 * gpu_check.TINY.steps - 1  # Heun: 2 steps - 1 calls per map
    e = out["bf16_error"]
    assert 0 < e["map_rel_rms_diff"] < 1e-2  # bfloat16 rounding (2^-8 relative) in the network only
    assert e["pfd_rel_diff"] < 1e-2
    assert "bf16 vs fp32" in capsys.readouterr().out
