"""EDM network snapshots (``network-snapshot-*.pkl``, Karras et al. 2022), read without running them.

An EDM snapshot is a pickle of ``dict(ema=net, loss_fn=..., augment_pipe=..., dataset_kwargs=...)``
whose modules were saved through ``torch_utils.persistence``: each is a call
``_reconstruct_persistent_obj(meta)`` with ``meta`` = {type, version, module_src, class_name,
state}, and unpickling it with EDM's code would execute ``module_src``. Here a restricted
unpickler resolves only a fixed list of globals (tensor and storage rebuilders, OrderedDict,
EDM's EasyDict as a dict, torch's module containers, numpy scalars); the persistence hook
becomes a function that returns a plain :class:`PersistentRecord` of the class name and state,
and the source is never looked at. The recorded constructor arguments give a pfdist network config, and pfdist's own
architecture-identical networks (:mod:`pfdist.nets`) receive the recorded weights.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import NonFiniteError, PFDistError
from pfdist.nets import EDM2Precond, NetSpec, Precond
from pfdist.nets.build import SCHEMAS


class UnsafePickleError(PFDistError):
    """A pickle asked for something outside the allowed globals; nothing of it was run."""


class UnsupportedSnapshotError(PFDistError):
    """A snapshot was read safely but holds a network pfdist does not implement."""


@dataclass
class PersistentRecord:
    """What ``torch_utils.persistence`` saved for one object: its class name and ``__dict__``."""

    class_name: str
    version: int
    state: dict

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class ContainerRecord:
    """A torch module container (ModuleDict, ModuleList, Sequential) as recorded state only."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.state: dict = {}

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"a module container carries a {type(state).__name__}, not its state dict.")
        self.state = state


class _EasyDict(dict):
    """EDM's ``dnnlib.EasyDict`` (a dict with attribute access) read as a plain dict."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise UnsafePickleError("a torch_utils.persistence record is malformed (expected type 'class' and a state dict).")
    return PersistentRecord(str(meta.get("class_name")), int(meta.get("version", 0)), meta["state"])


def _load_storage(data: Any):
    """A storage saved by torch (``storage.__reduce__``), read by torch's weights-only loader."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"a tensor storage record holds a {type(data).__name__}, not bytes.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation
        storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"a tensor storage record decoded to a {type(storage).__name__}.")
    return storage


def _no_hooks(hooks: Any) -> None:
    if hooks:
        raise UnsafePickleError("a tensor in the pickle carries backward hooks; pfdist refuses callables in data.")


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, metadata=None) -> Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"a tensor record names a {type(storage).__name__} as its storage.")
    _no_hooks(hooks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, hooks, *state) -> Tensor:
    if not isinstance(data, Tensor):
        raise UnsafePickleError(f"a parameter record holds a {type(data).__name__}, not a tensor.")
    _no_hooks(hooks)
    return data


def _numpy_dtype(*args):
    import numpy as np

    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError("a numpy object dtype appears in the pickle; only numeric scalars are allowed.")
    return dtype


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError("a numpy scalar in the pickle is not a plain numeric value.")
    return np.frombuffer(data, dtype=dtype)[0].copy()


class _NDArrayType:
    """Stands for ``numpy.ndarray`` as the class argument of numpy's array reconstructor; never built."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise UnsafePickleError("the pickle calls numpy.ndarray directly; only numeric arrays are read.")


class ArrayRecord:
    """A numeric numpy array in the pickle (``ndarray.__reduce__``), read from its raw bytes only."""

    def __init__(self, shape: tuple):
        self.array = None

    def __setstate__(self, state: Any) -> None:
        import numpy as np

        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)
                and isinstance(state[4], (bytes, bytearray)) and not state[2].hasobject):
            raise UnsafePickleError("a numpy array in the pickle is not a plain numeric array.")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise UnsafePickleError("a numpy array in the pickle has a malformed shape.")
        try:
            flat = np.frombuffer(bytes(data), dtype=dtype)
            self.array = flat.reshape(shape, order="F" if fortran else "C").copy()
        except ValueError as e:
            raise UnsafePickleError(f"a numpy array in the pickle does not fit its shape ({e}).") from None


def _numpy_reconstruct(cls: Any, shape: Any = (0,), typecode: Any = b"b") -> ArrayRecord:
    if cls is not _NDArrayType:
        raise UnsafePickleError("numpy's array reconstructor is asked for a class other than ndarray.")
    return ArrayRecord(shape)


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch.nn.modules.container", "ModuleDict"): ContainerRecord,
    ("torch.nn.modules.container", "ModuleList"): ContainerRecord,
    ("torch.nn.modules.container", "Sequential"): ContainerRecord,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``; anything else stops unpickling before it is called."""

    def __init__(self, file, name: str):
        super().__init__(file)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.name} asks for {module}.{name}, which is not an EDM network snapshot's content; "
                "pfdist refused it and ran nothing from the file. Only load snapshots you trust, and "
                "convert them once with `pfdist convert`."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.name} uses pickle persistent ids ({type(pid).__name__}); "
                                "it is a torch.save file, not an EDM snapshot.")


