"""EDM snapshots: real EDM pickles against EDM's own outputs, refusal of pickles that run code,
and snapshots of other configurations written in EDM's persistence format."""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pfdist
from edm_fixtures import FIXTURES, needs_fixtures, rel_rms
from pfdist.errors import PFDistError
from pfdist import load_edm
from pfdist.models.edm import network_record
from pfdist.models.snapshot import UnsafePickleError, read_snapshot
from pfdist.nets import build_network, normalize_config
from pfdist.specs import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["ddpmpp-vp-uncond", "ncsnpp-ve-cond", "ddpmpp-edm-uncond", "adm-edm-cond"]


@needs_fixtures
@pytest.mark.parametrize("name", NAMES)
def test_fixture_matches_edm_outputs_at_every_sigma(name):
    io = load_file(FIXTURES / f"{name}-io.safetensors")
    net = load_edm(FIXTURES / f"{name}.pkl")
    with torch.no_grad():
        out = net(io["x"], io["sigma"], io.get("class_labels"))
    err = rel_rms(out, io["out"])
    assert err.max() <= 1e-4, dict(zip(io["sigma"].tolist(), err.tolist()))
    # The noise range and labels are EDM's (its recorded attributes, computed there in float32).
    record = network_record(read_snapshot(FIXTURES / f"{name}.pkl")).state
    assert net.sigma_min == pytest.approx(float(record["sigma_min"]), rel=3e-2)
    assert net.sigma_max == pytest.approx(float(record["sigma_max"]), rel=1e-5)
    assert net.label_dim == record["label_dim"] and not net.training


@needs_fixtures
def test_fixture_outputs_depend_on_the_network():
    """The check above can fail: other weights of the same architecture miss EDM's outputs."""
    io = load_file(FIXTURES / "ddpmpp-edm-uncond-io.safetensors")
    net = load_edm(FIXTURES / "ddpmpp-edm-uncond.pkl")
    with torch.no_grad():
        net.model.enc["16x16_block0"].conv1.weight.mul_(1.01)
        out = net(io["x"], io["sigma"])
    assert rel_rms(out, io["out"])[2:].min() > 1e-4


class _Evil:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("make", [
    lambda marker: _Evil(os.system, f"touch {marker}"),
    lambda marker: _Evil(eval, f"open({str(marker)!r}, 'w').write('ran')"),
    lambda marker: {"ema": None, "x": [torch.zeros(2), _Evil(exec, f"open({str(marker)!r}, 'w')")]},
    lambda marker: _Evil(collections.OrderedDict, [("k", _Evil(os.system, f"touch {marker}"))]),
])
def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, make):
    marker = tmp_path / "marker"
    path = tmp_path / "network-snapshot-evil.pkl"
    path.write_bytes(pickle.dumps(make(marker)))
    with pytest.raises(UnsafePickleError, match=r"asks for (posix|os|nt|builtins)\.(system|eval|exec).*ran nothing"):
        load_edm(path)
    assert not marker.exists()
    with pytest.raises(PFDistError, match="refused"):
        pfdist.load_edm(path)


class Anything:  # a class of the test module: unknown to the loader
    pass


def test_foreign_and_broken_files_are_clear_errors(tmp_path):
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps({"ema": Anything()}))
    with pytest.raises(UnsafePickleError, match="Anything"):
        load_edm(path)
    path.write_bytes(pickle.dumps({"ema": 3})[:-4])
    with pytest.raises(PFDistError, match="not a readable EDM snapshot"):
        load_edm(path)
    path.write_bytes(pickle.dumps({"ema": 3}))
    with pytest.raises(PFDistError, match="no EDM network"):
        load_edm(path)
    with pytest.raises(PFDistError, match="does not exist"):
        load_edm(tmp_path / "missing.pkl")


# -- Snapshots of other configurations, written in EDM's persistence format by the test ------------

_PRECOND_CLASS = {"edm": "EDMPrecond", "vp": "VPPrecond", "ve": "VEPrecond", "iddpm": "iDDPMPrecond"}
_PRECOND_KEYS = {"edm": ("sigma_data", "sigma_min", "sigma_max"), "vp": ("beta_d", "beta_min", "M", "epsilon_t"),
                 "ve": ("sigma_min", "sigma_max"), "iddpm": ("C_1", "C_2", "M")}


def _reconstruct_persistent_obj(meta):  # stands in for EDM's function while the test pickles
    raise AssertionError("never called")


