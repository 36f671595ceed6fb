"""EDM network snapshots (``network-snapshot-*.pkl``, Karras et al. 2022), read without running them.

An EDM snapshot is a pickle of ``dict(ema=net, loss_fn=..., augment_pipe=..., dataset_kwargs=...)``
whose modules were saved through ``torch_utils.persistence``; :mod:`pfdist.models.snapshot` reads
it with a restricted unpickler that runs nothing from the file. The recorded constructor
arguments give a pfdist network config, and pfdist's own architecture-identical networks
(:mod:`pfdist.nets`) receive the recorded weights. EDM2 snapshots go to :mod:`pfdist.models.edm2`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import NonFiniteError, PFDistError
from pfdist.models.edm2 import edm2_network, is_edm2
from pfdist.models.snapshot import PersistentRecord, UnsupportedSnapshotError, collect_state, plain, read_snapshot
from pfdist.nets import EDM2Precond, NetSpec, Precond
from pfdist.nets.build import SCHEMAS

# EDM's preconditioner classes: pfdist name, and their own parameters in constructor order.
_PRECONDS = {
    "EDMPrecond": ("edm", ("sigma_min", "sigma_max", "sigma_data"), "DhariwalUNet"),
    "VPPrecond": ("vp", ("beta_d", "beta_min", "M", "epsilon_t"), "SongUNet"),
    "VEPrecond": ("ve", ("sigma_min", "sigma_max"), "SongUNet"),
    "iDDPMPrecond": ("iddpm", ("C_1", "C_2", "M"), "DhariwalUNet"),
}
_ARCHS = {"SongUNet": "songunet", "DhariwalUNet": "dhariwal"}
_LAYERS = {"Linear", "Conv2d", "GroupNorm", "UNetBlock", "PositionalEmbedding", "FourierEmbedding"}


def network_record(obj: Any) -> PersistentRecord:
    """The network in a snapshot: ``obj["ema"]`` of a training snapshot, or a bare network record."""
    net = obj.get("ema") if isinstance(obj, dict) else obj
    if not isinstance(net, PersistentRecord):
        raise UnsupportedSnapshotError("the pickle holds no EDM network (expected a dict with 'ema').")
    return net


def edm_config(net: PersistentRecord) -> dict:
    """The pfdist network config equivalent to an EDM preconditioner record."""
    if net.class_name not in _PRECONDS:
        raise UnsupportedSnapshotError(
            f"the snapshot's network is a {net.class_name}; pfdist reads {sorted(_PRECONDS)}.")
    precond, own, default_model = _PRECONDS[net.class_name]
    names = ("img_resolution", "img_channels", "label_dim", "use_fp16", *own, "model_type")
    if len(net.init_args) > len(names):
        raise UnsupportedSnapshotError(f"{net.class_name} was built with {len(net.init_args)} positional arguments.")
    kwargs = plain({**dict(zip(names, net.init_args)), **net.init_kwargs})
    model_type = kwargs.pop("model_type", default_model)
    if model_type not in _ARCHS:
        raise UnsupportedSnapshotError(f"the snapshot's model_type is {model_type!r}; pfdist reads {sorted(_ARCHS)}.")
    arch = _ARCHS[model_type]
    resolution, channels = kwargs.pop("img_resolution"), kwargs.pop("img_channels")
    kwargs.pop("use_fp16", None)
    config = {"arch": arch, "precond": precond, "shape": [channels, resolution, resolution]}
    for key in own:
        if key in kwargs:
            value = kwargs.pop(key)
            config[key] = None if key == "sigma_max" and value == math.inf else value
    unknown = sorted(set(kwargs) - set(SCHEMAS[arch]))
    if unknown:
        raise UnsupportedSnapshotError(f"the snapshot's {model_type} has arguments {unknown} that pfdist does not implement.")
    config.update(kwargs)
    return config


def load_edm(path: str | os.PathLike, *, device: torch.device | str | None = None,
             dtype: torch.dtype | None = None) -> Precond | EDM2Precond:
    """An EDM or EDM2 snapshot as a pfdist denoiser ``D(x, sigma, class_labels=None)``, in eval mode.

    EDM (2022): a :class:`pfdist.nets.Precond` (``VPPrecond``, ``VEPrecond``, ``EDMPrecond`` or
    ``iDDPMPrecond``) with ``sigma_min`` / ``sigma_max``, ``label_dim`` and a ``config`` that
    :func:`pfdist.save_denoiser` writes. EDM2 (2024): a :class:`pfdist.nets.EDM2Precond` with the
    weights as stored (float16), computing in float32 or in ``dtype`` (e.g. ``torch.bfloat16``;
    the preconditioning and its output stay in x's dtype), with ``data_space`` and ``encoder``
    read from the snapshot's encoder (see :func:`pfdist.load_edm_decoder`). For EDM networks
    ``dtype`` (float32 or float64) casts the weights; lower precision is ``pfd(..., autocast=...)``.
    Nothing in the file is executed (see the module docstring).
    """
    if device is not None:
        checks.device("device", device)
    obj = read_snapshot(path)
    if isinstance(obj, dict) and "ema" not in obj and ("encoder" in obj or "loss_fn" in obj):
        raise UnsupportedSnapshotError(f"{path} holds no 'ema' network (keys {sorted(map(str, obj))[:6]}); "
                                       "give a snapshot written by EDM's or EDM2's training or reconstruct_phema.py.")
    if is_edm2(obj):
        return edm2_network(obj, str(path), dtype=dtype).to(device)
    if dtype not in (None, torch.float32, torch.float64):
        raise PFDistError(f"dtype={dtype} for the EDM network in {path}: EDM networks load in float32 or float64; "
                          "run them in lower precision with pfd(..., autocast=torch.bfloat16).")
    net_record = network_record(obj)
    config = edm_config(net_record)
    state: dict[str, Tensor] = {}
    collect_state(net_record, "", state, allowed=_LAYERS | set(_ARCHS) | set(_PRECONDS))
    broken = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise NonFiniteError(f"{path}: the weights {broken[:3]} hold NaN or Inf ({len(broken)} tensors); the "
                             "snapshot is damaged or from a diverged run: use another snapshot.")
    spec = NetSpec(config)
    with torch.device("meta"):  # shapes only: nothing is allocated until the weights are known to fit
        want = spec.build().state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = sorted(k for k in set(want) & set(state) if want[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise UnsupportedSnapshotError(
            f"{path}: the weights do not fit the network its arguments describe (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); it is not a network pfdist implements.")
    net = spec.build()
    net.load_state_dict({k: v.to(want[k].dtype) for k, v in state.items()})
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)
