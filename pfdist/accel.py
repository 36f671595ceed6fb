"""How a network runs on its device: channels-last memory, bf16 autocast, ``torch.compile``.

:class:`Accel` names the choice (a field of the training and evaluation configs, flags of the
CLI); :func:`accelerate` wraps a denoiser so that ``D(x, sigma)`` takes and returns float32
tensors whatever runs inside: the ODE state, the solver's arithmetic and the loss stay float32,
only the network's own layers run in bfloat16 under autocast. All three are off by default
(the float32 reference results); on CUDA, ``Accel(autocast="bf16", channels_last=True)`` is the
usual fast setting for U-Nets, and ``compile=True`` adds a one-off compilation per shape.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from pfdist.errors import PFDistError
from pfdist.hashing import content_hash, fingerprint

AUTOCAST = {"bf16": torch.bfloat16}


@dataclass(frozen=True)
class Accel:
    """autocast: None (float32) or "bf16"; channels_last: NHWC memory for 4-D inputs and conv
    weights; compile: ``torch.compile`` the network (the first batches of each shape are slow)."""

    autocast: str | None = None
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise PFDistError(f"autocast must be one of {sorted(AUTOCAST)} or unset for float32 (got {self.autocast!r}).")
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise PFDistError(f"{name} must be true or false (got {getattr(self, name)!r}).")

    @property
    def off(self) -> bool:
        return self == Accel()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def autocast_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on ``device`` (CUDA or CPU), or nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=AUTOCAST[self.autocast])

    def prepare(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` in channels-last memory (in place, as ``Module.to`` is)."""
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


def config_accel(config: Any) -> Accel:
    """The :class:`Accel` of a config's ``autocast`` / ``channels_last`` / ``compile`` fields; a bad
    value's error names the config (``TrainConfig: ...``)."""
    try:
        return Accel(config.autocast, config.channels_last, config.compile)
    except PFDistError as e:
        raise PFDistError(f"{type(config).__name__}: {e}") from None


class Accelerated(torch.nn.Module):
    """``net`` run under ``accel``; float32 in, float32 out. Its fingerprint is the network's and
    the setting's, so cached maps of the float32 network are never mistaken for these."""

    def __init__(self, net: torch.nn.Module, accel: Accel):
        super().__init__()
        self.net, self.accel = accel.prepare(net), accel
        self._run = torch.compile(self.net) if accel.compile else self.net
        for name in ("sigma_data", "shape", "config", "label_dim"):  # what callers read from a denoiser
            if hasattr(net, name):
                object.__setattr__(self, name, getattr(net, name))

    def forward(self, x: Tensor, sigma: Any, *args: Any, **kwargs: Any) -> Tensor:
        with self.accel.autocast_context(x.device):
            out = self._run(self.accel.input(x), sigma, *args, **kwargs)
        return out.to(x.dtype).contiguous()

    def fingerprint(self) -> str | None:
        inner = fingerprint(self.net)
        return None if inner is None else content_hash("accelerated/v1", inner, self.accel.to_dict())


def accelerate(denoiser: Any, accel: Accel | None = None, **fields: Any) -> Any:
    """``denoiser`` run under ``accel`` (or ``Accel(**fields)``); unchanged when all is off or
    when it is not a torch module (exact distributions have no layers to speed up)."""
    accel = accel or Accel(**fields)
    if accel.off or not isinstance(denoiser, torch.nn.Module):
        return denoiser
    return Accelerated(denoiser, accel)
