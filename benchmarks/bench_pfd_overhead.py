"""PFD wall time / the bare denoiser forwards it needs (2 maps x NFE), same nets and batch.

Goal: <= 1.10. The overhead is noise generation (one generator per seed), the solver's
arithmetic, the output checks and the distance.
"""

from __future__ import annotations

import torch

import pfdist
from _timing import interleaved_medians

SHAPE, WIDTH, BATCH, M = (3, 8, 8), 512, 256, 512


class MLPDenoiser(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        d = 192
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d + 1, WIDTH), torch.nn.SiLU(), torch.nn.Linear(WIDTH, WIDTH), torch.nn.SiLU(),
            torch.nn.Linear(WIDTH, WIDTH), torch.nn.SiLU(), torch.nn.Linear(WIDTH, d),
        )

    def forward(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
        h = torch.cat([x.flatten(1) / (1 + s[:, None] ** 2).sqrt(), s.log()[:, None] / 4], 1)
        return self.net(h).reshape(x.shape)


def main() -> None:
    a, b = MLPDenoiser(0).eval(), MLPDenoiser(1).eval()
    nfe = pfdist.FlowSettings().nfe
    x = torch.randn(BATCH, *SHAPE)
    sig = torch.full((BATCH,), 1.0)

    def bare():
        with torch.no_grad():
            for _ in range(M // BATCH):
                for net in (a, b):
                    for _ in range(nfe):
                        net(x, sig)

    def metric():
        pfdist.pfd(a, b, shape=SHAPE, num_samples=M, batch_size=BATCH)

    t = interleaved_medians({"bare": bare, "pfd": metric}, repeats=5)
    print(f"PFD overhead: {M} samples, batch {BATCH}, MLP width {WIDTH}, 2 maps x {nfe} NFE")
    print(f"  bare forwards {t['bare']:.3f} s, pfd {t['pfd']:.3f} s, ratio {t['pfd'] / t['bare']:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
