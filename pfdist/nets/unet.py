"""A small DDPM++ U-Net backbone in the style of EDM's ``SongUNet`` (Song et al. 2021).

Kept from EDM's DDPM++ configuration: positional noise embedding mapped to 4x channels,
residual blocks GroupNorm -> SiLU -> 3x3 conv with an additive noise bias, skip scale
sqrt(1/2), 1x1 skip convolutions, average-pool down / nearest up sampling (resample filter
[1, 1]), encoder-decoder skips, xavier-uniform init with near-zero last convolutions.
Changed: bottleneck attention is optional (``attn_bottleneck=True`` restores EDM, whose
``base_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,)`` network
then has EDM's 55.7 M parameters), attention uses 64 channels per head, GroupNorm groups
adapt to small widths, dropout defaults to 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfdist.errors import PFDistError
from pfdist.nets.mlp import PositionalEmbedding


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Largest group count <= min(32, channels // 4) that divides ``channels`` (EDM rule + divisor)."""
    g = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % g:
        g -= 1
    return g


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


def _init(layer: nn.Conv2d | nn.Linear, scale: float = 1.0):
    nn.init.xavier_uniform_(layer.weight)
    with torch.no_grad():
        layer.weight.mul_(scale)
    nn.init.zeros_(layer.bias)
    return layer


def _conv(cin: int, cout: int, kernel: int, scale: float = 1.0) -> nn.Conv2d:
    return _init(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), scale)


def _resample(x: Tensor, up: bool, down: bool) -> Tensor:
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    if down:
        return F.avg_pool2d(x, 2)
    return x


class UNetBlock(nn.Module):
    """EDM ``UNetBlock`` (DDPM++): x: (batch, cin, H, W), emb: (batch, emb_ch) -> (batch, cout, H', W')."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        *,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
        takes_skip: bool = False,
    ):
        super().__init__()
        self.up, self.down, self.dropout, self.takes_skip = up, down, dropout, takes_skip
        self.skip_scale = math.sqrt(0.5)
        self.norm0 = _norm(in_channels)
        self.conv0 = _conv(in_channels, out_channels, 3)
        self.affine = _init(nn.Linear(emb_channels, out_channels))
        self.norm1 = _norm(out_channels)
        self.conv1 = _conv(out_channels, out_channels, 3, scale=1e-5)
        self.skip = None
        if in_channels != out_channels or up or down:
            self.skip = _conv(in_channels, out_channels, 1)
        self.num_heads = max(1, out_channels // 64) if attention else 0
        if attention:
            self.norm2 = _norm(out_channels)
            self.qkv = _conv(out_channels, out_channels * 3, 1)
            self.proj = _conv(out_channels, out_channels, 1, scale=1e-5)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        orig = x
        x = self.conv0(_resample(F.silu(self.norm0(x)), self.up, self.down))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None]))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        skip = _resample(orig, self.up, self.down)
        if self.skip is not None:
            skip = self.skip(skip)
        x = (x + skip) * self.skip_scale
        if self.num_heads:
            b, c, h, w = x.shape
            qkv = self.qkv(self.norm2(x)).reshape(b, self.num_heads, 3, c // self.num_heads, h * w)
            q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(2))  # (b, heads, h*w, c/heads)
            a = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
            x = (self.proj(a) + x) * self.skip_scale
        return x


class UNet(nn.Module):
    """DDPM++-style U-Net backbone F(x, c_noise): x: (batch, C, H, W), c_noise: (batch,).

    Level ``l`` works at resolution H / 2^l with ``base_channels * channel_mult[l]`` channels
    and ``num_blocks`` residual blocks (``num_blocks + 1`` on the way up). Self-attention is
    added at the resolutions (heights) listed in ``attn_resolutions``, and in the first
    bottleneck block when ``attn_bottleneck``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_blocks: int = 2,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        channel_mult_emb: int = 4,
        attn_bottleneck: bool = False,
    ):
        super().__init__()
        if len(shape) != 3:
            raise PFDistError(f"UNet needs shape (C, H, W); got {list(shape)}.")
        channels, height, width = (int(s) for s in shape)
        factor = 2 ** (len(channel_mult) - 1)
        if height % factor or width % factor:
            raise PFDistError(
                f"UNet with {len(channel_mult)} levels needs H and W divisible by {factor}; "
                f"got {height}x{width}. Use fewer channel_mult entries."
            )
        self.shape = (channels, height, width)
        emb_ch = base_channels * channel_mult_emb
        self.map_noise = PositionalEmbedding(base_channels)
        self.map_layer0 = _init(nn.Linear(base_channels, emb_ch))
        self.map_layer1 = _init(nn.Linear(emb_ch, emb_ch))
        block = dict(emb_channels=emb_ch, dropout=dropout)
        attn = {int(r) for r in attn_resolutions}

        # Encoder.
        self.conv_in = _conv(channels, base_channels, 3)
        self.enc = nn.ModuleList()
        skips, cout = [base_channels], base_channels
        for level, mult in enumerate(channel_mult):
            res = height >> level
            if level > 0:
                self.enc.append(UNetBlock(cout, cout, down=True, **block))
                skips.append(cout)
            for _ in range(num_blocks):
                cin, cout = cout, base_channels * mult
                self.enc.append(UNetBlock(cin, cout, attention=res in attn, **block))
                skips.append(cout)

        # Decoder.
        self.dec = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = height >> level
            if level == len(channel_mult) - 1:
                attention = attn_bottleneck or res in attn
                self.dec.append(UNetBlock(cout, cout, attention=attention, **block))
                self.dec.append(UNetBlock(cout, cout, **block))
            else:
                self.dec.append(UNetBlock(cout, cout, up=True, **block))
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), base_channels * mult
                attention = idx == num_blocks and res in attn
                self.dec.append(UNetBlock(cin, cout, attention=attention, takes_skip=True, **block))
        assert not skips
        self.norm_out = _norm(cout)
        self.conv_out = _conv(cout, channels, 3, scale=0.2)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        # Mapping (EDM swaps the cos/sin halves of the positional embedding).
        emb = self.map_noise(c_noise)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        # Encoder.
        x = self.conv_in(x)
        skips = [x]
        for block in self.enc:
            x = block(x, emb)
            skips.append(x)

        # Decoder.
        for block in self.dec:
            if block.takes_skip:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.conv_out(F.silu(self.norm_out(x)))
