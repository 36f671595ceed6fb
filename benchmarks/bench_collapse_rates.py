"""How often collapse_report's verdict is right, on synthetic MtoG curves with a known answer.

Curves as in tests/test_collapse_report.py: E_gen = low_s + (1.2 − low_s) sigmoid(−(log2 N − m_s)),
four sizes |θ| = 2^10 … 2^16, log2 N = 4 … 15, Gaussian noise of sd SD. Cases: a collapse at
α = 0.5 (m_s = 3 + log2|θ| / 2), no size dependence (α = 0), and midpoints whose exponent between
neighbouring sizes falls 0.77 → 0.38 → 0.13. Prints per case the share of seeds called each
verdict, how often the α interval held 0.5, and how often the collapse test rejected one α.

    python benchmarks/bench_collapse_rates.py [SEEDS] [SD]     # defaults 200, 0.02 (~1 min)
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

from pfdist.analysis import collapse_report

LOG_P = np.array([10.0, 12.0, 14.0, 16.0])
LOG_N = np.arange(4.0, 16.0)
CASES = {"alpha = 0.5": 3.0 + 0.5 * LOG_P, "alpha = 0": np.full(4, 9.5),
         "drift 0.77/0.38/0.13": np.cumsum([8.0, 2 * 0.77, 2 * 0.38, 2 * 0.13])}


def curves(seed: int, midpoints: np.ndarray, sd: float):
    rng = np.random.default_rng(seed)
    log_n, lp = (a.ravel() for a in np.meshgrid(LOG_N, LOG_P))
    idx = np.searchsorted(LOG_P, lp)
    low = np.array([0.5, 0.45, 0.42, 0.4])[idx]
    y = low + (1.2 - low) / (1.0 + np.exp(log_n - midpoints[idx])) + rng.normal(0.0, sd, log_n.size)
    return 2.0 ** log_n, 2.0 ** lp, y


def main(seeds: int = 200, sd: float = 0.02) -> None:
    print(f"{seeds} seeds, noise sd {sd}")
    for name, midpoints in CASES.items():
        start = time.perf_counter()
        rs = [collapse_report(*curves(s, midpoints, sd), subsets=False) for s in range(seeds)]
        verdicts = Counter(r.verdict for r in rs)
        holds = np.mean([r.alpha_ci[0] <= 0.5 <= r.alpha_ci[1] for r in rs])
        rejects = np.mean([r.collapse_p < 0.05 for r in rs])
        shares = ", ".join(f"{v} {c / seeds:.3f}" for v, c in verdicts.most_common())
        print(f"{name:22s} {shares}; interval holds 0.5 {holds:.3f}; test rejects {rejects:.3f} "
              f"({(time.perf_counter() - start) / seeds:.3f} s a seed)")


if __name__ == "__main__":
    main(*(int(sys.argv[1]),) if len(sys.argv) > 1 else (), *(float(sys.argv[2]),) if len(sys.argv) > 2 else ())
