"""SSCD (Pizzi et al., 2022), the copy-detection descriptor of the paper, from a user's file.

pfdist ships no weights: pass the path of an SSCD TorchScript file (as published, e.g.
``sscd_disc_mixup.torchscript.pt``) or a ``torch.export`` ``.pt2`` program of it. SECURITY: both
formats are code and run when loaded; use only files you trust.

Preprocessing, as the SSCD authors use it for copy detection (documented choices in brackets):

1. data in ``data_range`` (default [-1, 1], the EDM convention) -> [0, 1], clamped;
2. optionally quantised to 8 bits, round(255 x) / 255, as saved images are;
3. one-channel data repeated to three channels [SSCD takes RGB; a grey image is R = G = B];
4. resized to ``size`` x ``size`` (320) with ``interpolation`` [bilinear by default, as
   torchvision's Resize; bicubic on request; antialiased when shrinking; clamped to [0, 1]
   after resizing, as an 8-bit image would be];
5. ImageNet mean / std normalisation;
6. the network, then L2 normalisation of each descriptor, so |Psi(a) - Psi(b)|^2 = 2 - 2 cos
   and PFD lies in [0, 2].
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from pfdist.descriptors.files import file_sha256, load_module, run_module
from pfdist import checks
from pfdist.errors import PFDistError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")


class SSCD:
    """The SSCD descriptor with its preprocessing; see the module docstring. x: (batch, 1 or 3, H, W)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        size: int = 320,
        interpolation: str = "bilinear",
        quantize: bool = False,
        data_range: tuple[float, float] = (-1.0, 1.0),
        map_location: str = "cpu",
    ):
        checks.integer("size", size, lo=1, hi=4096, fix="the side images are resized to before SSCD")
        if not isinstance(quantize, bool):
            raise PFDistError(f"quantize must be True or False (got {quantize!r}).")
        if interpolation not in INTERPOLATIONS:
            raise PFDistError(f"interpolation must be one of {INTERPOLATIONS} (got {interpolation!r}).")
        lo, hi = (float(v) for v in data_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise PFDistError(f"data_range must be (low, high) with low < high, finite (got {data_range!r}).")
        self.path = Path(path)
        self.module, self.format = load_module(self.path, map_location=map_location)
        self.size, self.interpolation, self.quantize, self.data_range = size, interpolation, bool(quantize), (lo, hi)
        self._hash = file_sha256(self.path)

    def preprocess(self, x: Tensor) -> Tensor:
        """Steps 1-5: (batch, 1 or 3, H, W) in data_range -> (batch, 3, size, size), ImageNet-normalised."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise PFDistError(f"SSCD takes images (batch, 1 or 3, H, W); got shape {tuple(x.shape)}.")
        lo, hi = self.data_range
        x = ((x - lo) / (hi - lo)).clamp(0, 1)
        if self.quantize:
            x = torch.round(x * 255) / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (self.size, self.size):
            shrink = min(x.shape[2:]) > self.size
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode=self.interpolation,
                                                align_corners=False, antialias=shrink).clamp(0, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, x: Tensor) -> Tensor:
        """x: (batch, 1 or 3, H, W) -> (batch, features), unit rows."""
        y = run_module(self, self.preprocess(x))
        return torch.nn.functional.normalize(y.flatten(1).to(x.dtype), dim=1)

    def fingerprint(self) -> str:
        lo, hi = self.data_range
        return (f"sscd:{self.format}:{self._hash}:size={self.size}:{self.interpolation}:"
                f"quantize={self.quantize}:range={lo!r},{hi!r}")

    def __repr__(self) -> str:
        return f"SSCD({str(self.path)!r}, size={self.size}, interpolation={self.interpolation!r}, quantize={self.quantize})"
