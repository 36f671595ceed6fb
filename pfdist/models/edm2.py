"""EDM2 snapshots (``edm2-img512-*.pkl``, ``edm2-img64-*.pkl``, training snapshots), read without running them.

An EDM2 pickle is ``EasyDict(encoder=..., dataset_kwargs=..., loss_fn=..., ema=net)`` written
through ``torch_utils.persistence`` like EDM's (see :mod:`pfdist.models.snapshot`): the same restricted
unpickler reads it, nothing embedded is imported or run, and numpy scalars and arrays are read as
data. ``ema`` is a ``Precond`` around the magnitude-preserving ``UNet``; its recorded constructor
arguments become a pfdist ``edm2`` config, the network is first laid out on the meta device (no
memory) and checked against the stored tensors' names and shapes, then built and filled.
``encoder`` (``StandardRGBEncoder`` or ``StabilityVAEEncoder``) is read as an
:class:`EncoderRecord` (its scale, bias and VAE name), which names the model's data space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.models.snapshot import ArrayRecord, PersistentRecord, UnsupportedSnapshotError, collect_state, plain
from pfdist.nets import NetSpec
from pfdist.nets.edm2 import EDM2Precond
from pfdist.nets.edm2_encoder import ENCODERS, EncoderRecord  # noqa: F401  (re-exported)

EDM2_CLASSES = {"Precond", "UNet", "Block", "MPConv", "MPFourier"}
_PRECOND_ARGS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_data", "logvar_channels")


def is_edm2(obj: Any) -> bool:
    """Whether a snapshot's top-level object is EDM2's (its ``ema`` is EDM2's ``Precond``)."""
    net = obj.get("ema") if isinstance(obj, dict) else None
    return isinstance(net, PersistentRecord) and net.class_name == "Precond"


def _vector(value: Any, name: str, where: str) -> tuple[float, ...]:
    import numpy as np

    if isinstance(value, ArrayRecord):
        array = value.array
    elif isinstance(value, (list, tuple, np.generic, float)):
        array = np.asarray(value)
    else:
        array = None
    if array is None or array.dtype.kind not in "fiu" or array.ndim > 1 or not np.isfinite(array).all():
        raise UnsupportedSnapshotError(f"{where}: the encoder's {name} is not a finite numeric vector.")
    return tuple(float(v) for v in np.atleast_1d(array))


def encoder_record(obj: Any, where: str) -> EncoderRecord:
    """The snapshot's ``encoder`` as data; a missing encoder is EDM2's default RGB one."""
    enc = obj.get("encoder") if isinstance(obj, dict) else None
    if enc is None:
        return EncoderRecord("StandardRGBEncoder")
    if not isinstance(enc, PersistentRecord) or enc.class_name not in ENCODERS:
        name = enc.class_name if isinstance(enc, PersistentRecord) else type(enc).__name__
        raise UnsupportedSnapshotError(f"{where}: the encoder is a {name}; pfdist reads {list(ENCODERS)}.")
    if enc.class_name == "StandardRGBEncoder":
        return EncoderRecord("StandardRGBEncoder")
    state = enc.state
    vae_name, batch_size = state.get("vae_name"), state.get("batch_size", 8)
    if not isinstance(vae_name, str) or not vae_name:
        raise UnsupportedSnapshotError(f"{where}: the StabilityVAEEncoder records no vae_name.")
    checks.integer(f"{where}: the encoder's batch_size", batch_size, lo=1, error=UnsupportedSnapshotError)
    scale, bias = _vector(state.get("scale"), "scale", where), _vector(state.get("bias"), "bias", where)
    if len(scale) != len(bias) or 0.0 in scale:
        raise UnsupportedSnapshotError(f"{where}: the encoder's scale and bias must be non-zero vectors of one length.")
    return EncoderRecord("StabilityVAEEncoder", vae_name, scale, bias, int(batch_size))


def edm2_config(net: PersistentRecord, where: str) -> NetSpec:
    """The pfdist ``edm2`` network equivalent to an EDM2 ``Precond`` record (validated, bounded)."""
    if len(net.init_args) > len(_PRECOND_ARGS):
        raise UnsupportedSnapshotError(f"{where}: Precond was built with {len(net.init_args)} positional arguments.")
    kwargs = plain({**dict(zip(_PRECOND_ARGS, net.init_args)), **net.init_kwargs})
    kwargs.pop("use_fp16", None)
    try:
        resolution, channels = kwargs.pop("img_resolution"), kwargs.pop("img_channels")
        return NetSpec({"arch": "edm2", "shape": [channels, resolution, resolution], **kwargs})
    except (KeyError, PFDistError) as e:
        raise UnsupportedSnapshotError(f"{where}: the EDM2 network's arguments are not one pfdist implements ({e}).") from None


def edm2_network(obj: Any, where: str, *, dtype: torch.dtype | None = None) -> EDM2Precond:
    """The EDM2 denoiser of a snapshot's top-level object; weights as stored, ``dtype`` the compute dtype."""
    record = obj["ema"]
    spec = edm2_config(record, where)
    state: dict[str, Tensor] = {}
    try:
        collect_state(record, "", state, allowed=EDM2_CLASSES)
    except UnsupportedSnapshotError as e:
        raise UnsupportedSnapshotError(f"{where}: {e}") from None
    with torch.device("meta"):
        layout = spec.build().state_dict()
    missing, unexpected = sorted(set(layout) - set(state)), sorted(set(state) - set(layout))
    wrong = sorted(k for k in set(layout) & set(state) if layout[k].shape != state[k].shape)
    bad = sorted(k for k, v in state.items() if not v.is_floating_point() or not torch.isfinite(v).all())
    if missing or unexpected or wrong or bad:
        raise UnsupportedSnapshotError(
            f"{where}: the weights do not fit the EDM2 network its arguments describe (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}, not finite floating point {bad[:3]}).")
    net = spec.build()
    net.load_state_dict(state)  # the stored dtypes (float16 in EDM2's snapshots) are kept
    if dtype is not None:
        net.compute_dtype = dtype
    encoder = encoder_record(obj, where)
    if encoder.scale is not None and len(encoder.scale) != spec.shape[0]:
        raise UnsupportedSnapshotError(f"{where}: the encoder has {len(encoder.scale)} channels but the network "
                                       f"{spec.shape[0]}.")
    net.encoder, net.data_space = encoder, encoder.data_space
    return net.eval().requires_grad_(False)


