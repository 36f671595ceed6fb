"""Data that ship with pfdist (or with its optional extras), and packaged models by name."""

from pathlib import Path

import torch
from torch import Tensor

from pfdist.data.digits import DIGITS_TEACHER, digits_mixture, load_digit_labels, load_digits, ppca
from pfdist.errors import PFDistError

PREFIX = "pfdist:"
# Real training sets by name: a loader returning (N, *shape) in a fixed order.
REAL_DATA = {"digits": load_digits}
PACKAGED = {"digits-unet": DIGITS_TEACHER}


def packaged_path(name: str) -> Path:
    """The file of a model shipped inside pfdist, named ``pfdist:<name>`` (e.g. ``pfdist:digits-unet``)."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in PACKAGED:
        raise PFDistError(f"no packaged model {name!r}; choose one of {[PREFIX + k for k in PACKAGED]}.")
    path = PACKAGED[key]
    if not path.is_file():
        raise PFDistError(f"the packaged model {PREFIX + key} is missing from this install ({path}); "
                          "reinstall pfdist or retrain it with `pfdist teacher digits`.")
    return path


def real_data(name: str) -> Tensor:
    """The real training set ``name`` (see ``REAL_DATA``) in a fixed shuffled order, so that its first N
    items are a nested random subset: ``(N_total, *shape)`` float32."""
    if name not in REAL_DATA:
        raise PFDistError(f"unknown real data {name!r}; choose one of {sorted(REAL_DATA)}.")
    data = REAL_DATA[name]()
    order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    return data[order]


__all__ = ["DIGITS_TEACHER", "PACKAGED", "PREFIX", "REAL_DATA", "real_data", "digits_mixture", "load_digit_labels", "load_digits",
           "packaged_path", "ppca"]
