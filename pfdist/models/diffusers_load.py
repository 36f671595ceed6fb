"""diffusers ``save_pretrained`` directories as denoisers: safetensors only, nothing downloaded.

Layouts: a pipeline's directory (``model_index.json``, the network in ``unet/`` or
``transformer/``, ``scheduler/``), or a network's directory (``config.json``,
``diffusion_pytorch_model.safetensors``) with ``scheduler_config.json`` beside them. The weights
must be safetensors (a ``.bin`` file is a pickle and is refused), and every tensor of the
network the config builds must be in them with its shape (diffusers itself would leave a missing
one randomly initialised). Conditioning comes from a safetensors file of tensors named as the
network's forward arguments (:func:`pfdist.models.diffusers_conditioning.read_conditioning`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pfdist.errors import PFDistError
from pfdist.models.diffusers import INSTALL, DiffusersDenoiser, from_diffusers
from pfdist.models.diffusers_conditioning import read_conditioning

NETWORKS = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel",
            "SD3Transformer2DModel")
SUBFOLDERS = ("unet", "transformer")
WEIGHTS = "diffusion_pytorch_model.safetensors"


def is_diffusers_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a diffusers ``save_pretrained`` directory (a pipeline, or a network + scheduler)."""
    path = Path(path)
    return path.is_dir() and ((path / "model_index.json").is_file() or (path / "scheduler_config.json").is_file()
                              or any((path / sub / "config.json").is_file() for sub in SUBFOLDERS))


def _class_from_config(path: Path, base: str) -> type:
    import diffusers

    try:
        name = json.loads(path.read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PFDistError(f"{path} is not a diffusers config with a _class_name ({e}).") from None
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, getattr(diffusers, base))):
        raise PFDistError(f"{path} names {name!r}, which is not a diffusers {base}.")
    return cls


def _weight_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the safetensors weights in ``model_dir`` (headers only)."""
    from safetensors import SafetensorError, safe_open

    index = model_dir / f"{WEIGHTS}.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [WEIGHTS]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PFDistError(f"{index} is not a safetensors index with a weight_map ({e}).") from None
    shapes = {}
    for name in files:
        path = model_dir / name
        if not path.is_file():
            pickles = sorted(p.name for p in model_dir.glob("*.bin"))
            found = f"; it holds {', '.join(pickles)}, pickle weights that pfdist never reads" if pickles else ""
            raise PFDistError(f"{path} does not exist{found}. Save the model with safetensors "
                              "(save_pretrained(..., safe_serialization=True), the default).")
        try:
            with safe_open(str(path), framework="pt") as f:
                shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        except (SafetensorError, OSError, ValueError) as e:
            raise PFDistError(f"{path} is not a readable safetensors file ({e}).") from None
    return shapes


def _check_weights(model, shapes: dict[str, tuple[int, ...]], model_dir: Path) -> None:
    """Every tensor of the network its config builds is in the weights, with its shape, and nothing else."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(own) - set(shapes)), sorted(set(shapes) - set(own))
    wrong = sorted(k for k in set(own) & set(shapes) if own[k] != shapes[k])
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} tensors missing (first {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (first {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (first {wrong[0]}: {shapes[wrong[0]]} in the file, "
                 f"{own[wrong[0]]} from the config)" if wrong else ""]
        raise PFDistError(f"{model_dir / 'config.json'} disagrees with its weights {model_dir / WEIGHTS}: "
                          f"{'; '.join(p for p in parts if p)}. Save the config and the weights together.")


def _layout(path: Path) -> tuple[Path, Path]:
    """(network directory, scheduler directory) of a pipeline or network directory."""
    for sub in SUBFOLDERS:
        if (path / sub / "config.json").is_file():
            return path / sub, path / "scheduler"
    return path, path


def load_network(path: str | os.PathLike) -> tuple:
    """``(network, scheduler)`` from a diffusers directory (see the module docstring), nothing run."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise PFDistError(f"{path} is a diffusers model; {INSTALL}.") from None
    path = Path(path)
    if not path.is_dir():
        raise PFDistError(f"{path} is not a directory; give a diffusers save_pretrained directory.")
    model_dir, sched_dir = _layout(path)
    if not (sched_dir / "scheduler_config.json").is_file():
        raise PFDistError(f"{path} has no scheduler config ({sched_dir / 'scheduler_config.json'}); "
                          "save the scheduler with the model (scheduler.save_pretrained).")
    model_cls = _class_from_config(model_dir / "config.json", "ModelMixin")
    if model_cls.__name__ not in NETWORKS:
        raise PFDistError(f"{path} holds a {model_cls.__name__}; pfdist adapts {', '.join(NETWORKS)}.")
    sched_cls = _class_from_config(sched_dir / "scheduler_config.json", "SchedulerMixin")
    shapes = _weight_shapes(model_dir)
    try:
        model = model_cls.from_pretrained(model_dir, use_safetensors=True, local_files_only=True)
        scheduler = sched_cls.from_pretrained(sched_dir)
    except (OSError, ValueError, RuntimeError) as e:
        raise PFDistError(f"cannot load the diffusers model in {path} with safetensors weights: "
                          f"{model_dir / 'config.json'} and its weights disagree, or a file is damaged ({e}).") from None
    _check_weights(model, shapes, model_dir)
    return model.eval(), scheduler


def adapt(model, scheduler, conditioning: str | os.PathLike | dict | None, *, where: str,
          fractional_timesteps: bool = True) -> DiffusersDenoiser:
    """:func:`from_diffusers` with conditioning from a safetensors file or a dict; errors name ``where`` or the file."""
    tensors = read_conditioning(conditioning) if isinstance(conditioning, (str, os.PathLike)) else conditioning
    try:
        return from_diffusers(model, scheduler, fractional_timesteps=fractional_timesteps, **(tensors or {}))
    except PFDistError as e:
        where = f"conditioning file {conditioning}" if isinstance(conditioning, (str, os.PathLike)) else where
        raise PFDistError(f"{where}: {e}") from None


def load_diffusers(path: str | os.PathLike, *, conditioning: str | os.PathLike | dict | None = None,
                   fractional_timesteps: bool = True) -> DiffusersDenoiser:
    """A denoiser from a diffusers directory (see the module docstring), with safetensors weights only.

    ``conditioning``: a safetensors file (or a dict) of tensors named as the network's forward
    arguments, batch 1: ``encoder_hidden_states``, ``pooled_projections``, ``class_labels``.
    """
    if isinstance(conditioning, (str, os.PathLike)):
        read_conditioning(conditioning)  # a bad file is refused before the weights are read
    model, scheduler = load_network(path)
    return adapt(model, scheduler, conditioning, where=str(path), fractional_timesteps=fractional_timesteps)
