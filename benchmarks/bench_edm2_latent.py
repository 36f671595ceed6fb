"""EDM2 latent model on the shared fixtures: one decoded PFD (M = 64) and what bfloat16 costs.

Teacher: the class-conditional latent EDM2 fixture with classifier-free guidance (w = 1.4, the
unconditional fixture as guide), Heun 32 steps, decoded by the tiny SD VAE; student: the same
with 4 steps. Prints the time of one decoded PFD(teacher, student) at M = 64, and the PFD between
the teacher evaluated in float32 and in bfloat16 (weights cast at forward time,
``load_edm(dtype=...)``, and ``pfd(..., autocast=...)``), each against PFD(teacher, student).
Set PFDIST_EDM2_FIXTURES to the fixture directory (default ../shared/fixtures/edm2).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

import pfdist

FIXTURES = Path(os.environ.get("PFDIST_EDM2_FIXTURES", Path(__file__).resolve().parents[2] / "shared/fixtures/edm2"))
M = 64


def teacher_map(steps: int, dtype: torch.dtype = torch.float32) -> pfdist.ODEMap:
    net = pfdist.load_edm(FIXTURES / "edm2-latent-cond.pkl", dtype=dtype)
    guide = pfdist.load_edm(FIXTURES / "edm2-latent-uncond.pkl", dtype=dtype)
    decoder = pfdist.load_edm_decoder(FIXTURES / "edm2-latent-cond.pkl", vae=FIXTURES / "tiny-sd-vae")
    return pfdist.ode_map(pfdist.guided(net, guide, 1.4), pfdist.FlowSettings(steps=steps), decoder=decoder)


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    teacher, student = teacher_map(32), teacher_map(4)
    pfdist.pfd(teacher, student, num_samples=2)  # warm-up (imports, first-call allocations)
    start = time.perf_counter()
    r = pfdist.pfd(teacher, student, num_samples=M)
    seconds = time.perf_counter() - start
    print(f"decoded PFD(teacher 32 steps, student 4 steps), M={M}: {r.value:.4f} "
          f"[{r.ci[0]:.4f}, {r.ci[1]:.4f}] in {seconds:.2f} s on {torch.get_num_threads()} thread(s)")
    for label, kwargs, other in (("load_edm(dtype=bfloat16)", {}, teacher_map(32, torch.bfloat16)),
                                 ("pfd(autocast=bfloat16)", {"autocast": torch.bfloat16}, None)):
        if other is None:
            outs = pfdist.flow_outputs(teacher, num_samples=M, autocast=torch.bfloat16)
            fp32 = pfdist.flow_outputs(teacher, num_samples=M)
            d = pfdist.squared_distances(fp32.values, outs.values)
            value = float(d.mean().sqrt())
        else:
            value = pfdist.pfd(teacher, other, num_samples=M, **kwargs).value
        print(f"  PFD(float32, {label}) = {value:.5f} = {value / r.value:.4f} x PFD(teacher, student)")


if __name__ == "__main__":
    main()
