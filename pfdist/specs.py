"""Distributions and models described in files (the CLI's ``A`` and ``B``).

A spec is one of

* a JSON file ``{"type": ..., ...}`` with
  - ``"gaussian"``: ``mean`` (nested list, any shape), ``cov`` (d x d);
  - ``"gaussian_mixture"``: ``weights`` (K), ``means`` (K, *shape), and ``covs`` (K, d, d) or
    ``factors`` (K, d, r) with optional ``noise_std``;
  - ``"low_rank_mixture"``: ``shape``, ``num_components``, ``rank`` and optional ``scale``,
    ``mean_scale``, ``noise_std``, ``seed`` (a random mixture of low-rank Gaussians);
  - ``"empirical"``: ``data``, a safetensors file (relative to the JSON) holding ``data``
    (N, *shape);
  - ``"digits_mixture"``: optional ``rank`` (default 8): the exact mixture fitted to
    scikit-learn's digits (:func:`pfdist.data.digits_mixture`);
  Tensor fields may instead live in a safetensors file named by ``"tensors"``.
* a ``.safetensors`` file whose metadata has ``pfdist_type`` (one of the types above) and whose
  tensors are the fields (see :func:`save_distribution`);
* a trained network: a directory or ``.json`` written by ``pfdist.training`` (loaded by
  :func:`pfdist.training.load_denoiser`), or by ``pfdist convert`` (``model.safetensors``);
* an EDM snapshot ``.pkl``, read without running its code (:func:`pfdist.models.edm.load_edm`);
* a diffusers ``save_pretrained`` directory (see :func:`pfdist.models.diffusers_load.load_diffusers`),
  or a JSON file ``{"type": "diffusers", "model": DIR, "conditioning": FILE}`` naming one with
  a safetensors file of its conditioning (tensors named as the network's forward arguments:
  ``encoder_hidden_states``, ``pooled_projections``, ``class_labels``; batch 1), and optionally
  ``"guidance": {"weight": w, "conditioning": NULL_FILE}``: classifier-free guidance as the
  diffusers pipelines do it (:func:`pfdist.guided` of the two conditionings). Paths are relative
  to the JSON file;
* a JSON file ``{"type": "edm", "path": SNAPSHOT}`` naming an EDM or EDM2 snapshot (``.pkl``, or a
  directory / ``.json`` written by ``pfdist convert``), optionally with
  ``"guidance": {"guide": SNAPSHOT, "weight": w}`` (:func:`pfdist.guided`: classifier-free guidance
  with an unconditional guide, autoguidance with a smaller one), ``"vae": DIR`` (the output is
  decoded to images by :func:`pfdist.load_edm_decoder`; ``"vae": "rgb"`` for a pixel-space EDM2
  snapshot) and ``"class_label": c`` (one class instead of a label drawn per seed). Paths are
  relative to the JSON file. With ``vae`` or ``class_label`` the spec is a map, not a denoiser:
  :func:`load_map` (``pfdist distance``) builds it on the comparison's grid;
* a ``.pt2`` program written by ``pfdist export`` (a program: trust it; see :mod:`pfdist.models.export`);
* ``pfdist:<name>``: a model shipped inside pfdist (``pfdist:digits-unet``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pfdist import checks
from pfdist.atomic import atomic_save_tensors
from pfdist.denoisers import EmpiricalDenoiser, Gaussian, GaussianMixture, random_low_rank_mixture
from pfdist.errors import PFDistError
from pfdist.ode import data_shape  # noqa: F401  (the one shape look-up; re-exported for the CLI)
from pfdist.settings import FlowSettings

TYPES = ("gaussian", "gaussian_mixture", "low_rank_mixture", "empirical", "digits_mixture")


def _read_tensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    checks.existing_file(path, "tensor file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise PFDistError(f"{path} is not a readable safetensors file ({e}).") from None


FIELDS = {
    "gaussian": ({"mean", "cov"}, set()),
    "gaussian_mixture": ({"weights", "means"}, {"covs", "factors", "noise_std"}),
    "low_rank_mixture": ({"shape", "num_components", "rank"}, {"scale", "mean_scale", "noise_std", "seed", "weights"}),
    "empirical": ({"data"}, set()),
    "digits_mixture": (set(), {"rank"}),
}


def inside(base_dir: Path, name: Any, what: str) -> Path:
    """``base_dir / name`` for a relative ``name`` that stays inside ``base_dir`` (no absolute path, no ``..``)."""
    if not isinstance(name, str) or not name:
        raise PFDistError(f"{what} must be a file name, got {name!r}.")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise PFDistError(f"{what} {name!r} must be a path inside {base_dir} (relative, without '..').")
    return base_dir / rel


def build_distribution(spec: dict, base_dir: Path = Path(".")) -> Any:
    """An exact distribution from a spec dict (see the module docstring); every field is checked."""
    if not isinstance(spec, dict):
        raise PFDistError(f"a distribution spec must be a JSON object, got {type(spec).__name__}.")
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in TYPES:
        raise PFDistError(f"spec type must be one of {TYPES}; got {kind!r}.")
    if "tensors" in spec:
        tensors, _ = _read_tensors(inside(base_dir, spec.pop("tensors"), "'tensors'"))
        spec.update(tensors)
    required, optional = FIELDS[kind]
    missing = sorted(required - set(spec))
    if missing:
        raise PFDistError(f"a {kind!r} spec needs the field {missing[0]!r}.")
    unknown = sorted(set(spec) - required - optional)
    if unknown:
        raise PFDistError(f"a {kind!r} spec has unknown fields {unknown}; valid: {sorted(required | optional)}.")
    t = checks.tensor
    if kind == "gaussian":
        return Gaussian(t("mean", spec["mean"]), t("cov", spec["cov"], ndim=2))
    if kind == "gaussian_mixture":
        if ("covs" in spec) == ("factors" in spec):
            raise PFDistError("a 'gaussian_mixture' spec needs exactly one of 'covs' (K, d, d) or 'factors' (K, d, r).")
        covs = t("covs", spec["covs"], ndim=3) if "covs" in spec else None
        factors = t("factors", spec["factors"], ndim=3) if "factors" in spec else None
        noise_std = spec.get("noise_std", 0.0)
        noise_std = t("noise_std", noise_std) if isinstance(noise_std, (list, torch.Tensor)) else noise_std
        return GaussianMixture(t("weights", spec["weights"], ndim=1), t("means", spec["means"]), covs,
                               factors=factors, noise_std=noise_std)
    if kind == "low_rank_mixture":
        weights = t("weights", spec["weights"], ndim=1) if "weights" in spec else None
        return random_low_rank_mixture(
            spec["shape"], spec["num_components"], spec["rank"], scale=spec.get("scale", 1.0),
            mean_scale=spec.get("mean_scale", 0.0), noise_std=spec.get("noise_std", 0.0),
            seed=spec.get("seed", 0), weights=weights,
        )
    if kind == "digits_mixture":
        from pfdist.data import digits_mixture

        rank = spec.get("rank", 8)
        checks.integer("a 'digits_mixture' spec's rank", rank)
        return digits_mixture(rank)
    data = spec["data"]
    if isinstance(data, str):
        tensors = _read_tensors(inside(base_dir, data, "'data'"))[0]
        if "data" not in tensors:
            raise PFDistError(f"{base_dir / data} holds no tensor named 'data' (it has {sorted(tensors)}).")
        data = tensors["data"]
    return EmpiricalDenoiser(t("data", data, dtype=torch.float32))


def save_distribution(dist: Any, path: str | os.PathLike) -> Path:
    """Write an exact distribution as a self-describing safetensors file (atomic)."""
    if isinstance(dist, Gaussian):
        kind, tensors = "gaussian", {"mean": dist.mean.reshape(dist.shape), "cov": dist.cov}
    elif isinstance(dist, GaussianMixture):
        factors = dist.eigvecs * (dist.eigvals - dist.iso[:, None]).clamp_min(0).sqrt()[:, None, :]
        kind = "gaussian_mixture"
        tensors = {"weights": dist.log_weights.exp(), "means": dist.means.reshape(-1, *dist.shape),
                   "factors": factors, "noise_std": dist.iso.sqrt()}
    elif isinstance(dist, EmpiricalDenoiser):
        kind, tensors = "empirical", {"data": dist.data.reshape(-1, *dist.shape)}
    else:
        raise PFDistError(f"cannot save a {type(dist).__name__}; save networks with pfdist.training.")
    return atomic_save_tensors(path, tensors, metadata={"pfdist_type": kind})


def load_spec(path: str | os.PathLike) -> Any:
    """A denoiser from a spec file or a trained network (see the module docstring), or a model
    shipped with pfdist by name (``pfdist:digits-unet``)."""
    from pfdist.data import PREFIX, packaged_path

    if os.fspath(path).startswith(PREFIX):
        path = packaged_path(os.fspath(path))
    path = Path(path)
    if not path.exists():
        raise PFDistError(f"{path} does not exist; give a distribution file (.json, .safetensors) or a checkpoint.")
    if distilled_student(path) is not None:
        raise PFDistError(f"{path} is a distilled student, a few-step map and not a denoiser: compare it with "
                          "`pfdist distance` or load it with pfdist.load_distilled.")
    if path.is_dir():
        from pfdist.models.diffusers_load import is_diffusers_dir, load_diffusers

        return load_diffusers(path) if is_diffusers_dir(path) else _load_network_dir(path)
    if path.suffix == ".pkl":
        from pfdist.models.edm import load_edm

        return load_edm(path)
    if path.suffix == ".pt2":
        from pfdist.models.export import load_exported

        return load_exported(path)
    if path.suffix == ".safetensors":
        tensors, meta = _read_tensors(path)
        kind = meta.get("pfdist_type")
        if kind is not None:
            return _from_tensors(kind, tensors)
        if path.with_suffix(".json").is_file():
            from pfdist.training import load_denoiser

            return load_denoiser(path)
        raise PFDistError(f"{path} has no 'pfdist_type' metadata and no .json config beside it; "
                          "write distributions with pfdist.specs.save_distribution.")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PFDistError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(spec, dict):
        raise PFDistError(f"{path} must hold a JSON object with a 'type' field.")
    if spec.get("type") == "diffusers":
        return _diffusers_spec(spec, path)
    if spec.get("type") == "edm":
        denoiser, decoder, class_label = _edm_spec(spec, path)
        if decoder is not None or class_label is not None:
            raise PFDistError(f"{path}: an 'edm' spec with 'vae' or 'class_label' is a map (decoded images, one class), "
                              "not a denoiser; use it with `pfdist distance` (pfdist.specs.load_map), or drop those "
                              "fields for the denoiser.")
        return denoiser
    if spec.get("kind") == "pfdist.denoiser":
        from pfdist.training import load_denoiser

        return load_denoiser(path.with_suffix(".safetensors"))
    return build_distribution(spec, path.parent)


def load_map(path: str | os.PathLike, flow: FlowSettings | None = None) -> Any:
    """What ``pfdist distance`` compares: :func:`load_spec`'s denoiser, or for an ``"edm"`` spec with
    ``vae`` / ``class_label`` its ODE map on ``flow``'s grid, decoded and with that class."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        try:
            spec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            spec = None  # load_spec says what is wrong
        if isinstance(spec, dict) and spec.get("type") == "edm":
            from pfdist.maps import ode_map

            denoiser, decoder, class_label = _edm_spec(spec, path)
            if decoder is None and class_label is None:
                return denoiser
            return ode_map(denoiser, flow, class_labels=class_label, decoder=decoder)
    return load_spec(path)


