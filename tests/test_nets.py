"""Networks: EDM preconditioning against Table 1, backbone contracts, configs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, strategies as st

from pfdist import PFDistError, build_network, count_parameters
from pfdist.nets import (
    MLP,
    DhariwalUNet,
    NetSpec,
    EDMPrecond,
    SongUNet,
    VEPrecond,
    VPPrecond,
    normalize_config,
    num_groups,
    precond_coefficients,
)


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(torch.nn.Module):
    """Backbone F(x, c_noise) = 2 x + c_noise that records its inputs."""

    def forward(self, x, c_noise):
        self.x, self.c_noise = x, c_noise
        return 2 * x + c_noise.reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
@pytest.mark.parametrize("sigma", [0.002, 0.1, 1.0, 80.0])
def test_precond_matches_edm_table_1(sigma, sigma_data):
    sd = sigma_data
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / math.sqrt(sigma**2 + sd**2)
    c_in = 1 / math.sqrt(sigma**2 + sd**2)
    c_noise = math.log(sigma) / 4
    got = precond_coefficients(torch.tensor(sigma, dtype=torch.float64), sd)
    for g, want in zip(got, (c_skip, c_out, c_in, c_noise)):
        assert float(g) == pytest.approx(want, rel=1e-12, abs=1e-15)

    backbone = Recorder()
    net = EDMPrecond(backbone, sigma_data=sd)
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    out = net(x, sigma)
    torch.testing.assert_close(backbone.x, c_in * x)
    torch.testing.assert_close(backbone.c_noise, torch.full((3,), c_noise, dtype=torch.float64))
    torch.testing.assert_close(out, c_skip * x + c_out * (2 * c_in * x + c_noise))


@pytest.mark.parametrize("sigma", [0.002, 0.5, 80.0])
def test_vp_and_ve_precond_match_table_1(sigma):
    x = torch.randn(2, 3, dtype=torch.float64)
    # VP: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), c_noise = (M - 1) sigma^-1(sigma).
    vp = VPPrecond(Recorder(), beta_d=19.9, beta_min=0.1, M=1000, epsilon_t=1e-5)
    t = vp.sigma_inv(torch.tensor(sigma, dtype=torch.float64))
    assert vp.sigma(float(t)) == pytest.approx(sigma, rel=1e-9)
    assert vp.sigma_min == pytest.approx(math.sqrt(math.exp(0.5 * 19.9e-10 + 1e-6) - 1), rel=1e-6)
    assert vp.sigma_max == pytest.approx(math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1), rel=1e-12)
    c_in = 1 / math.sqrt(sigma**2 + 1)
    torch.testing.assert_close(vp(x, sigma), x - sigma * (2 * c_in * x + 999 * float(t)))
    # VE: c_skip = 1, c_out = sigma, c_in = 1, c_noise = log(sigma / 2).
    ve = VEPrecond(Recorder(), sigma_min=0.02, sigma_max=100.0)
    torch.testing.assert_close(ve(x, sigma), x + sigma * (2 * x + math.log(sigma / 2)))
    assert (ve.sigma_min, ve.sigma_max) == (0.02, 100.0)


def test_precond_per_sample_sigma():
    net = EDMPrecond(Recorder(), sigma_data=0.5)
    x = torch.randn(3, 4)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    out = net(x, sigma)
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], net(x[i : i + 1], float(sigma[i])))


def test_precond_rejects_bad_sigma_shape():
    net = EDMPrecond(Recorder())
    with pytest.raises(PFDistError, match="batch=3"):
        net(torch.randn(3, 4), torch.ones(2))
    with pytest.raises(PFDistError, match="sigma_data"):
        EDMPrecond(Recorder(), sigma_data=0.0)


CONFIGS = [
    {"arch": "mlp", "shape": [16], "width": 32, "depth": 2},
    {"arch": "mlp", "shape": [3, 4], "width": 16, "depth": 1},
    {"arch": "songunet", "shape": [1, 8, 8], "model_channels": 4, "channel_mult": [1, 2],
     "num_blocks": 2, "attn_resolutions": [4]},
    {"arch": "songunet", "shape": [3, 8, 8], "model_channels": 6, "channel_mult": [1, 2, 3],
     "num_blocks": 1, "attn_resolutions": [], "embedding_type": "fourier", "channel_mult_noise": 2,
     "encoder_type": "residual", "resample_filter": [1, 3, 3, 1], "precond": "ve", "label_dim": 3},
    {"arch": "songunet", "shape": [2, 16, 16], "model_channels": 8, "channel_mult": [1, 2],
     "num_blocks": 1, "attn_resolutions": [16], "encoder_type": "skip", "decoder_type": "skip",
     "precond": "vp", "augment_dim": 5},
    {"arch": "dhariwal", "shape": [4, 8, 8], "model_channels": 64, "channel_mult": [1, 2],
     "num_blocks": 1, "attn_resolutions": [8], "dropout": 0.1, "label_dim": 2, "precond": "iddpm"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['arch']}{c['shape']}")
def test_network_contract(config):
    net = build_network(config, seed=0).eval()
    x = torch.randn(3, *config["shape"])
    out = net(x, 0.7)
    assert out.shape == x.shape and out.dtype == torch.float32
    for sigma in (torch.tensor(0.7), torch.tensor([0.7]), torch.full((3,), 0.7)):
        torch.testing.assert_close(net(x, sigma), out)
    # Per-sample: no statistic is shared across the batch.
    torch.testing.assert_close(net(x[1:2], 0.7), out[1:2], rtol=1e-4, atol=1e-5)
    # Trainable end to end.
    net.train()
    net(x, torch.tensor([0.1, 1.0, 10.0])).square().mean().backward()
    for name, p in net.named_parameters():  # augmentation labels were not given: that layer is unused
        assert (p.grad is None) if "map_augment" in name else torch.isfinite(p.grad).all(), name


def test_zero_initialised_mlp_is_c_skip_times_x():
    net = build_network({"arch": "mlp", "shape": [5], "sigma_data": 1.0}, seed=0)
    x = torch.randn(4, 5)
    torch.testing.assert_close(net(x, 2.0), x / 5)  # c_skip = 1 / (4 + 1)


def test_build_is_seeded_and_leaves_global_rng_alone():
    config = CONFIGS[2]
    state = torch.get_rng_state()
    a, b = build_network(config, seed=3), build_network(config, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    c = build_network(config, seed=4)
    assert not torch.equal(a.model.enc["8x8_conv"].weight, c.model.enc["8x8_conv"].weight)
    assert isinstance(a.model, SongUNet) and isinstance(build_network(CONFIGS[0]).model, MLP)
    assert isinstance(build_network(CONFIGS[5]).model, DhariwalUNet)


def test_config_is_normalised_and_json_shaped():
    config = normalize_config({"arch": "songunet", "shape": (3, 8, 8), "channel_mult": (1, 2)})
    assert config["shape"] == [3, 8, 8] and config["channel_mult"] == [1, 2]
    assert config["num_blocks"] == 4 and config["sigma_data"] == 0.5 and config["precond"] == "edm"
    assert build_network(config).config == config


def test_net_spec_is_the_config_validated_once(monkeypatch):
    import copy
    import pickle

    import pfdist.nets.build as build_module

    given = {"arch": "songunet", "shape": (3, 8, 8), "channel_mult": (1, 2), "model_channels": 8, "num_blocks": 1}
    spec = NetSpec(given)
    assert spec.config == normalize_config(given) and spec.shape == (3, 8, 8)
    assert spec == NetSpec(dict(reversed(list(given.items())))) and hash(spec) == hash(NetSpec(spec.config))
    assert spec != NetSpec({**given, "model_channels": 16})
    spec.config["num_blocks"] = 99  # a copy: the spec does not change
    assert spec.config["num_blocks"] == 1
    with pytest.raises(AttributeError):
        spec._json = "{}"
    calls = []
    monkeypatch.setattr(build_module, "normalize_config", lambda c: calls.append(c) or normalize_config(c))
    for again in (NetSpec(spec), pickle.loads(pickle.dumps(spec)), copy.deepcopy(spec)):
        assert again == spec
    a, b = spec.build(seed=3), build_network(spec, seed=3)
    assert calls == []  # a spec is never validated again, not by build_network either
    assert a.config == spec.config and a.config is not b.config
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    monkeypatch.undo()
    c = build_network(given, seed=3)  # a dict: the same network, bit for bit
    assert c.config == spec.config and all(torch.equal(v, w) for v, w in zip(a.parameters(), c.parameters()))
    with pytest.raises(PFDistError, match="unknown keys"):
        NetSpec({**given, "widht": 3})


def test_count_parameters_and_edm_ddpmpp_size():
    net = build_network(CONFIGS[0])
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    # EDM's DDPM++ CIFAR-10 network has 55.73 M parameters (EDM paper, Table 7 / model card).
    ddpmpp = {"arch": "songunet", "shape": [3, 32, 32], "model_channels": 128, "channel_mult": [2, 2, 2],
              "num_blocks": 4, "attn_resolutions": [16]}
    with torch.device("meta"):
        n = count_parameters(build_network(ddpmpp))
    assert round(n / 1e6, 2) == 55.73


@given(st.integers(1, 4096))
def test_group_count_divides(channels):
    """The largest divisor of C not above EDM's min(32, C // 4) (1 when C < 4)."""
    g = num_groups(channels)
    edm = max(1, min(32, channels // 4))
    assert channels % g == 0 and 1 <= g <= edm
    assert not any(channels % h == 0 for h in range(g + 1, edm + 1))


@pytest.mark.parametrize(
    "config, match",
    [
        ({"arch": "resnet", "shape": [2]}, r"valid: \['dhariwal', 'edm2', 'mlp', 'songunet'\]"),
        ({"arch": "unet", "shape": [3, 8, 8]}, "now 'songunet'"),
        ({"arch": "mlp", "shape": [2], "precond": "rf"}, "unknown precond 'rf'"),
        ({"arch": "mlp", "shape": [2], "precond": "vp", "sigma_data": 1.0}, r"unknown keys \['sigma_data'\]"),
        ({"arch": "songunet", "shape": [3, 8, 4]}, "H == W"),
        ({"arch": "songunet", "shape": [3, 8, 8], "encoder_type": "res"}, "'encoder_type' must be one of"),
        ({"shape": [2]}, "unknown network arch None"),
        ({"arch": "mlp", "shape": [2], "widht": 3}, r"unknown keys \['widht'\].*valid"),
        ({"arch": "mlp"}, "needs 'shape'"),
        ({"arch": "mlp", "shape": [0]}, "'shape' must be"),
        ({"arch": "mlp", "shape": [2], "width": 7}, "'width' must be even"),
        ({"arch": "mlp", "shape": [2], "sigma_data": -1}, "'sigma_data' must be positive"),
        ({"arch": "songunet", "shape": [8, 8]}, r"\[C, H, W\]"),
        ({"arch": "songunet", "shape": [3, 8, 8], "channel_mult": [1, 2, 2, 2, 2]}, "divisible by 16"),
        ({"arch": "dhariwal", "shape": [3, 8, 8], "dropout": 1.5}, "'dropout'"),
        ({"arch": "songunet", "shape": [3, 8, 8], "num_blocks": True}, "'num_blocks'"),
    ],
)
def test_bad_config_is_one_clear_error(config, match):
    with pytest.raises(PFDistError, match=match):
        build_network(config)
    with pytest.raises(PFDistError, match="must be a dict"):
        build_network([("arch", "mlp")])


def test_resampling_filters_are_box_pooling_and_nearest_upsampling():
    from pfdist.nets.layers import Conv2d

    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    down = Conv2d(3, 3, 0, down=True, resample_filter=[1, 1])
    up = Conv2d(3, 3, 0, up=True, resample_filter=[1, 1])
    torch.testing.assert_close(down(x), torch.nn.functional.avg_pool2d(x, 2))
    torch.testing.assert_close(up(x), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    # [1, 3, 3, 1] is a normalised low-pass filter: constants pass unchanged away from the border.
    smooth = Conv2d(3, 3, 0, down=True, resample_filter=[1, 3, 3, 1])
    assert torch.allclose(smooth(torch.ones(1, 3, 8, 8))[..., 1:-1, 1:-1], torch.ones(1, 3, 2, 2))


@pytest.mark.parametrize("width", [4, 6, 10, 14, 18, 22, 24])
def test_small_songunets_on_8x8_images(width):
    """Narrow DDPM++ nets (digits scale): GroupNorm groups divide every width, including the
    skip concatenations such as 12 + 6 = 18 channels, which EDM's min(32, C // 4) = 4 groups do not divide)."""
    net = build_network({"arch": "songunet", "shape": [1, 8, 8], "model_channels": width, "channel_mult": [1, 2],
                         "num_blocks": 2, "attn_resolutions": [4], "dropout": 0.0}, seed=0)
    x = torch.randn(2, 1, 8, 8)
    out = net(x, torch.tensor([0.1, 5.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    for m in net.modules():
        if hasattr(m, "num_groups"):
            assert m.weight.numel() % m.num_groups == 0
