"""Reading ``torch_utils.persistence`` pickles (EDM and EDM2 snapshots) without running them.

A snapshot's modules were saved through ``torch_utils.persistence``: each is a call
``_reconstruct_persistent_obj(meta)`` with ``meta`` = {type, version, module_src, class_name,
state}, and unpickling it with the authors' code would execute ``module_src``. Here a restricted
unpickler resolves only a fixed list of globals (tensor and storage rebuilders, OrderedDict,
EasyDict as a dict, torch's module containers, numpy scalars and arrays); the persistence hook
becomes a function that returns a plain :class:`PersistentRecord` of the class name and state,
and the source is never looked at. :mod:`pfdist.models.edm` and :mod:`pfdist.models.edm2` turn
the records into pfdist networks.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pfdist import checks
from pfdist.errors import PFDistError

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


def plain(value: Any) -> Any:
    """JSON-ready copies of recorded arguments (numpy scalars become Python numbers)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, Tensor):
        return value.item()
    return value


def collect_state(record: Any, prefix: str, out: dict[str, Tensor], *, allowed: set[str]) -> None:
    """Parameters and persistent buffers of a record tree whose classes are all in ``allowed``,
    under state_dict key names."""
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
            collect_state(child, f"{prefix}{name}.", out, allowed=allowed)

