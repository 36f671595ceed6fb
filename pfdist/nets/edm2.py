"""EDM2's magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", Figure 21 and Appendix B), written from the paper.

Every layer keeps activations at unit magnitude: weights are normalised at forward time (eq. 66)
and scaled by 1/sqrt(fan_in) (eq. 47); SiLU is divided by 0.596 (eq. 81); sums and
concatenations are weighted so that unit inputs give unit outputs (eqs. 88, 103); the noise
level enters through cosine Fourier features (eq. 75). Parameters and buffers carry EDM2's names,
so a snapshot's state dict loads by key. Weights stay in the dtype they were given (EDM2's
snapshots store float16); each layer normalises in float32 and computes in ``compute_dtype``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfdist.errors import PFDistError
from pfdist.ode import expand_sigma


def normalize(x: Tensor, dim: list[int] | int | None = None, eps: float = 1e-4) -> Tensor:
    """x divided by its RMS over ``dim`` (all but the first by default), eps added to the norm."""
    dim = list(range(1, x.ndim)) if dim is None else dim
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    norm = eps + norm * math.sqrt(norm.numel() / x.numel())
    return x / norm.to(x.dtype)


def mp_silu(x: Tensor) -> Tensor:
    """SiLU scaled to unit output magnitude for unit Gaussian input (eq. 81)."""
    return F.silu(x) / 0.596


def mp_sum(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """(1 - t) a + t b, rescaled to unit magnitude (eq. 88)."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: Tensor, b: Tensor, t: float = 0.5) -> Tensor:
    """Channel concatenation with a balance t between a (0) and b (1), unit magnitude (eq. 103)."""
    n_a, n_b = a.shape[1], b.shape[1]
    scale = math.sqrt((n_a + n_b) / ((1 - t) ** 2 + t**2))
    return torch.cat([a * (scale * (1 - t) / math.sqrt(n_a)), b * (scale * t / math.sqrt(n_b))], dim=1)


def resample(x: Tensor, f: list[int], mode: str) -> Tensor:
    """2x down- or upsampling with the separable box filter ``f`` (per channel), or nothing."""
    if mode == "keep":
        return x
    taps = torch.tensor(f, dtype=torch.float32)
    taps = taps / taps.sum()
    kernel = torch.outer(taps, taps).to(x.dtype).to(x.device)
    kernel = kernel.expand(x.shape[1], 1, *kernel.shape)
    pad = (len(f) - 1) // 2
    if mode == "down":
        return F.conv2d(x, kernel, groups=x.shape[1], stride=2, padding=pad)
    return F.conv_transpose2d(x, kernel * 4, groups=x.shape[1], stride=2, padding=pad)


class MPFourier(nn.Module):
    """Fourier features sqrt(2) cos(2 pi (f c + phi)) of a scalar, with random f and phi (eq. 75)."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.outer(x.to(torch.float32), self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Magnitude-preserving convolution (kernel (k, k)) or linear layer (kernel ()): the weight is
    normalised per output channel at every call and scaled by gain / sqrt(fan_in) (eqs. 47, 66)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...]):
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: Tensor, gain: Tensor | float = 1.0) -> Tensor:
        w = normalize(self.weight.to(torch.float32))
        scale = gain / math.sqrt(w[0].numel())  # in the gain's own dtype, as EDM2 computes it
        w = (w * (scale.to(torch.float32) if isinstance(scale, Tensor) else scale)).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


class Block(nn.Module):
    """Encoder ('enc') or decoder ('dec') residual block with optional self-attention (Figure 21)."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, *, flavor: str = "enc",
                 resample_mode: str = "keep", resample_filter: list[int] = (1, 1), attention: bool = False,
                 channels_per_head: int = 64, dropout: float = 0.0, res_balance: float = 0.3,
                 attn_balance: float = 0.3, clip_act: float | None = 256):
        super().__init__()
        self.out_channels, self.flavor = out_channels, flavor
        self.resample_filter, self.resample_mode = list(resample_filter), resample_mode
        self.num_heads = out_channels // channels_per_head if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, (3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels, ())
        self.conv_res1 = MPConv(out_channels, out_channels, (3, 3))
        self.conv_skip = MPConv(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, (1, 1)) if self.num_heads else None
        self.attn_proj = MPConv(out_channels, out_channels, (1, 1)) if self.num_heads else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # Main branch: resample; an encoder block projects and pixel-normalises here.
        x = resample(x, self.resample_filter, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)
        # Residual branch, modulated by the embedding.
        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            x = mp_sum(x, self.attention(x), t=self.attn_balance)
        return x if self.clip_act is None else x.clip(-self.clip_act, self.clip_act)

    def attention(self, x: Tensor) -> Tensor:
        """Multi-head self-attention over pixels; q, k, v pixel-normalised per head (cosine attention)."""
        n, c, h, w = x.shape
        qkv = self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, h * w)
        q, k, v = normalize(qkv, dim=2).unbind(3)
        weights = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(q.shape[2])).softmax(dim=3)
        y = torch.einsum("nhqk,nhck->nhcq", weights, v)
        return self.attn_proj(y.reshape(n, c, h, w))


