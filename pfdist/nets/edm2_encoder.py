"""What an EDM2 network says about its data space: its encoder's class and constants, as data.

EDM2 snapshots record an ``encoder`` (``StandardRGBEncoder`` for pixels, ``StabilityVAEEncoder``
for a VAE's latents); pfdist keeps it as an :class:`EncoderRecord` on the network (``encoder``,
``data_space``), writes it into a saved checkpoint's JSON config and reads it back from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pfdist import checks
from pfdist.errors import PFDistError
from pfdist.hashing import content_hash

ENCODERS = ("StandardRGBEncoder", "StabilityVAEEncoder")


@dataclass(frozen=True)
class EncoderRecord:
    """What an EDM2 snapshot says about its data space: the encoder's class and constants.

    ``scale``, ``bias``: per-channel (C,) maps raw VAE latents -> final latents, x * scale + bias;
    ``vae_name``: the VAE the latents belong to; ``batch_size``: EDM2's VAE batch.
    """

    class_name: str
    vae_name: str | None = None
    scale: tuple[float, ...] | None = None
    bias: tuple[float, ...] | None = None
    batch_size: int = 8

    def fingerprint(self) -> str:
        return content_hash("edm2-encoder/v1", dataclasses.asdict(self))

    @property
    def data_space(self) -> str:
        if self.class_name == "StandardRGBEncoder":
            return "rgb"
        return f"latent:{self.vae_name}:scale={list(self.scale)}:bias={list(self.bias)}"

    def to_dict(self) -> dict:
        """The record as JSON data (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Any, where: str) -> "EncoderRecord":
        """The record written by :meth:`to_dict`, every field checked; ``where`` names its file."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(record, dict) or record.get("class_name") not in ENCODERS or set(record) - fields:
            raise PFDistError(f"{where}: 'encoder' must be an EDM2 encoder record {{\"class_name\": one of "
                              f"{list(ENCODERS)}, ...}} with the fields {sorted(fields)}; got {record!r}.")
        if record["class_name"] == "StandardRGBEncoder":
            return cls("StandardRGBEncoder")
        vae_name, batch_size = record.get("vae_name"), record.get("batch_size", 8)
        scale, bias = (_vector(record.get(k), k, where) for k in ("scale", "bias"))
        if not isinstance(vae_name, str) or not vae_name:
            raise PFDistError(f"{where}: the StabilityVAEEncoder record names no vae_name.")
        checks.integer(f"{where}: the encoder's batch_size", batch_size, lo=1)
        if len(scale) != len(bias) or 0.0 in scale:
            raise PFDistError(f"{where}: the encoder's scale and bias must be non-zero vectors of one length.")
        return cls("StabilityVAEEncoder", vae_name, scale, bias, batch_size)


def _vector(value: Any, name: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise PFDistError(f"{where}: the encoder's {name} must be a list of finite numbers (got {value!r}).")
    return tuple(checks.real(f"{where}: the encoder's {name}[{i}]", v) for i, v in enumerate(value))