def _load_network_dir(path: Path) -> Any:
    """A converted model (model.safetensors), a student's final student.safetensors, else the EMA
    weights of its training checkpoint."""
    from pfdist.nets import build_network
    from pfdist.training import has_checkpoint, load_checkpoint, load_denoiser

    for name in ("model.safetensors", "student.safetensors"):
        if (path / name).is_file():
            return load_denoiser(path / name)
    if has_checkpoint(path):
        ckpt = load_checkpoint(path)
        net = build_network(ckpt.info["net_config"])
        net.load_state_dict(ckpt.ema)
        return net.eval().requires_grad_(False)
    raise PFDistError(f"{path} holds no model.safetensors, student.safetensors or training checkpoint.")


def distilled_student(path: str | os.PathLike) -> Path | None:
    """The student file of a student saved by ``pfdist.distill`` (a directory or its
    ``student.safetensors``, whose JSON has a ``distill`` record), else None."""
    path = Path(path)
    if path.is_dir():
        path = path / "student.safetensors"
    if path.suffix != ".safetensors" or not path.with_suffix(".json").is_file():
        return None
    try:
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8")).get("info")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None  # not a student's JSON: the loaders say what is wrong
    return path if isinstance(info, dict) and "distill" in info else None


def _from_tensors(kind: str, tensors: dict) -> Any:
    if kind not in TYPES:
        raise PFDistError(f"'pfdist_type' metadata must be one of {TYPES}; got {kind!r}.")
    return build_distribution({"type": kind, **tensors})


