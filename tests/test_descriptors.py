"""Descriptors: the kernel descriptor against its closed form, SSCD's preprocessing against a
hand computation, TorchScript and .pt2 files interchangeable, and bad input."""

import json
import math

import pytest
import torch

import pfdist
from pfdist.descriptors import (
    KernelDescriptor,
    NamedDescriptors,
    check_spec,
    describe,
    descriptor_fingerprint,
    identity,
    median_nn_distance,
    resolve,
)

F = 2048  # features: F/2 frequencies


def _cloud(n=300, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _kernel_moments(u2):
    """For u = (a - b)/h with |u|^2 = u2: mean and sd of |Psi(a) - Psi(b)|^2 over the frequencies.

    |Psi(a) - Psi(b)|^2 = 2 - 2 mean_j cos(w_j . u), w_j ~ N(0, I):
    E cos(w.u) = exp(-|u|^2/2), E cos^2(w.u) = (1 + exp(-2|u|^2))/2.
    """
    mean = 2 - 2 * torch.exp(-u2 / 2)
    var_cos = (1 + torch.exp(-2 * u2)) / 2 - torch.exp(-u2)
    return mean, 2 * torch.sqrt(var_cos / (F // 2))


def test_kernel_features_match_the_rbf_kernel_within_monte_carlo_error():
    x = _cloud()
    psi = KernelDescriptor.fit(x, num_features=F, seed=1)
    h = psi.bandwidth
    g = torch.Generator().manual_seed(2)
    a = torch.randn(400, 8, generator=g, dtype=torch.float64)
    direction = torch.nn.functional.normalize(torch.randn(400, 8, generator=g, dtype=torch.float64), dim=1)
    r = h * torch.linspace(0.2, 6.0, 400, dtype=torch.float64)  # from close to unrelated
    b = a + r[:, None] * direction
    got = ((psi(a) - psi(b)) ** 2).sum(1)
    mean, sd = _kernel_moments((r / h) ** 2)
    torch.testing.assert_close(mean, 2 - 2 * psi.kernel(a, b))
    z = (got - mean) / sd
    assert z.abs().max() < 5.5  # every pair within its Monte Carlo error
    assert abs(z.mean()) < 0.5  # and no shared bias (z's are correlated through the frequencies)
    assert torch.allclose(psi(a).norm(dim=1), torch.ones(400, dtype=torch.float64))  # unit vectors


def test_kernel_saturates_for_unrelated_samples():
    x = _cloud()
    psi = KernelDescriptor.fit(x, num_features=F, seed=0)
    far = x + 50 * psi.bandwidth * torch.nn.functional.normalize(_cloud(seed=5), dim=1)
    d2 = ((psi(x) - psi(far)) ** 2).sum(1)
    sd = 2 * math.sqrt(0.5 / (F // 2))  # k ~ 0: Var cos = 1/2
    assert (d2 - 2).abs().max() < 5.5 * sd
    pfd_far = d2.mean().sqrt().item()
    assert pfd_far == pytest.approx(math.sqrt(2), abs=3 * sd / math.sqrt(len(x)) + 1e-3)


def test_kernel_is_near_isometric_for_close_samples():
    x = _cloud()
    psi = KernelDescriptor.fit(x, num_features=F, seed=0)
    delta = 1e-3 * psi.bandwidth * torch.nn.functional.normalize(_cloud(seed=7), dim=1)
    got = (psi(x + delta) - psi(x)).norm(dim=1)
    # Second order: |Psi(a) - Psi(b)|^2 = (2/F) sum_j (w_j . u)^2 + O(|u|^4), u = delta / h.
    w = psi.frequencies
    exact_finite = torch.sqrt(2 / F * ((delta / psi.bandwidth) @ w.T).pow(2).sum(1))
    torch.testing.assert_close(got, exact_finite, rtol=1e-4, atol=0)
    # and (2/F) sum_j (w_j.u)^2 ~ |u|^2 chi^2_{F/2}/(F/2): ratio 1 within 5 sd of sqrt(2/(F/2))/2.
    ratio = got / (delta.norm(dim=1) / psi.bandwidth)
    assert (ratio - 1).abs().max() < 5 * math.sqrt(2 / (F // 2)) / 2


def test_bandwidth_is_half_the_median_nearest_neighbour_distance():
    x = _cloud(50, 3)
    dist, _ = pfdist.nearest_neighbors(x, x, k=2)  # the nearest is the point itself
    assert median_nn_distance(x) == pytest.approx(float(dist[:, 1].median()), rel=1e-12)
    assert KernelDescriptor.fit(x, num_features=4).bandwidth == pytest.approx(0.5 * median_nn_distance(x))
    spec = {"type": "kernel", "num_features": 8, "bandwidth_rule": "median_nn/4", "fit_samples": 50}
    assert resolve(spec, samples=lambda n: x[:n]).bandwidth == pytest.approx(0.25 * median_nn_distance(x))


def test_a_default_kernel_spec_builds_what_a_default_fit_builds():
    """The spec's defaults and fit's keyword defaults are one set (pfdist.descriptors.kernel)."""
    x = _cloud(80, 3)
    from_spec = resolve({"type": "kernel", "fit_samples": 80}, samples=lambda n: x[:n])
    fitted = KernelDescriptor.fit(x)
    assert from_spec.bandwidth == pytest.approx(fitted.bandwidth, rel=1e-12) and from_spec.seed == fitted.seed
    assert torch.equal(from_spec.frequencies, fitted.frequencies)


def test_kernel_on_images_flattens():
    imgs = _cloud(20, 16).reshape(20, 1, 4, 4).float()
    psi = KernelDescriptor.fit(imgs, num_features=64)
    torch.testing.assert_close(psi(imgs), psi(imgs.flatten(1)))
    with pytest.raises(pfdist.PFDistError, match="16 numbers"):
        psi(torch.zeros(2, 3, 4, 4))


def test_kernel_save_load_round_trip_and_fingerprint(tmp_path):
    x = _cloud()
    psi = KernelDescriptor.fit(x, num_features=32, seed=3)
    path = psi.save(tmp_path / "kernel.safetensors")
    back = resolve(path)  # by suffix
    assert isinstance(back, KernelDescriptor) and back.fingerprint() == psi.fingerprint()
    torch.testing.assert_close(back(x), psi(x), rtol=0, atol=0)
    assert descriptor_fingerprint(back) == psi.fingerprint()
    other = KernelDescriptor.fit(x, num_features=32, seed=4)
    assert other.fingerprint() != psi.fingerprint()
    assert KernelDescriptor(psi.frequencies, psi.bandwidth * 2).fingerprint() != psi.fingerprint()


def test_kernel_descriptor_in_pfd_saturates_for_a_copier(mixture):
    """An exact empirical flow of far-away points is unrelated to the mixture: PFD ~ sqrt(2)."""
    samples = mixture.sample(200, generator=torch.Generator().manual_seed(0))
    psi = KernelDescriptor.fit(samples, num_features=F)
    far = pfdist.EmpiricalDenoiser(samples[:20] + 100.0)
    r = pfdist.pfd(mixture, far, num_samples=40, descriptor=psi)
    assert r.value == pytest.approx(math.sqrt(2), abs=0.02)
    assert pfdist.pfd(mixture, mixture, num_samples=8, descriptor=psi).value == 0.0


@pytest.mark.parametrize("edit", ["not_safetensors", "other_safetensors", "tampered"])
def test_bad_kernel_files(tmp_path, edit):
    path = tmp_path / "kernel.safetensors"
    if edit == "not_safetensors":
        path.write_bytes(b"junk")
    elif edit == "other_safetensors":
        from safetensors.torch import save_file

        save_file({"frequencies": torch.ones(2, 2)}, str(path))
    else:
        from safetensors.torch import save_file

        psi = KernelDescriptor.fit(_cloud(), num_features=8)
        cfg = {**psi.config(), "bandwidth": psi.bandwidth * 1.5}
        import json

        save_file({"frequencies": psi.frequencies}, str(path), metadata={"pfdist": json.dumps(cfg)})
    with pytest.raises(pfdist.PFDistError, match="kernel descriptor|not a pfdist"):
        resolve(path)


@pytest.mark.parametrize("kwargs", [{"num_features": 3}, {"num_features": 0}, {"seed": 1.5}, {"bandwidth_factor": -1}])
def test_bad_kernel_fit_arguments(kwargs):
    with pytest.raises(pfdist.PFDistError):
        KernelDescriptor.fit(_cloud(), **kwargs)


def test_kernel_fit_refuses_duplicates():
    with pytest.raises(pfdist.PFDistError, match="duplicates"):
        KernelDescriptor.fit(torch.ones(10, 3))


# SSCD and descriptor networks from files.

class ChannelMean(torch.nn.Module):
    """Stand-in for SSCD: the per-channel mean and the input side length, as a 4-d descriptor."""

    def forward(self, x):
        m = x.mean((2, 3))
        return torch.cat([m, torch.full_like(m[:, :1], float(x.shape[-1]) / 320.0)], dim=1)


def _files(tmp_path, module, example):
    ts, pt2 = tmp_path / "net.pt", tmp_path / "net.pt2"
    torch.jit.script(module).save(str(ts))
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    program.example_inputs = None  # stored as a pickle otherwise, which pfdist refuses to load
    torch.export.save(program, str(pt2))
    return ts, pt2


def test_sscd_preprocessing_by_hand(tmp_path):
    ts, pt2 = _files(tmp_path, ChannelMean(), torch.zeros(2, 3, 320, 320))
    c = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    x = c.view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()  # constant images: resizing keeps them
    mean, std = torch.tensor(pfdist.descriptors.sscd.IMAGENET_MEAN), torch.tensor(pfdist.descriptors.sscd.IMAGENET_STD)
    per_channel = (((c + 1) / 2)[:, None] - mean) / std
    expected = torch.nn.functional.normalize(torch.cat([per_channel, torch.ones(4, 1)], 1), dim=1)
    for path in (ts, pt2):
        psi = pfdist.SSCD(path)
        assert psi.preprocess(x).shape == (4, 3, 320, 320)
        torch.testing.assert_close(psi(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(psi(x).norm(dim=1), torch.ones(4))


def test_sscd_grey_images_are_repeated_and_quantisation_rounds(tmp_path):
    ts, _ = _files(tmp_path, ChannelMean(), torch.zeros(2, 3, 320, 320))
    grey = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    psi = pfdist.SSCD(ts, size=12)
    torch.testing.assert_close(psi(grey), psi(grey.expand(-1, 3, -1, -1)))
    q = pfdist.SSCD(ts, size=6, quantize=True)
    level = (torch.round((grey + 1) / 2 * 255) / 255).mean((1, 2, 3))  # size 6: no resize
    torch.testing.assert_close(q.preprocess(grey)[:, 0].mean((1, 2)),
                               (level - q_mean(0)) / q_std(0), rtol=1e-5, atol=1e-5)
    assert q.fingerprint() != pfdist.SSCD(ts, size=6).fingerprint()


def q_mean(i):
    return pfdist.descriptors.sscd.IMAGENET_MEAN[i]


def q_std(i):
    return pfdist.descriptors.sscd.IMAGENET_STD[i]


def test_sscd_pfd_lies_in_zero_two(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(1),
                              torch.nn.Linear(16, 5))
    ts, _ = _files(tmp_path, net.eval(), torch.zeros(2, 3, 32, 32))
    g = torch.Generator().manual_seed(0)
    left = pfdist.EmpiricalDenoiser(torch.rand(5, 1, 8, 8, generator=g) * 2 - 1)
    right = pfdist.EmpiricalDenoiser(torch.rand(5, 1, 8, 8, generator=g) * 2 - 1)
    r = pfdist.pfd(left, right, shape=(1, 8, 8), num_samples=6, steps=4, descriptor=pfdist.SSCD(ts, size=32))
    assert 0 < r.value <= 2.0


def test_pt2_and_torchscript_files_are_interchangeable(tmp_path, mixture):
    lin = torch.nn.Linear(6, 3).eval()
    ts, pt2 = _files(tmp_path, lin, torch.zeros(2, 6))
    other = pfdist.random_low_rank_mixture(6, 3, 2, scale=1.0, mean_scale=1.0, noise_std=0.1, seed=8)
    by_ts = pfdist.pfd(mixture, other, num_samples=10, descriptor=resolve(str(ts)))
    by_pt2 = pfdist.pfd(mixture, other, num_samples=10, descriptor=resolve(str(pt2)))
    by_callable = pfdist.pfd(mixture, other, num_samples=10, descriptor=lambda x: lin(x))
    torch.testing.assert_close(by_pt2.per_sample, by_callable.per_sample)
    torch.testing.assert_close(by_ts.per_sample, by_callable.per_sample)
    assert resolve(pt2).fingerprint().startswith("export:")
    assert resolve(ts).fingerprint().startswith("torchscript:")


@pytest.mark.parametrize("kwargs, match", [({"size": 0}, "size"), ({"interpolation": "nearest"}, "interpolation"),
                                           ({"data_range": (1, -1)}, "data_range")])
def test_sscd_bad_options(tmp_path, kwargs, match):
    ts, _ = _files(tmp_path, ChannelMean(), torch.zeros(2, 3, 320, 320))
    with pytest.raises(pfdist.PFDistError, match=match):
        pfdist.SSCD(ts, **kwargs)


def test_sscd_refuses_vectors_and_non_archives(tmp_path):
    ts, _ = _files(tmp_path, ChannelMean(), torch.zeros(2, 3, 320, 320))
    with pytest.raises(pfdist.PFDistError, match="takes images"):
        pfdist.SSCD(ts)(torch.zeros(2, 16))
    lin = tmp_path / "lin.pt"
    torch.jit.script(torch.nn.Linear(5, 2)).save(str(lin))
    with pytest.raises(pfdist.PFDistError, match="descriptor network failed"):
        pfdist.SSCD(lin, size=4)(torch.zeros(2, 3, 4, 4))
    bad = tmp_path / "sscd.pt2"
    bad.write_bytes(b"PK but not really")
    with pytest.raises(pfdist.PFDistError, match="not a TorchScript or .pt2"):
        pfdist.SSCD(bad)


# Specs (as presets and the command line name descriptors).

def test_specs_fill_defaults_and_refuse_bad_fields():
    assert check_spec("pixels") == {"type": "pixels", "name": "pixels"}
    full = check_spec({"type": "kernel"})
    assert full["num_features"] == 2048 and full["bandwidth_rule"] == "median_nn/2" and full["name"] == "kernel"
    assert resolve("pixels") is identity
    for bad in ({"type": "kernel", "num_features": 7}, {"type": "kernel", "bandwidth_rule": "mean/2"},
                {"type": "kernel", "colour": 1}, {"type": "sscd"}, {"type": "what"}, 3,
                {"type": "kernel", "fit_samples": 1}, {"type": "kernel", "name": "a b"}):
        with pytest.raises(pfdist.PFDistError):
            check_spec(bad)


# One resolver at the edge: specs in every form give the same descriptor; below it, only objects.

def test_every_form_of_a_spec_resolves_to_the_same_descriptor(tmp_path):
    x = _cloud(40, 6)
    psi = KernelDescriptor.fit(x, num_features=16, seed=2)
    path = psi.save(tmp_path / "rff.safetensors")
    forms = [path, str(path), {"type": "saved", "path": str(path)}, json.dumps({"type": "saved", "path": str(path)})]
    for form in forms:
        got = resolve(form)
        assert isinstance(got, KernelDescriptor) and got.fingerprint() == psi.fingerprint()
    assert check_spec(str(path))["name"] == "rff" and check_spec(path) == check_spec(str(path))
    for pixels in ("pixels", "identity", '{"type": "pixels"}', {"type": "pixels"}):
        assert resolve(pixels) is identity
    assert resolve(psi) is psi and resolve(identity) is identity  # objects pass through
    fitted = resolve({"type": "kernel", "num_features": 16, "seed": 2, "bandwidth_rule": "median_nn/2",
                      "fit_samples": 40}, samples=lambda n: x[:n])
    assert fitted.fingerprint() == psi.fingerprint()


def test_a_list_of_specs_resolves_to_named_spaces_in_order(tmp_path):
    x = _cloud(30, 6)
    kernel = {"type": "kernel", "num_features": 8, "fit_samples": 30, "name": "rff"}
    spaces = resolve([kernel, "pixels"], samples=lambda n: x[:n])
    assert isinstance(spaces, NamedDescriptors) and list(spaces) == ["rff", "pixels"] and spaces.primary == "rff"
    assert spaces["pixels"] is identity and isinstance(spaces["rff"], KernelDescriptor)
    assert resolve(spaces) is spaces
    for bad, match in ((["pixels", {"type": "pixels"}], "distinct names"), ([], "at least one"),
                       ([kernel], "fitted on teacher samples"), ("missing.pt", "neither 'pixels'"),
                       ('{"type": ', "does not parse"), (None, "descriptor spec")):
        with pytest.raises(pfdist.PFDistError, match=match):
            resolve(bad)


def test_pfd_and_flow_outputs_take_resolved_descriptors_only(mixture, tmp_path):
    """A named set, a spec or another value gets one error saying what to pass (a named set
    raised a bare TypeError inside the seed loop)."""
    other = pfdist.random_low_rank_mixture(6, 3, 2, scale=1.0, mean_scale=1.0, noise_std=0.1, seed=8)
    spaces = NamedDescriptors({"pixels": identity})
    cases = [(spaces, r"NamedDescriptors.*descriptor=spaces\['pixels'\]"),
             ("pixels", r"spec, not a descriptor.*pfdist.descriptors.resolve\('pixels'\)"),
             (str(tmp_path / "net.pt2"), "spec, not a descriptor"), ({"type": "kernel"}, "resolve"),
             (None, "must be a callable"), (3, "must be a callable")]
    for value, match in cases:
        with pytest.raises(pfdist.PFDistError, match=match):
            pfdist.pfd(mixture, other, num_samples=4, steps=2, descriptor=value)
        with pytest.raises(pfdist.PFDistError, match=match):
            pfdist.flow_outputs(mixture, num_samples=4, steps=2, descriptor=value)
    assert pfdist.pfd(mixture, other, num_samples=4, steps=2, descriptor=spaces["pixels"]).value > 0


def test_describe_is_batch_size_invariant_and_checks_what_psi_returns(mixture):
    x = _cloud(10, 6)
    psi = KernelDescriptor.fit(x, num_features=16)
    torch.testing.assert_close(describe(x, psi, batch_size=3), psi(x))  # float64: equal to rounding
    assert describe(x, identity) is x
    outs = pfdist.flow_outputs(mixture, num_samples=5, steps=2, dtype=torch.float64)
    torch.testing.assert_close(outs.describe(psi, batch_size=2).values, psi(outs.values))
    with pytest.raises(pfdist.NonFiniteError, match="NaN or Inf on rows"):
        describe(x, lambda v: v / 0 * 0, where=" on rows")
    with pytest.raises(pfdist.PFDistError, match=r"\(batch, \.\.\.\) tensor"):
        describe(x, lambda v: v.sum())
    with pytest.raises(pfdist.PFDistError, match="one by one"):
        outs.describe(NamedDescriptors({"rff": psi}))
