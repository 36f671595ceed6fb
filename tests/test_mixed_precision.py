"""Networks in bfloat16 / float16 without changing the map: the ODE state and distance stay float32."""

from __future__ import annotations


import pytest
import torch

import pfdist
from edm_fixtures import EDM2_FIXTURES as FIXTURES, needs_edm2_fixtures as needs_fixtures
from edm_fixtures import FIXTURES as EDM_FIXTURES, needs_fixtures as needs_edm_fixtures
from pfdist.errors import PFDistError

pytestmark = pytest.mark.usefixtures("one_thread")



def _map(steps: int, dtype=torch.float32):
    net = pfdist.load_edm(FIXTURES / "edm2-latent-cond.pkl", dtype=dtype)
    guide = pfdist.load_edm(FIXTURES / "edm2-latent-uncond.pkl", dtype=dtype)
    return pfdist.ode_map(pfdist.guided(net, guide, 1.4), pfdist.FlowSettings(steps=steps))  # decoded: benchmarks/


@needs_fixtures
def test_bfloat16_networks_change_the_map_far_less_than_fewer_steps_do():
    """bfloat16 keeps ~3 significant digits: its PFD to float32 is not zero (it does run in bfloat16)
    but small next to the 8-step vs 2-step distance of the same map."""
    fp32, steps2 = _map(8), _map(2)
    bf16 = _map(8, torch.bfloat16)
    net = bf16.denoiser.net
    x = torch.randn(2, 4, 8, 8)
    assert net.compute_dtype == torch.bfloat16 and net(x, 1.0, torch.eye(10)[:2]).dtype == torch.float32
    coarse = pfdist.pfd(fp32, steps2, num_samples=8).value
    cast = pfdist.pfd(fp32, bf16, num_samples=8).value
    auto = pfdist.flow_outputs(fp32, num_samples=8, autocast=torch.bfloat16)
    exact = pfdist.flow_outputs(fp32, num_samples=8)
    assert auto.values.dtype == torch.float32 and auto.dtype == "torch.float32+autocast:torch.bfloat16"
    autocast = pfdist.squared_distances(auto.values, exact.values).mean().sqrt().item()
    assert 0 < cast < 0.1 * coarse and 0 < autocast < 0.1 * coarse, (cast, autocast, coarse)
    with pytest.raises(PFDistError, match="autocast"):  # outputs made under autocast are not float32 outputs
        pfdist.pfd(auto, fp32, num_samples=8)
    assert pfdist.pfd(auto, fp32, num_samples=8, autocast=torch.bfloat16).value == 0.0


def test_autocast_values_are_checked():
    g = pfdist.Gaussian(torch.zeros(4), torch.eye(4))
    with pytest.raises(PFDistError, match="autocast must be torch.bfloat16 or torch.float16"):
        pfdist.pfd(g, g, shape=(4,), num_samples=4, autocast=torch.float64)
    with pytest.raises(PFDistError, match="with dtype=torch.float32"):
        pfdist.pfd(g, g, shape=(4,), num_samples=4, autocast=torch.bfloat16, dtype=torch.float64)


@needs_edm_fixtures
def test_edm_networks_load_in_float64_and_refuse_bfloat16_weights():
    path = EDM_FIXTURES / "ddpmpp-edm-uncond.pkl"
    net = pfdist.load_edm(path, dtype=torch.float64)
    assert next(net.parameters()).dtype == torch.float64
    with pytest.raises(PFDistError, match="autocast"):
        pfdist.load_edm(path, dtype=torch.bfloat16)
