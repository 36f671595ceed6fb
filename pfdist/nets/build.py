"""Networks from JSON configs: ``build_network({"arch": "songunet", "shape": [3, 32, 32], ...})``.

A config names a backbone (``arch``: ``mlp``, ``songunet`` for DDPM++ / NCSN++, ``dhariwal``
for ADM, ``edm2`` for EDM2's magnitude-preserving U-Net), its data ``shape``, its hyperparameters
(EDM's or EDM2's names and defaults), and the preconditioning (``precond``: ``edm`` (default),
``vp``, ``ve`` or ``iddpm``; ``edm2``, EDM's with the log-variance head, goes with ``arch``
``edm2``) with that one's parameters. Converted EDM and EDM2 snapshots are configs of this kind too.

A config is validated once, where it enters: :class:`NetSpec` holds the result (defaults filled
in, immutable); code below takes the spec, or the module it builds, never the dict again.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from pfdist.errors import PFDistError
from pfdist.nets.dhariwal import DhariwalUNet
from pfdist.nets.edm2 import EDM2Precond
from pfdist.nets.mlp import MLP
from pfdist.nets.precond import EDMPrecond, Precond, VEPrecond, VPPrecond, iDDPMPrecond
from pfdist.nets.songunet import DECODERS, EMBEDDINGS, ENCODERS, SongUNet


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _ints(lo: int, nonempty: bool = True) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (list, tuple)) and (len(v) > 0 or not nonempty) and all(
        _int(lo)(e) for e in v
    )


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _fraction(v: Any) -> bool:
    return _number(v) and 0 <= v < 1


def _even(lo: int) -> Callable[[Any], bool]:
    return lambda v: _int(lo)(v) and v % 2 == 0


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _upto(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: _int(lo)(v) and v <= hi


def _balance(v: Any) -> bool:
    return _number(v) and 0 <= v <= 1


# key -> (default or REQUIRED, check, description)
REQUIRED = object()
_IMAGE = {
    "shape": (REQUIRED, lambda v: _ints(1)(v) and len(v) == 3 and v[1] == v[2], "[C, H, W] with H == W"),
    "label_dim": (0, _int(0), "int >= 0, number of classes (0: unconditional)"),
    "augment_dim": (0, _int(0), "int >= 0, augmentation label size (0: none)"),
    "model_channels": (128, _even(2), "even int >= 2"),
    "channel_mult": ([1, 2, 2, 2], _ints(1), "non-empty list of positive ints"),
    "channel_mult_emb": (4, _int(1), "int >= 1"),
    "num_blocks": (4, _int(1), "int >= 1"),
    "attn_resolutions": ([16], _ints(1, nonempty=False), "list of resolutions (heights)"),
    "dropout": (0.10, _fraction, "float in [0, 1)"),
    "label_dropout": (0.0, _fraction, "float in [0, 1)"),
}
SCHEMAS: dict[str, dict[str, tuple[Any, Callable[[Any], bool], str]]] = {
    "mlp": {
        "shape": (REQUIRED, _ints(1), "list of positive ints, the shape of one sample"),
        "width": (256, _even(4), "even int >= 4"),
        "depth": (3, _int(1), "int >= 1, number of residual blocks"),
    },
    "songunet": {
        **_IMAGE,
        "embedding_type": ("positional", _one_of(*EMBEDDINGS), f"one of {list(EMBEDDINGS)}"),
        "channel_mult_noise": (1, _int(1), "int >= 1"),
        "encoder_type": ("standard", _one_of(*ENCODERS), f"one of {list(ENCODERS)}"),
        "decoder_type": ("standard", _one_of(*DECODERS), f"one of {list(DECODERS)}"),
        "resample_filter": ([1, 1], _ints(1), "non-empty list of positive ints"),
    },
    "dhariwal": {**_IMAGE, "model_channels": (192, _even(2), "even int >= 2"),
                 "channel_mult": ([1, 2, 3, 4], _ints(1), "non-empty list of positive ints"),
                 "num_blocks": (3, _int(1), "int >= 1"),
                 "attn_resolutions": ([32, 16, 8], _ints(1, nonempty=False), "list of resolutions (heights)")},
    "edm2": {  # EDM2's magnitude-preserving U-Net; bounds refuse absurd sizes before anything is built
        "shape": (REQUIRED, lambda v: _ints(1)(v) and len(v) == 3 and v[1] == v[2] and v[0] <= 1024 and v[1] <= 4096,
                  "[C, H, W] with H == W, C <= 1024, H <= 4096"),
        "label_dim": (0, _upto(0, 1 << 20), "int in [0, 2^20], number of classes (0: unconditional)"),
        "model_channels": (192, _upto(1, 4096), "int in [1, 4096]"),
        "channel_mult": ([1, 2, 3, 4], lambda v: _ints(1)(v) and len(v) <= 12 and max(v) <= 64,
                         "list of 1 to 12 ints in [1, 64]"),
        "channel_mult_noise": (None, lambda v: v is None or _upto(1, 64)(v), "null or int in [1, 64]"),
        "channel_mult_emb": (None, lambda v: v is None or _upto(1, 64)(v), "null or int in [1, 64]"),
        "num_blocks": (3, _upto(1, 32), "int in [1, 32]"),
        "attn_resolutions": ([16, 8], _ints(1, nonempty=False), "list of resolutions (heights)"),
        "label_balance": (0.5, _balance, "float in [0, 1]"),
        "concat_balance": (0.5, _balance, "float in [0, 1]"),
        "resample_filter": ([1, 1], lambda v: _ints(1)(v) and len(v) % 2 == 0 and len(v) <= 16,
                            "list of an even number (<= 16) of positive ints"),
        "channels_per_head": (64, _upto(1, 1 << 16), "int >= 1"),
        "dropout": (0.0, _fraction, "float in [0, 1)"),
        "res_balance": (0.3, _balance, "float in [0, 1]"),
        "attn_balance": (0.3, _balance, "float in [0, 1]"),
        "clip_act": (256, lambda v: v is None or _positive(v), "positive float, or null for no clipping"),
    },
}
PRECONDS: dict[str, dict[str, tuple[Any, Callable[[Any], bool], str]]] = {
    "edm": {
        "sigma_data": (0.5, _positive, "positive float"),
        "sigma_min": (0.0, lambda v: _number(v) and v >= 0, "float >= 0"),
        "sigma_max": (None, lambda v: v is None or _positive(v), "positive float, or null for no bound"),
    },
    "vp": {
        "beta_d": (19.9, _positive, "positive float"),
        "beta_min": (0.1, _positive, "positive float"),
        "M": (1000, _int(2), "int >= 2"),
        "epsilon_t": (1e-5, _fraction, "float in [0, 1)"),
    },
    "ve": {
        "sigma_min": (0.02, _positive, "positive float"),
        "sigma_max": (100.0, _positive, "positive float"),
    },
    "edm2": {
        "sigma_data": (0.5, _positive, "positive float"),
        "logvar_channels": (128, _upto(1, 1 << 16), "int in [1, 65536]"),
    },
    "iddpm": {
        "C_1": (0.001, _positive, "positive float"),
        "C_2": (0.008, _positive, "positive float"),
        "M": (1000, _int(2), "int >= 2"),
    },
}
_BACKBONES: dict[str, type[nn.Module]] = {"mlp": MLP, "songunet": SongUNet, "dhariwal": DhariwalUNet}


def _fill(config: dict, schema: dict, what: str, out: dict) -> None:
    for key, (default, check, desc) in schema.items():
        if key not in config:
            if default is REQUIRED:
                raise PFDistError(f"network config for {what} needs {key!r} ({desc}).")
            value = copy.deepcopy(default)
        else:
            value = config[key]
        if not check(value):
            raise PFDistError(f"network config {key!r} must be {desc}; got {value!r}.")
        out[key] = list(value) if isinstance(value, tuple) else value


def normalize_config(config: dict) -> dict:
    """Validate a network config and fill in defaults; tuples become lists (JSON form)."""
    if not isinstance(config, dict):
        raise PFDistError(f"network config must be a dict, got {type(config).__name__}.")
    arch = config.get("arch")
    if arch == "unet":
        raise PFDistError("arch 'unet' is now 'songunet' (EDM's DDPM++ U-Net); rename base_channels to "
                          "model_channels, and note that the bottleneck always has attention.")
    if arch not in SCHEMAS:
        raise PFDistError(f"unknown network arch {arch!r}; valid: {sorted(SCHEMAS)}.")
    precond = config.get("precond", "edm2" if arch == "edm2" else "edm")
    if (arch == "edm2") != (precond == "edm2"):
        raise PFDistError(f"arch {arch!r} with precond {precond!r}: EDM2's U-Net and its preconditioning "
                          "(precond 'edm2') go together.")
    if precond not in PRECONDS:
        raise PFDistError(f"unknown precond {precond!r}; valid: {sorted(PRECONDS)}.")
    schema, pschema = SCHEMAS[arch], PRECONDS[precond]
    unknown = sorted(set(config) - set(schema) - set(pschema) - {"arch", "precond"})
    if unknown:
        raise PFDistError(f"unknown keys {unknown} for arch {arch!r} with precond {precond!r}; "
                          f"valid: {sorted(set(schema) | set(pschema) | {'precond'})}.")
    out: dict[str, Any] = {"arch": arch, "precond": precond}
    _fill(config, schema, f"arch {arch!r}", out)
    _fill(config, pschema, f"precond {precond!r}", out)
    if arch != "mlp":
        _check_image(out)
    return out


def _check_image(config: dict) -> None:
    channels, height, _ = config["shape"]
    levels = len(config["channel_mult"])
    if height % 2 ** (levels - 1):
        raise PFDistError(f"a U-Net with {levels} levels needs H and W divisible by {2 ** (levels - 1)}; "
                          f"got {height}x{height}. Use fewer channel_mult entries.")
    if config["arch"] == "edm2" and config["model_channels"] * max(config["channel_mult"]) > 8192:
        raise PFDistError(f"an EDM2 U-Net with model_channels * max(channel_mult) = "
                          f"{config['model_channels'] * max(config['channel_mult'])} channels is too large (at most 8192).")
    noise = config["model_channels"] * (config.get("channel_mult_noise") or 1)
    if config["arch"] == "songunet" and config["embedding_type"] == "positional" and noise < 4:
        raise PFDistError(f"a positional noise embedding needs model_channels * channel_mult_noise >= 4; got {noise}.")


@dataclass(frozen=True, init=False)
class NetSpec:
    """A network config validated once: :func:`normalize_config`'s result, immutable and hashable.

    ``NetSpec(config)`` validates a dict (a NetSpec passes through unchanged); ``spec.config`` is
    a copy of the normalized dict (JSON form: what checkpoints store and content keys hash);
    ``spec.build(seed=...)`` is the module. Two specs are equal when they describe the same network.
    """

    _json: str  # the normalized config as JSON text: immutable, and pickled as it is

    def __init__(self, config: "dict | NetSpec"):
        text = config._json if isinstance(config, NetSpec) else json.dumps(normalize_config(config))
        object.__setattr__(self, "_json", text)

    def __repr__(self) -> str:
        return f"NetSpec({self._json})"

    @property
    def config(self) -> dict[str, Any]:
        """The normalized config (a fresh dict; key order as :func:`normalize_config` writes it)."""
        return json.loads(self._json)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.config["shape"])

    def build(self, *, seed: int | None = None) -> Precond:
        """The preconditioned network; see :func:`build_network`."""
        return _build(self.config, seed)


def _backbone(config: dict) -> nn.Module:
    kwargs = {k: v for k, v in config.items() if k in SCHEMAS[config["arch"]]}
    if config["arch"] == "mlp":
        return MLP(**kwargs)
    channels, resolution, _ = kwargs.pop("shape")
    out_channels = 2 * channels if config["precond"] == "iddpm" else channels
    return _BACKBONES[config["arch"]](img_resolution=resolution, in_channels=channels,
                                      out_channels=out_channels, **kwargs)


MAX_PARAMETERS = 1 << 32  # 16 GiB of float32 weights; EDM's largest networks have ~0.3 G


def build_network(config: "dict | NetSpec", *, seed: int | None = None) -> Precond:
    """The preconditioned network (a denoiser D(x, sigma[, class_labels])) a config describes.

    ``config``: a dict (validated here) or a :class:`NetSpec`. With ``seed`` the initial weights
    are a pure function of (config, seed) and the global random state is left untouched. The
    module carries its normalized config as ``net.config`` (what :func:`pfdist.training.train`
    and :func:`pfdist.training.save_denoiser` store beside its weights).
    """
    return NetSpec(config).build(seed=seed)


def _build(config: dict, seed: int | None) -> Precond:
    """The network of a normalized ``config`` (its own copy, kept as ``net.config``)."""
    if config["arch"] == "edm2":
        return _build_edm2(config, seed)
    try:
        with torch.device("meta"):  # shapes only, to refuse a network that cannot fit before allocating it
            size = count_parameters(_backbone(config))
    except RuntimeError as e:  # a layer with more than 2^63 values
        if "overflow" not in str(e):
            raise
        size = math.inf
    if size > MAX_PARAMETERS:
        count = "more than 2^63" if size == math.inf else f"{size:,}"
        raise PFDistError(f"the network config describes {count} parameters, more than the {MAX_PARAMETERS:,} "
                          "pfdist builds; check its widths and channel counts.")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = _backbone(config)
    common = dict(label_dim=config.get("label_dim", 0), config=config)
    precond = config["precond"]
    if precond == "edm":
        sigma_max = math.inf if config["sigma_max"] is None else config["sigma_max"]
        return EDMPrecond(model, config["sigma_data"], sigma_min=config["sigma_min"], sigma_max=sigma_max, **common)
    if precond == "vp":
        return VPPrecond(model, beta_d=config["beta_d"], beta_min=config["beta_min"], M=config["M"],
                         epsilon_t=config["epsilon_t"], **common)
    if precond == "ve":
        return VEPrecond(model, sigma_min=config["sigma_min"], sigma_max=config["sigma_max"], **common)
    return iDDPMPrecond(model, img_channels=config["shape"][0], C_1=config["C_1"], C_2=config["C_2"],
                        M=config["M"], **common)


def _build_edm2(config: dict, seed: int | None) -> EDM2Precond:
    kwargs = {k: v for k, v in config.items() if k not in ("arch", "precond", "shape")}
    channels, resolution, _ = config["shape"]
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return EDM2Precond(resolution, channels, config=config, **kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable scalars, |theta|."""
    return sum(p.numel() for p in net.parameters())