DIFFUSERS_FIELDS = ("model", "conditioning", "guidance")


def _diffusers_spec(spec: dict, path: Path) -> Any:
    """A diffusers directory with its conditioning file(s), guided or not (see the module docstring)."""
    from pfdist.guidance import guided
    from pfdist.models.diffusers_conditioning import read_conditioning
    from pfdist.models.diffusers_load import adapt, load_network

    unknown = sorted(set(spec) - {"type", *DIFFUSERS_FIELDS})
    if unknown or "model" not in spec:
        raise PFDistError(f"{path}: a 'diffusers' spec has the fields {list(DIFFUSERS_FIELDS)} ('model' required); "
                          f"got {sorted(spec)}.")
    guidance = spec.get("guidance")
    if guidance is not None and (not isinstance(guidance, dict) or sorted(guidance) != ["conditioning", "weight"]):
        raise PFDistError(f"{path}: 'guidance' must be {{\"weight\": w, \"conditioning\": FILE}}, FILE the "
                          f"embeddings of the null (or negative) prompt; got {guidance!r}.")
    weight = checks.real(f"{path}: guidance weight", guidance["weight"]) if guidance else None
    files = {"conditioning": spec.get("conditioning"), "guidance conditioning": guidance and guidance["conditioning"]}
    files = {k: inside(path.parent, v, f"{path}: '{k}'") for k, v in files.items() if v is not None}
    tensors = {k: read_conditioning(f) for k, f in files.items()}  # refused before any weights are read
    model, scheduler = load_network(inside(path.parent, spec["model"], f"{path}: 'model'"))

    def denoiser(key: str) -> Any:
        where = f"{path}: conditioning file {files[key]}" if key in files else f"{path}"
        return adapt(model, scheduler, tensors.get(key), where=where)

    net = denoiser("conditioning")
    return guided(net, denoiser("guidance conditioning"), weight) if guidance else net



