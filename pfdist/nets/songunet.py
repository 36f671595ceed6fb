"""Song et al.'s DDPM++ and NCSN++ U-Nets ("Score-based generative modeling through SDEs",
2021) in EDM's form (Karras et al. 2022, Appendix F.2): EDM's CIFAR-10, FFHQ and AFHQv2
networks and the paper's students.

DDPM++: positional noise embedding, standard encoder, box resampling ``[1, 1]``.
NCSN++: Fourier embedding of twice the width, a residual encoder path from the input image,
resampling ``[1, 3, 3, 1]``. Level ``l`` runs at resolution R / 2^l with
``model_channels * channel_mult[l]`` channels and ``num_blocks`` blocks (``num_blocks + 1`` on
the way up); attention at the resolutions in ``attn_resolutions`` and in the first bottleneck
block. Modules carry EDM's names (``enc["32x32_block0"]``, ``dec["16x16_up"]``, ...).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pfdist.nets.layers import Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock

EMBEDDINGS = ("positional", "fourier")
ENCODERS = ("standard", "skip", "residual")
DECODERS = ("standard", "skip")


class SongUNet(nn.Module):
    """F(x, c_noise, class_labels, augment_labels): x: (batch, in_channels, R, R) -> (batch, out_channels, R, R).

    c_noise: (batch,); class_labels: (batch, label_dim) (one-hot) when ``label_dim > 0``;
    augment_labels: (batch, augment_dim) or None (no augmentation).
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[int] = (1, 1),
    ):
        if embedding_type not in EMBEDDINGS or encoder_type not in ENCODERS or decoder_type not in DECODERS:
            raise ValueError(f"bad SongUNet type: {embedding_type}, {encoder_type}, {decoder_type}")
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5),
                     eps=1e-6, resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                     init=init, init_zero=init_zero, init_attn=init_attn)
        levels = [(img_resolution >> level, model_channels * mult) for level, mult in enumerate(channel_mult)]
        attn = {int(r) for r in attn_resolutions}

        # Mapping.
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        self.enc = _encoder(in_channels, model_channels, levels, num_blocks, attn, encoder_type, block)
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]
        self.dec = _decoder(out_channels, skips, levels, num_blocks, attn, decoder_type, block)

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        # Mapping (the positional embedding's cos and sin halves are swapped, as in EDM).
        emb = self.map_noise(c_noise)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)
        if self.map_label is not None:
            labels = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                labels = labels * keep.to(labels.dtype)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        # Encoder.
        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        # Decoder.
        aux = tmp = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if "_block" in name:  # every decoder block takes the matching encoder output
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux


def _encoder(in_channels: int, model_channels: int, levels: list[tuple[int, int]], num_blocks: int, attn: set[int],
             encoder_type: str, block: dict) -> nn.ModuleDict:
    """The way down: level ``l`` of ``levels`` is (resolution, channels); EDM's module names and order."""
    enc, init, resample_filter = nn.ModuleDict(), block["init"], block["resample_filter"]
    cout = caux = in_channels
    for level, (res, channels) in enumerate(levels):
        if level == 0:
            enc[f"{res}x{res}_conv"] = Conv2d(cout, model_channels, 3, **init)
            cout = model_channels
        else:
            enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            if encoder_type == "skip":
                enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True, resample_filter=resample_filter)
                enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1, **init)
            if encoder_type == "residual":
                enc[f"{res}x{res}_aux_residual"] = Conv2d(
                    caux, cout, 3, down=True, resample_filter=resample_filter, fused_resample=True, **init)
                caux = cout
        for idx in range(num_blocks):
            cin, cout = cout, channels
            enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn, **block)
    return enc


def _decoder(out_channels: int, skips: list[int], levels: list[tuple[int, int]], num_blocks: int, attn: set[int],
             decoder_type: str, block: dict) -> nn.ModuleDict:
    """The way up, taking the encoder outputs of ``skips`` (their channels) last first."""
    dec, skips, cout = nn.ModuleDict(), list(skips), skips[-1]
    for level, (res, channels) in reversed(list(enumerate(levels))):
        if level == len(levels) - 1:
            dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
            dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
        else:
            dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
        for idx in range(num_blocks + 1):
            cin, cout = cout + skips.pop(), channels
            attention = idx == num_blocks and res in attn
            dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attention, **block)
        if decoder_type == "skip" or level == 0:
            if decoder_type == "skip" and level < len(levels) - 1:
                dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True,
                                                    resample_filter=block["resample_filter"])
            dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
            dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3, **block["init_zero"])
    return dec
