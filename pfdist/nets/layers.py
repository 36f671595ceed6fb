"""Layers of EDM's U-Nets (Karras et al. 2022, Appendix B / F): the parameter names and shapes
are EDM's, so the weights of an EDM snapshot load into them directly.

``Conv2d`` may resample by 2 with a separable FIR filter (``[1, 1]`` is box filtering, DDPM++;
``[1, 3, 3, 1]`` is NCSN++), either before the convolution or fused with it. ``UNetBlock`` is the
union of the DDPM++, NCSN++ and ADM residual blocks: GroupNorm -> SiLU -> conv (resampling),
noise embedding added (or as scale and shift), GroupNorm -> SiLU -> dropout -> conv, skip path,
optional multi-head self-attention.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def weight_init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int) -> Tensor:
    """EDM's initialisers: xavier/kaiming, uniform/normal, on a fresh tensor of ``shape``."""
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}")


def _param(shape, mode, fan_in, fan_out, gain) -> nn.Parameter:
    return nn.Parameter(weight_init(shape, mode, max(fan_in, 1), max(fan_out, 1)) * gain)


class Linear(nn.Module):
    """y = x W^T + b; x: (batch, in_features) -> (batch, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 init_mode: str = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param([out_features, in_features], init_mode, in_features, out_features, init_weight)
        self.bias = _param([out_features], init_mode, in_features, out_features, init_bias) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """Square convolution (``kernel = 0``: resampling only) with optional 2x up- or downsampling.

    The resampling filter is the outer product of ``resample_filter`` with itself, normalised to
    sum 1 (times 4 when upsampling, a transposed convolution with stride 2); it is a buffer, as in
    EDM. ``fused_resample`` convolves first and then downsamples (or upsamples first, then
    convolves with padding reduced by the filter's), as NCSN++'s residual encoder does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, *,
                 up: bool = False, down: bool = False, resample_filter: Sequence[int] = (1, 1),
                 fused_resample: bool = False, init_mode: str = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        if up and down:
            raise ValueError("a convolution resamples up or down, not both")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fan_in, fan_out = in_channels * kernel * kernel, out_channels * kernel * kernel
        self.weight = (_param([out_channels, in_channels, kernel, kernel], init_mode, fan_in, fan_out, init_weight)
                       if kernel else None)
        self.bias = _param([out_channels], init_mode, fan_in, fan_out, init_bias) if kernel and bias else None
        if up or down:
            f = torch.as_tensor(list(resample_filter), dtype=torch.float32)
            self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum().square())[None, None])
        else:
            self.resample_filter = None

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2

        def up(x, padding):
            taps = (f * 4).expand(x.shape[1], 1, *f.shape[2:])
            return F.conv_transpose2d(x, taps, groups=x.shape[1], stride=2, padding=padding)

        def down(x, padding):
            taps = f.expand(x.shape[1], 1, *f.shape[2:])
            return F.conv2d(x, taps, groups=x.shape[1], stride=2, padding=padding)

        if self.fused_resample and w is not None and self.up:
            x = F.conv2d(up(x, max(f_pad - w_pad, 0)), w, padding=max(w_pad - f_pad, 0))
        elif self.fused_resample and w is not None and self.down:
            x = down(F.conv2d(x, w, padding=w_pad + f_pad), 0)
        else:
            if self.up:
                x = up(x, f_pad)
            if self.down:
                x = down(x, f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


def num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """EDM's group count min(32, C // 4), lowered to the nearest divisor of C (>= 1).

    Equal to EDM's wherever EDM's divides C; also valid for widths EDM cannot normalise
    (C < 4, or C = 144 where 32 groups do not divide).
    """
    g = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % g:
        g -= 1
    return g


class GroupNorm(nn.Module):
    """Group normalisation with a learned per-channel affine map; x: (batch, C, H, W)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups, self.eps = num_groups(num_channels), eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """Residual block; x: (batch, in_channels, H, W), emb: (batch, emb_channels) -> (batch, out_channels, H', W').

    ``adaptive_scale``: the embedding gives a scale and a shift after the second GroupNorm (ADM);
    otherwise it is added before it (DDPM++, NCSN++). Attention has ``num_heads`` heads, or
    ``out_channels // channels_per_head`` when ``num_heads`` is None (none at all below 64
    channels in ADM, as in EDM).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, *, up: bool = False,
                 down: bool = False, attention: bool = False, num_heads: int | None = None,
                 channels_per_head: int = 64, dropout: float = 0.0, skip_scale: float = 1.0,
                 eps: float = 1e-5, resample_filter: Sequence[int] = (1, 1), resample_proj: bool = False,
                 adaptive_scale: bool = True, init: dict | None = None, init_zero: dict | None = None,
                 init_attn: dict | None = None):
        super().__init__()
        init = init or {}
        init_zero = {"init_weight": 0.0} if init_zero is None else init_zero
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        resample = dict(up=up, down=down, resample_filter=resample_filter)

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, **resample, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = None
        if in_channels != out_channels or up or down:
            kernel = 1 if resample_proj or in_channels != out_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, **resample, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **(init if init_attn is None else init_attn))
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(shift + self.norm1(x) * (scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (orig if self.skip is None else self.skip(orig))) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self._attention(self.norm2(x))) + x) * self.skip_scale
        return x

    def _attention(self, h: Tensor) -> Tensor:
        """softmax(q^T k / sqrt(d)) per head; the 3C qkv channels are laid out (head, d, q|k|v)."""
        b, c, height, width = h.shape
        heads = self.num_heads
        qkv = self.qkv(h).reshape(b * heads, c // heads, 3, height * width)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (b * heads, H * W, d)
        a = F.scaled_dot_product_attention(q, k, v)  # (b * heads, H * W, d)
        return a.transpose(1, 2).reshape(b, c, height, width)


class PositionalEmbedding(nn.Module):
    """Sinusoidal features of the noise label: (batch,) -> (batch, num_channels), cos then sin.

    Frequencies (1 / max_positions)^(i / (num_channels/2 - endpoint)); DDPM++ uses
    ``endpoint=True``, ADM ``endpoint=False``.
    """

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        if num_channels < 2 or num_channels % 2 or (endpoint and num_channels < 4):
            raise ValueError(f"num_channels must be even and >= {4 if endpoint else 2}, got {num_channels}")
        half = num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32) / (half - (1 if endpoint else 0))
        self.register_buffer("freqs", (1 / max_positions) ** freqs, persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        x = torch.outer(c_noise.reshape(-1), self.freqs.to(c_noise.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise label (NCSN++): (batch,) -> (batch, num_channels).

    The frequencies are a buffer drawn N(0, scale^2) at construction and saved with the weights.
    """

    def __init__(self, num_channels: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, c_noise: Tensor) -> Tensor:
        x = torch.outer(c_noise.reshape(-1), (2 * math.pi * self.freqs).to(c_noise.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)