EDM_FIELDS = ("path", "guidance", "vae", "class_label")


def _edm_spec(spec: dict, path: Path) -> tuple[Any, Any, int | None]:
    """An EDM/EDM2 snapshot spec as (denoiser, decoder or None, class label or None); every field
    is checked, and every named file found, before any weights are read."""
    from pfdist.guidance import guided
    from pfdist.models.edm2_decoder import load_edm_decoder

    unknown = sorted(set(spec) - {"type", *EDM_FIELDS})
    if unknown or "path" not in spec:
        raise PFDistError(f"{path}: an 'edm' spec has the fields {list(EDM_FIELDS)} ('path' required); got {sorted(spec)}.")
    base = path.parent

    def existing(name: Any, what: str) -> Path:
        where = inside(base, name, f"{path}: {what!r}")
        if not where.exists():
            raise PFDistError(f"{path}: {what!r} names {where}, which does not exist.")
        return where

    snapshot = existing(spec["path"], "path")
    guidance = spec.get("guidance")
    if guidance is not None and (not isinstance(guidance, dict) or sorted(guidance) != ["guide", "weight"]):
        raise PFDistError(f"{path}: 'guidance' must be {{\"guide\": SNAPSHOT, \"weight\": w}} (an unconditional guide: "
                          f"classifier-free guidance; a smaller model: autoguidance); got {guidance!r}.")
    weight = checks.real(f"{path}: guidance weight", guidance["weight"]) if guidance else None
    guide = existing(guidance["guide"], "guidance guide") if guidance else None
    vae = spec.get("vae")
    vae = None if vae is None else "rgb" if vae == "rgb" else existing(vae, "vae")
    class_label = spec.get("class_label")
    if class_label is not None:
        checks.integer(f"{path}: 'class_label'", class_label, lo=0, fix="a class index")
    try:
        decoder = None if vae is None else load_edm_decoder(snapshot, vae=None if vae == "rgb" else vae)
        net = _edm_network(snapshot)
        denoiser = net if guide is None else guided(net, _edm_network(guide), weight)
        if class_label is not None and not class_label < (getattr(denoiser, "label_dim", 0) or 0):
            raise PFDistError(f"'class_label' {class_label} is not a class of {snapshot.name} "
                              f"(label_dim {getattr(denoiser, 'label_dim', 0) or 0}).")
    except PFDistError as e:
        raise PFDistError(f"{path}: {e}") from None
    return denoiser, decoder, class_label


def _edm_network(where: Path) -> Any:
    """A snapshot ``.pkl`` through :func:`pfdist.load_edm`, or a checkpoint written by ``pfdist convert``."""
    from pfdist.models.edm import load_edm
    from pfdist.training import load_denoiser

    if where.suffix == ".pkl":
        return load_edm(where)
    if where.is_dir():
        return _load_network_dir(where)
    if where.suffix in (".json", ".safetensors"):
        return load_denoiser(where.with_suffix(".safetensors"))
    raise PFDistError(f"{where} is neither an EDM/EDM2 snapshot (.pkl) nor a checkpoint written by pfdist convert.")
