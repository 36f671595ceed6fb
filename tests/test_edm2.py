"""EDM2 snapshots: real EDM2 pickles against EDM2's own outputs and guided sampler, other
configurations written in EDM2's pickle format by the test, and refusal of hostile pickles."""

from __future__ import annotations

import collections
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pfdist
from edm_fixtures import EDM2_FIXTURES as FIXTURES, needs_edm2_fixtures as needs_fixtures, rel_rms
from pfdist.errors import PFDistError
from pfdist.nets import build_network, normalize_config
from pfdist.specs import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["edm2-latent-cond", "edm2-latent-cond-xs", "edm2-latent-uncond", "edm2-rgb-uncond"]


@needs_fixtures
@pytest.mark.parametrize("name", NAMES)
def test_fixture_matches_edm2_outputs_and_logvar_at_every_sigma(name):
    io = load_file(FIXTURES / f"{name}-io.safetensors")
    net = pfdist.load_edm(FIXTURES / f"{name}.pkl")
    assert net.unet.out_conv.weight.dtype == torch.float16 and not net.training  # weights as stored
    with torch.no_grad():
        out, logvar = net(io["x"], io["sigma"], io.get("class_labels"), return_logvar=True)
    assert out.dtype == torch.float32
    err = rel_rms(out, io["out"])
    assert err.max() <= 1e-4, dict(zip(io["sigma"].tolist(), err.tolist()))
    torch.testing.assert_close(logvar, io["logvar"].reshape(logvar.shape), rtol=0, atol=1e-5)
    assert net.label_dim == (10 if "cond" in name.replace("uncond", "") else 0)
    assert net.data_space == ("rgb" if "rgb" in name else net.encoder.data_space) and net.data_space.startswith(
        "rgb" if "rgb" in name else "latent:tiny-sd-vae")


@needs_fixtures
def test_fixture_outputs_depend_on_the_network_but_not_on_weight_scale():
    """The check above can fail: a small change of one weight's direction, or of the output gain,
    misses EDM2's outputs; rescaling a weight's rows does not (weights are normalised at forward time)."""
    io = load_file(FIXTURES / "edm2-latent-cond-io.safetensors")
    torch.manual_seed(0)
    for change in ("direction", "gain", "scale"):
        net = pfdist.load_edm(FIXTURES / "edm2-latent-cond.pkl")
        weight = net.unet.enc["8x8_block0"].conv_res1.weight
        with torch.no_grad():
            if change == "direction":
                weight.add_(0.1 * weight.std() * torch.randn_like(weight))
            elif change == "gain":
                net.unet.out_gain.mul_(1.01)
            else:
                weight.mul_(torch.linspace(0.5, 2.0, len(weight)).to(weight.dtype).reshape(-1, 1, 1, 1))
            err = rel_rms(net(io["x"], io["sigma"], io["class_labels"]), io["out"])
        assert (err.max() <= 1e-4) if change == "scale" else (err[3:].min() > 1e-4), (change, err)


def _sampler_case(tag: str):
    nets = {n: pfdist.load_edm(FIXTURES / f"{n}.pkl") for n in NAMES}
    if tag == "cfg":
        return "edm2-latent-cond", pfdist.guided(nets["edm2-latent-cond"], nets["edm2-latent-uncond"], 1.4)
    if tag == "autog":
        return "edm2-latent-cond", pfdist.guided(nets["edm2-latent-cond"], nets["edm2-latent-cond-xs"], 2.0)
    return "edm2-rgb-uncond", nets["edm2-rgb-uncond"]


@needs_fixtures
@pytest.mark.parametrize("tag", ["cfg", "autog", "plain"])
def test_guided_ode_map_reproduces_edm2s_sampler(tag):
    """EDM2's edm_sampler(net, noise, labels, gnet, num_steps=8, guidance=w) is pfdist's Heun-8 ODE map
    of guided(net, gnet, w) on x_T = 80 noise."""
    name, denoiser = _sampler_case(tag)
    ref = load_file(FIXTURES / f"sampler-{name}-{tag}.safetensors")
    flow = pfdist.FlowSettings(steps=8)
    with torch.no_grad():
        latents, calls = pfdist.ode_map(denoiser, flow).run(ref["noise"] * 80, ref.get("class_labels"), flow, name=tag)
    assert calls == 15 and rel_rms(latents, ref["latents"]).max() <= 1e-3
    if tag != "plain":  # the guide matters: the unguided net's latents are far from the reference
        with torch.no_grad():
            plain = pfdist.ode_map(denoiser.net, flow).run(ref["noise"] * 80, ref["class_labels"], flow, name="net")[0]
        assert rel_rms(plain, ref["latents"]).min() > 1e-2