class _Persistent:
    """Pickles like an EDM ``persistent_class`` instance: _reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name: str, state: dict):
        self.meta = dict(type="class", version=6, module_src="raise SystemExit('never run')",
                         class_name=class_name, state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def _as_edm(module: torch.nn.Module, init_kwargs: dict | None = None):
    if isinstance(module, torch.nn.ModuleDict):
        container = torch.nn.ModuleDict()
        container.__dict__["_modules"] = collections.OrderedDict((k, _as_edm(v)) for k, v in module.items())
        return container
    state = {
        "_parameters": collections.OrderedDict((k, v) for k, v in module._parameters.items()),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_modules": collections.OrderedDict((k, None if v is None else _as_edm(v)) for k, v in module._modules.items()),
        "_init_args": (), "_init_kwargs": init_kwargs or {}, "training": False,
    }
    return _Persistent(type(module).__name__, state)


def write_edm_snapshot(net, path: Path, monkeypatch) -> None:
    """``net`` (a pfdist SongUNet/DhariwalUNet network) as an EDM training snapshot."""
    c = net.config
    kwargs = {"img_resolution": c["shape"][1], "img_channels": c["shape"][0],
              "model_type": {"songunet": "SongUNet", "dhariwal": "DhariwalUNet"}[c["arch"]]}
    kwargs.update({k: (math.inf if v is None else v) for k, v in c.items() if k in _PRECOND_KEYS[c["precond"]]})
    kwargs.update({k: v for k, v in c.items() if k not in ("arch", "precond", "shape", *_PRECOND_KEYS[c["precond"]])})
    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake)
    monkeypatch.setattr(_reconstruct_persistent_obj, "__module__", "torch_utils.persistence")
    top = _as_edm(net, kwargs)
    top.meta["class_name"] = _PRECOND_CLASS[c["precond"]]
    path.write_bytes(pickle.dumps({"ema": top, "loss_fn": None, "augment_pipe": None,
                                   "dataset_kwargs": {"resolution": c["shape"][1]}}))


OTHER_CONFIGS = [
    {"arch": "songunet", "shape": [1, 8, 8], "model_channels": 4, "channel_mult": [1, 2], "num_blocks": 2,
     "attn_resolutions": [4], "precond": "edm", "sigma_data": 0.25},
    {"arch": "songunet", "shape": [2, 32, 32], "model_channels": 8, "channel_mult": [1, 1, 2, 2], "num_blocks": 1,
     "attn_resolutions": [16, 4], "label_dim": 5, "augment_dim": 3, "precond": "vp", "beta_d": 10.0},
    {"arch": "songunet", "shape": [3, 16, 16], "model_channels": 6, "channel_mult": [2, 3], "num_blocks": 3,
     "attn_resolutions": [], "embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "skip",
     "decoder_type": "skip", "resample_filter": [1, 3, 3, 1], "precond": "ve", "sigma_max": 50.0},
    {"arch": "dhariwal", "shape": [4, 16, 16], "model_channels": 64, "channel_mult": [1, 2, 1], "num_blocks": 1,
     "attn_resolutions": [8], "label_dim": 7, "precond": "iddpm"},
    {"arch": "dhariwal", "shape": [3, 8, 8], "model_channels": 8, "channel_mult": [1, 3], "num_blocks": 2,
     "attn_resolutions": [8], "augment_dim": 2, "precond": "edm", "sigma_min": 0.01, "sigma_max": 60.0},
]


@pytest.mark.parametrize("config", OTHER_CONFIGS, ids=lambda c: f"{c['arch']}-{c['precond']}-{c['shape'][1]}")
def test_other_configurations_load_from_edm_format(config, tmp_path, monkeypatch):
    net = build_network(config, seed=1).eval()
    with torch.no_grad():  # perturb so that zero-initialised layers matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "network-snapshot-000000.pkl"
    write_edm_snapshot(net, path, monkeypatch)
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")  # the loader must not need it
    loaded = load_edm(path)
    assert loaded.config == normalize_config(config) and type(loaded) is type(net)
    assert (loaded.sigma_min, loaded.sigma_max, loaded.label_dim) == (net.sigma_min, net.sigma_max, net.label_dim)
    c, r = config["shape"][0], config["shape"][1]
    x = torch.randn(3, c, r, r)
    labels = torch.eye(config.get("label_dim", 0))[:3] if config.get("label_dim") else None
    # Through the converter's files (safetensors + JSON) and back.
    converted = load_spec(pfdist.save_denoiser(tmp_path / "model.safetensors", loaded))
    for sigma in (0.01, 1.0, 40.0):
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, sigma, labels), net(x, sigma, labels), rtol=0, atol=0)
            torch.testing.assert_close(converted(x, sigma, labels), net(x, sigma, labels), rtol=0, atol=0)
    assert json.loads(json.dumps(loaded.config)) == loaded.config


def test_snapshot_asking_for_a_huge_network_is_refused_before_building_it(tmp_path, monkeypatch):
    net = build_network(OTHER_CONFIGS[0], seed=1).eval()
    net.config = {**net.config, "model_channels": 65_536}  # its arguments describe ~4e12 weights, the file holds 1e4
    path = tmp_path / "network-snapshot-000000.pkl"
    write_edm_snapshot(net, path, monkeypatch)
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    with pytest.raises(PFDistError, match="parameters, more than the .* pfdist builds"):
        load_edm(path)
    net.config = {**net.config, "model_channels": 2048}  # buildable, but not what the file's weights fit
    write_edm_snapshot(net, path, monkeypatch)
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    with pytest.raises(PFDistError, match="do not fit the network its arguments describe"):
        load_edm(path)