class EDM2UNet(nn.Module):
    """The magnitude-preserving U-Net F(x, c_noise, class_labels) of EDM2 (Figure 21)."""

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int, *, model_channels: int = 192,
                 channel_mult: list[int] = (1, 2, 3, 4), channel_mult_noise: int | None = None,
                 channel_mult_emb: int | None = None, num_blocks: int = 3, attn_resolutions: list[int] = (16, 8),
                 label_balance: float = 0.5, concat_balance: float = 0.5, **block_kwargs):
        super().__init__()
        cblock = [model_channels * m for m in channel_mult]
        cnoise = model_channels * channel_mult_noise if channel_mult_noise is not None else cblock[0]
        cemb = model_channels * channel_mult_emb if channel_mult_emb is not None else max(cblock)
        self.label_balance, self.concat_balance = label_balance, concat_balance
        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, ())
        self.emb_label = MPConv(label_dim, cemb, ()) if label_dim else None
        self.enc = nn.ModuleDict()
        cout = img_channels + 1  # a constant channel of ones is appended to the input
        for level, channels in enumerate(cblock):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = MPConv(cout, channels, (3, 3))
                cout = channels
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, flavor="enc", resample_mode="down", **block_kwargs)
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = Block(cout, channels, cemb, flavor="enc",
                                                          attention=res in attn_resolutions, **block_kwargs)
                cout = channels
        self.dec = nn.ModuleDict()
        skips = [block.out_channels for block in self.enc.values()]
        for level, channels in reversed(list(enumerate(cblock))):
            res = img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, cemb, flavor="dec", attention=True, **block_kwargs)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, flavor="dec", **block_kwargs)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, cemb, flavor="dec", resample_mode="up", **block_kwargs)
            for i in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{i}"] = Block(cout + skips.pop(), channels, cemb, flavor="dec",
                                                          attention=res in attn_resolutions, **block_kwargs)
                cout = channels
        self.out_conv = MPConv(cout, img_channels, (3, 3))

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None) -> Tensor:
        emb = self.emb_noise(self.emb_fourier(c_noise))
        if self.emb_label is not None:
            labels = class_labels * math.sqrt(class_labels.shape[1])
            emb = mp_sum(emb, self.emb_label(labels), t=self.label_balance)
        emb = mp_silu(emb)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)


def _keep_stored_dtypes(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Loading a state dict keeps its dtypes (EDM2 stores float16; its gains are used at that precision)."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        stored = state_dict.get(prefix + name)
        if isinstance(stored, Tensor) and stored.is_floating_point() and stored.dtype != tensor.dtype:
            tensor.data = tensor.data.to(stored.dtype)


class EDM2Precond(nn.Module):
    """EDM2's denoiser D(x; sigma) = c_skip x + c_out F(c_in x, log(sigma) / 4) (EDM Table 1),
    with the uncertainty head u(sigma) (EDM2 eq. 21) as ``logvar(sigma)`` or ``return_logvar=True``.

    ``compute_dtype``: the dtype the U-Net runs in (EDM2's ``use_fp16`` on GPUs is float16);
    the preconditioning and the returned denoised x stay in x's dtype.
    """

    sigma_min: float = 0.0
    sigma_max: float = math.inf

    def __init__(self, img_resolution: int, img_channels: int, label_dim: int, *, sigma_data: float = 0.5,
                 logvar_channels: int = 128, config: dict | None = None, compute_dtype: torch.dtype = torch.float32,
                 **unet_kwargs):
        super().__init__()
        self.label_dim, self.sigma_data = int(label_dim), float(sigma_data)
        self.shape = (int(img_channels), int(img_resolution), int(img_resolution))
        self.config, self.compute_dtype = config, compute_dtype
        self.unet = EDM2UNet(img_resolution, img_channels, label_dim, **unet_kwargs)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, ())
        self.register_load_state_dict_pre_hook(_keep_stored_dtypes)

    def forward(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, *,
                return_logvar: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (batch, C, H, W); sigma: float or (batch,); class_labels: (batch, label_dim) one-hot."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise PFDistError(f"x must be (batch, {', '.join(map(str, self.shape))}); got {tuple(x.shape)}.")
        sigma = expand_sigma(sigma, x).expand(x.shape[0], 1, 1, 1)
        if self.label_dim:
            if class_labels is None:
                class_labels = x.new_zeros(1, self.label_dim)
            class_labels = class_labels.to(self.compute_dtype).reshape(-1, self.label_dim)
        elif class_labels is not None:
            raise PFDistError("this network is unconditional (label_dim = 0); pass class_labels=None.")
        s2 = sigma**2 + self.sigma_data**2
        c_skip, c_out, c_in = self.sigma_data**2 / s2, sigma * self.sigma_data / s2.sqrt(), 1 / s2.sqrt()
        c_noise = sigma.flatten().log() / 4
        F_x = self.unet((c_in * x).to(self.compute_dtype), c_noise.to(self.compute_dtype), class_labels)
        denoised = c_skip * x + c_out * F_x.to(x.dtype)
        if return_logvar:
            return denoised, self.logvar(sigma.flatten()).to(x.dtype).reshape(-1, 1, 1, 1)
        return denoised

    def logvar(self, sigma: Tensor) -> Tensor:
        """The learned log-variance u(sigma) of the loss (EDM2 eq. 21); sigma: (batch,) -> (batch,)."""
        c_noise = sigma.to(torch.float32).log() / 4
        return self.logvar_linear(self.logvar_fourier(c_noise)).reshape(-1)

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}, label_dim={self.label_dim}, compute_dtype={self.compute_dtype}"