# -- Snapshots of other configurations, written in EDM2's pickle format by the test ---------------

def _reconstruct_persistent_obj(meta):  # stands in for EDM2's function while the test pickles
    raise AssertionError("never called")


class EasyDict(dict):  # stands in for dnnlib.util.EasyDict while the test pickles
    pass


class _Persistent:
    """Pickles like a ``torch_utils.persistence`` instance: _reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name: str, state: dict):
        self.meta = dict(type="class", version=6, module_src="raise SystemExit('never run')",
                         class_name=class_name, state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


_EDM2_NAMES = {"EDM2Precond": "Precond", "EDM2UNet": "UNet", "Block": "Block", "MPConv": "MPConv",
               "MPFourier": "MPFourier"}


def _as_edm2(module: torch.nn.Module, init_kwargs: dict | None = None):
    if isinstance(module, torch.nn.ModuleDict):
        container = torch.nn.ModuleDict()
        container.__dict__["_modules"] = collections.OrderedDict((k, _as_edm2(v)) for k, v in module.items())
        return container
    state = {
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict((k, None if v is None else _as_edm2(v)) for k, v in module._modules.items()),
        "_init_args": (), "_init_kwargs": init_kwargs or {}, "training": False,
    }
    return _Persistent(_EDM2_NAMES[type(module).__name__], state)


def _encoder(kind: str, channels: int):
    if kind == "rgb":
        return _Persistent("StandardRGBEncoder", {"_init_args": (), "_init_kwargs": {}})
    scale = np.float32(0.5) / np.linspace(3, 5, channels).astype(np.float32)
    return _Persistent("StabilityVAEEncoder", {"_init_args": (), "_init_kwargs": {"vae_name": "some-vae"},
                                               "vae_name": "some-vae", "scale": scale, "bias": -2 * scale,
                                               "batch_size": 8, "_vae": None})


def edm2_snapshot(net, *, encoder: str = "rgb", **replace) -> dict:
    """``net`` (a pfdist EDM2 network) as the dict an EDM2 snapshot pickles (parts replaceable)."""
    c = net.config
    kwargs = {"img_resolution": c["shape"][1], "img_channels": c["shape"][0],
              **{k: v for k, v in c.items() if k not in ("arch", "precond", "shape")}}
    return EasyDict(encoder=_encoder(encoder, c["shape"][0]), dataset_kwargs=EasyDict(class_name="x.Dataset"),
                    loss_fn=_Persistent("EDM2Loss", {"P_mean": -0.4, "P_std": 1.0, "sigma_data": 0.5}),
                    ema=_as_edm2(net, kwargs)) | replace


@pytest.fixture
def edm2_pickling(monkeypatch):
    """Makes the test's stand-ins pickle under EDM2's global names; the loader never needs them."""
    fake = types.ModuleType("torch_utils.persistence")
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    for name, module in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", fake),
                         ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(_reconstruct_persistent_obj, "__module__", "torch_utils.persistence")
    monkeypatch.setattr(EasyDict, "__module__", "dnnlib.util")

    def write(obj, path: Path) -> Path:
        path.write_bytes(pickle.dumps(EasyDict(obj) if isinstance(obj, dict) else obj))
        return path
    return write


OTHER_CONFIGS = [
    {"arch": "edm2", "shape": [3, 16, 16], "model_channels": 8, "channel_mult": [1, 2, 3], "num_blocks": 2,
     "attn_resolutions": [8, 4], "channels_per_head": 8, "logvar_channels": 16},
    {"arch": "edm2", "shape": [4, 8, 8], "model_channels": 16, "channel_mult": [2, 1], "num_blocks": 1,
     "attn_resolutions": [4], "channels_per_head": 16, "label_dim": 5, "label_balance": 0.3, "concat_balance": 0.7,
     "sigma_data": 0.8, "res_balance": 0.4, "attn_balance": 0.2, "channel_mult_noise": 2, "channel_mult_emb": 3},
    {"arch": "edm2", "shape": [1, 32, 32], "model_channels": 4, "channel_mult": [1, 1, 2, 2], "num_blocks": 1,
     "attn_resolutions": [], "resample_filter": [1, 3, 3, 1], "clip_act": None, "logvar_channels": 8, "label_dim": 3},
]


@pytest.mark.parametrize("config", OTHER_CONFIGS, ids=lambda c: f"{c['shape'][1]}-{c['channel_mult']}")
def test_other_configurations_load_from_edm2_format(config, tmp_path, edm2_pickling, monkeypatch):
    net = build_network(config, seed=1).eval()
    with torch.no_grad():  # perturb so that zero-initialised gains matter, then store float16 as EDM2 does
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        net.unet.out_gain.fill_(0.4)
    net.half()
    net.unet.emb_fourier.float(), net.logvar_fourier.float()
    encoder = "vae" if config.get("label_dim") else "rgb"
    path = edm2_pickling(edm2_snapshot(net, encoder=encoder), tmp_path / "edm2-snapshot.pkl")
    for name in ("torch_utils.persistence", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)  # the loader must not need them
    loaded = pfdist.load_edm(path)
    assert loaded.config == normalize_config(config) and loaded.unet.out_gain.dtype == torch.float16
    assert loaded.data_space == ("rgb" if encoder == "rgb" else loaded.encoder.data_space)
    c, r = config["shape"][0], config["shape"][1]
    x, labels = torch.randn(3, c, r, r), torch.eye(config["label_dim"])[:3] if config.get("label_dim") else None
    net.compute_dtype = torch.float32
    converted = load_spec(pfdist.save_denoiser(tmp_path / "model.safetensors", loaded))
    for sigma in (0.01, 1.0, 40.0):
        with torch.no_grad():
            want = net(x, sigma, labels)
            assert want.abs().mean() > 0.01
            torch.testing.assert_close(loaded(x, sigma, labels), want, rtol=0, atol=0)
            torch.testing.assert_close(converted(x, sigma, labels), want, rtol=0, atol=0)
    assert json.loads(json.dumps(loaded.config)) == loaded.config


def test_float16_networks_with_scalar_gains_have_a_fingerprint():
    """0-d float16 parameters (EDM2's gains) are hashed by their bytes; a changed gain changes the key."""
    from pfdist.hashing import fingerprint

    net = build_network(SMALL, seed=0).half()
    before = fingerprint(net)
    with torch.no_grad():
        net.unet.out_gain.fill_(0.5)
    assert None not in (before, fingerprint(net)) and before != fingerprint(net)


# -- Hostile and broken EDM2 pickles ---------------------------------------------------------------

class _Evil:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


SMALL = {"arch": "edm2", "shape": [2, 8, 8], "model_channels": 4, "channel_mult": [1, 2], "num_blocks": 1,
         "attn_resolutions": [], "logvar_channels": 4}


def _hostile(kind: str, marker: Path, net):
    snap = edm2_snapshot(net, encoder="vae")
    if kind == "callable in ema":
        snap["ema"].meta["state"]["_modules"]["unet"].meta["state"]["label_balance"] = _Evil(os.system, f"touch {marker}")
    elif kind == "callable in encoder":
        snap["encoder"].meta["state"]["scale"] = _Evil(eval, f"open({str(marker)!r}, 'w').write('ran')")
    elif kind == "unknown class":
        snap["ema"].meta["state"]["_modules"]["unet"].meta["state"]["_modules"]["out_conv"].meta["class_name"] = "EvilConv"
    elif kind == "unknown encoder":
        snap["encoder"].meta["class_name"] = "CustomEncoder"
    elif kind == "wrong tensor shape":
        params = snap["ema"].meta["state"]["_modules"]["logvar_linear"].meta["state"]["_parameters"]
        params["weight"] = torch.zeros(1, 5)
    elif kind == "missing ema":
        del snap["ema"]
    elif kind == "absurd size":
        snap["ema"].meta["state"]["_init_kwargs"]["model_channels"] = 10**6
    return snap


@pytest.mark.parametrize("kind, match", [
    ("callable in ema", r"asks for (posix|os|nt)\.system.*ran nothing"),
    ("callable in encoder", r"asks for builtins\.eval.*ran nothing"),
    ("unknown class", "EvilConv"),
    ("unknown encoder", "CustomEncoder"),
    ("wrong tensor shape", r"wrong shape \['logvar_linear.weight'\]"),
    ("missing ema", "no 'ema'"),
    ("absurd size", "model_channels"),
])
def test_hostile_or_broken_edm2_pickles_are_one_clear_error_and_run_nothing(kind, match, tmp_path, edm2_pickling):
    marker = tmp_path / "marker"
    net = build_network(SMALL, seed=0).half()
    path = edm2_pickling(_hostile(kind, marker, net), tmp_path / "edm2-evil.pkl")
    with pytest.raises(PFDistError, match=match) as e:
        pfdist.load_edm(path)
    assert str(path) in str(e.value) and not marker.exists()
