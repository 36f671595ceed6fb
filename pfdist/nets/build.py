"""Networks from JSON configs: ``build_network({"arch": "mlp", "shape": [16], ...})``."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from pfdist.errors import PFDistError
from pfdist.nets.mlp import MLP
from pfdist.nets.precond import EDMPrecond
from pfdist.nets.unet import UNet


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _ints(lo: int, nonempty: bool = True) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and (len(v) > 0 or not nonempty) and all(
        _int(lo)(e) for e in v
    )


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def _even(v: Any) -> bool:
    return _int(4)(v) and v % 2 == 0


# arch -> key -> (default or REQUIRED, check, description)
REQUIRED = object()
SCHEMAS: dict[str, dict[str, tuple[Any, Callable[[Any], bool], str]]] = {
    "mlp": {
        "shape": (REQUIRED, _ints(1), "list of positive ints, the shape of one sample"),
        "width": (256, _even, "even int >= 4"),
        "depth": (3, _int(1), "int >= 1, number of residual blocks"),
        "sigma_data": (0.5, _positive, "positive float"),
    },
    "unet": {
        "shape": (REQUIRED, lambda v: _ints(1)(v) and len(v) == 3, "[C, H, W]"),
        "base_channels": (64, _even, "even int >= 4"),
        "channel_mult": ([1, 2, 2], _ints(1), "non-empty list of positive ints"),
        "num_blocks": (2, _int(1), "int >= 1"),
        "attn_resolutions": ([], _ints(1, nonempty=False), "list of resolutions (heights)"),
        "dropout": (0.0, _fraction, "float in [0, 1)"),
        "channel_mult_emb": (4, _int(1), "int >= 1"),
        "attn_bottleneck": (False, lambda v: isinstance(v, bool), "bool (True as in EDM)"),
        "sigma_data": (0.5, _positive, "positive float"),
    },
}
_BACKBONES: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet}


def normalize_config(config: dict) -> dict:
    """Validate a network config and fill in defaults; tuples become lists (JSON form)."""
    if not isinstance(config, dict):
        raise PFDistError(f"network config must be a dict, got {type(config).__name__}.")
    arch = config.get("arch")
    if arch not in SCHEMAS:
        raise PFDistError(f"unknown network arch {arch!r}; valid: {sorted(SCHEMAS)}.")
    schema = SCHEMAS[arch]
    unknown = sorted(set(config) - set(schema) - {"arch"})
    if unknown:
        raise PFDistError(f"unknown keys {unknown} for arch {arch!r}; valid: {sorted(schema)}.")
    out: dict[str, Any] = {"arch": arch}
    for key, (default, check, what) in schema.items():
        if key not in config:
            if default is REQUIRED:
                raise PFDistError(f"network config for arch {arch!r} needs {key!r} ({what}).")
            value = copy.deepcopy(default)
        else:
            value = config[key]
        if not check(value):
            raise PFDistError(f"network config {key!r} must be {what}; got {value!r}.")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def build_network(config: dict, *, seed: int | None = None) -> EDMPrecond:
    """An :class:`EDMPrecond` around the backbone named by ``config["arch"]``.

    With ``seed`` the initial weights are a pure function of (config, seed) and the global
    random state is left untouched.
    """
    config = normalize_config(config)
    kwargs = {k: v for k, v in config.items() if k not in ("arch", "sigma_data")}
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        backbone = _BACKBONES[config["arch"]](**kwargs)
    return EDMPrecond(backbone, sigma_data=config["sigma_data"], config=config)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable scalars, |theta|."""
    return sum(p.numel() for p in net.parameters())