def read_snapshot(path: str | os.PathLike) -> Any:
    """The snapshot's top-level object, with every persistent module as a :class:`PersistentRecord`."""
    path = checks.existing_file(path, "EDM snapshot", "give an EDM network-snapshot-*.pkl file")
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except PFDistError:
            raise
        except Exception as e:  # truncated or foreign files raise many pickle/torch error types
            raise PFDistError(f"{path} is not a readable EDM snapshot ({type(e).__name__}: {e}).") from None


# EDM's preconditioner classes: pfdist name, and their own parameters in constructor order.
_PRECONDS = {
    "EDMPrecond": ("edm", ("sigma_min", "sigma_max", "sigma_data"), "DhariwalUNet"),
    "VPPrecond": ("vp", ("beta_d", "beta_min", "M", "epsilon_t"), "SongUNet"),
    "VEPrecond": ("ve", ("sigma_min", "sigma_max"), "SongUNet"),
    "iDDPMPrecond": ("iddpm", ("C_1", "C_2", "M"), "DhariwalUNet"),
}
_ARCHS = {"SongUNet": "songunet", "DhariwalUNet": "dhariwal"}
_LAYERS = {"Linear", "Conv2d", "GroupNorm", "UNetBlock", "PositionalEmbedding", "FourierEmbedding"}


def _plain(value: Any) -> Any:
    """JSON-ready copies of recorded arguments (numpy scalars become Python numbers)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, Tensor):
        return value.item()
    return value


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
    kwargs = _plain({**dict(zip(names, net.init_args)), **net.init_kwargs})
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


def _collect_state(record: Any, prefix: str, out: dict[str, Tensor], *, allowed: set[str] | None = None) -> None:
    """Parameters and persistent buffers of a record tree, under state_dict key names."""
    allowed = _LAYERS | set(_ARCHS) | set(_PRECONDS) if allowed is None else allowed
    if isinstance(record, PersistentRecord):
        if record.class_name not in allowed:
            raise UnsupportedSnapshotError(f"the snapshot's network contains a {record.class_name}, "
                                           "which pfdist does not implement.")
        state = record.state
    elif isinstance(record, ContainerRecord):
        state = record.state
    else:
        raise UnsupportedSnapshotError(f"the snapshot's network contains a {type(record).__name__} at {prefix!r}.")
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (state.get(kind) or {}).items():
            if tensor is not None and name not in skip:
                if not isinstance(tensor, Tensor):
                    raise UnsupportedSnapshotError(f"the snapshot's {prefix}{name} is a {type(tensor).__name__}, not a tensor.")
                out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _collect_state(child, f"{prefix}{name}.", out, allowed=allowed)


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
    from pfdist.models.edm2 import edm2_network, is_edm2

    if is_edm2(obj):
        return edm2_network(obj, str(path), dtype=dtype).to(device)
    if dtype not in (None, torch.float32, torch.float64):
        raise PFDistError(f"dtype={dtype} for the EDM network in {path}: EDM networks load in float32 or float64; "
                          "run them in lower precision with pfd(..., autocast=torch.bfloat16).")
    net_record = network_record(obj)
    config = edm_config(net_record)
    state: dict[str, Tensor] = {}
    _collect_state(net_record, "", state)
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
