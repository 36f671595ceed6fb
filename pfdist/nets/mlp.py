"""A residual MLP backbone for vector data."""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pfdist.nets.layers import PositionalEmbedding


class ResidualBlock(nn.Module):
    """h + W2 silu(W1 silu(h) + A emb): pre-activation residual block with noise conditioning."""

    def __init__(self, width: int, emb_channels: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.affine = nn.Linear(emb_channels, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(F.silu(h)) + self.affine(emb)))


class MLP(nn.Module):
    """Residual MLP backbone F(x, c_noise) for data of any ``shape`` (flattened inside).

    x: (batch, *shape), c_noise: (batch,) -> (batch, *shape). ``depth`` residual blocks of
    ``width`` units; the output layer starts at zero, so the initial denoiser is c_skip x.
    """

    def __init__(self, shape: Sequence[int], width: int = 256, depth: int = 3):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        dim = math.prod(self.shape)
        self.map_noise = PositionalEmbedding(width, endpoint=True)
        self.map_layer0 = nn.Linear(width, width)
        self.map_layer1 = nn.Linear(width, width)
        self.fc_in = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, width) for _ in range(depth))
        self.fc_out = nn.Linear(width, dim)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(self.map_noise(c_noise)))))
        h = self.fc_in(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.fc_out(F.silu(h)).reshape(x.shape)
