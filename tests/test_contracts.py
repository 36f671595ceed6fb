"""Contracts every denoiser, map kind, solver and descriptor the package ships must keep.

As scikit-learn's ``check_estimator``: shapes, dtypes, sigma broadcasting, batch-size and
seed-order invariance, and the agreement of the three kinds of map. To put a new item under
contract, add one line to the lists below; nothing else needs to change.
"""

import ast
import copy
from pathlib import Path

import pytest
import torch

import pfdist

# Registries. Each factory builds a fresh, small instance.

DENOISERS = {  # name -> () -> denoiser that says its data shape
    "gaussian": lambda: pfdist.Gaussian(torch.arange(6.0) / 3, torch.diag(torch.linspace(0.1, 2.0, 6))),
    "mixture": lambda: pfdist.random_low_rank_mixture((2, 3), 3, 2, mean_scale=1.5, noise_std=0.1, seed=1),
    "empirical": lambda: pfdist.EmpiricalDenoiser(torch.randn(20, 6, generator=torch.Generator().manual_seed(2))),
    "mlp": lambda: pfdist.build_network({"arch": "mlp", "shape": [6], "width": 16, "depth": 1}, seed=0).eval(),
    "songunet": lambda: pfdist.build_network({"arch": "songunet", "shape": [1, 8, 8], "model_channels": 8,
                                              "channel_mult": [1], "num_blocks": 1, "attn_resolutions": []}, seed=0).eval(),
    "dhariwal-vp": lambda: pfdist.build_network({"arch": "dhariwal", "shape": [1, 8, 8], "model_channels": 8,
                                                 "channel_mult": [1], "num_blocks": 1, "precond": "vp"}, seed=0).eval(),
}

SOLVERS = sorted(pfdist.solvers.SOLVERS)  # every registered solver is under contract


def _as_generator(denoiser, flow):
    return pfdist.generator(lambda x_T: pfdist.flow_map(denoiser, x_T, flow=flow), shape=pfdist.data_shape(denoiser),
                            sigma_max=flow.sigma_max, nfe=flow.nfe)


MAP_KINDS = {  # name -> (denoiser, flow) -> one side of pfd, equal to the ODE map of the denoiser under flow
    "denoiser": lambda d, flow: d,
    "ode_map": lambda d, flow: pfdist.ode_map(d, flow),
    "generator": _as_generator,
    "precomputed": lambda d, flow: pfdist.flow_outputs(d, num_samples=12, seed=SEED, flow=flow),
}

DESCRIPTORS = {  # name -> data shape -> a descriptor or its spec (a name, a file)
    "identity": lambda shape: "pixels",
    "linear": lambda shape: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(_dim(shape), 3)),
    "torchscript": lambda shape: _torchscript(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(_dim(shape), 4))),
    "kernel": lambda shape: pfdist.KernelDescriptor.random(_dim(shape), 2.0, num_features=64, seed=1),
    "pt2": lambda shape: _pt2(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(_dim(shape), 4)), shape),
}

SEED = 500
FLOW = pfdist.FlowSettings(steps=4)  # short grids: the contracts do not depend on accuracy


def _dim(shape):
    return int(torch.tensor(shape).prod())


def _torchscript(module, _dir=[]):
    import tempfile

    if not _dir:
        _dir.append(tempfile.mkdtemp())
    path = Path(_dir[0]) / f"desc-{len(list(Path(_dir[0]).iterdir()))}.pt"
    torch.jit.script(module).save(str(path))
    return pfdist.TorchScriptDescriptor(path)


def _pt2(module, shape):
    import tempfile

    path = Path(tempfile.mkdtemp()) / "desc.pt2"
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},))
    program.example_inputs = None  # stored as a pickle otherwise, which pfdist refuses to load
    torch.export.save(program, str(path))
    return pfdist.TorchScriptDescriptor(path)


def _x(shape, batch=5, dtype=torch.float32):
    return 2 * torch.randn(batch, *shape, generator=torch.Generator().manual_seed(3), dtype=dtype)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module", params=sorted(DENOISERS))
def denoiser(request, one_thread):
    return request.param, DENOISERS[request.param]()


# Denoisers.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_denoiser_shape_dtype_and_seam(denoiser, dtype):
    name, d = denoiser
    d = copy.deepcopy(d).to(dtype) if isinstance(d, torch.nn.Module) else d
    shape = pfdist.data_shape(d)
    assert shape is not None and isinstance(d, pfdist.Denoiser)
    x = _x(shape, dtype=dtype)
    out = d(x, 1.5)
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("sigma", [0.3, 4.0])
def test_sigma_broadcasting(denoiser, sigma):
    """A float, a 0-d tensor and a (batch,) tensor of one value give one output."""
    name, d = denoiser
    x = _x(pfdist.data_shape(d))
    ref = d(x, sigma)
    for s in (torch.tensor(sigma), torch.full((x.shape[0],), sigma)):
        torch.testing.assert_close(d(x, s), ref, **_tol(x.dtype))


def test_per_sample_sigmas(denoiser):
    """A (batch,) sigma applies row by row."""
    name, d = denoiser
    x, sigmas = _x(pfdist.data_shape(d)), torch.tensor([0.05, 0.5, 1.0, 5.0, 50.0])
    rows = torch.cat([d(x[i : i + 1], float(s)) for i, s in enumerate(sigmas)])
    torch.testing.assert_close(d(x, sigmas), rows, **_tol(x.dtype))


def test_denoiser_batch_size_invariance(denoiser):
    name, d = denoiser
    x = _x(pfdist.data_shape(d))
    whole = d(x, 0.7)
    torch.testing.assert_close(torch.cat([d(x[:2], 0.7), d(x[2:], 0.7)]), whole, **_tol(x.dtype))


def test_shipped_denoisers_have_a_stable_fingerprint(denoiser):
    name, d = denoiser
    fp = pfdist.hashing.fingerprint(d)
    assert fp is not None and fp == pfdist.hashing.fingerprint(DENOISERS[name]())


# Map kinds and solvers.

@pytest.mark.parametrize("kind_b", sorted(MAP_KINDS))
@pytest.mark.parametrize("kind_a", sorted(MAP_KINDS))
def test_every_kind_of_map_gives_the_same_pfd(denoiser, kind_a, kind_b):
    """A denoiser, its ode_map, a generator running its ODE and its precomputed outputs are one map."""
    name, d = denoiser
    other = _perturbed(d)
    ref = pfdist.pfd(d, other, num_samples=12, seed=SEED, flow=FLOW)
    a, b = MAP_KINDS[kind_a](d, FLOW), MAP_KINDS[kind_b](other, FLOW)
    r = pfdist.pfd(a, b, num_samples=12, seed=SEED, flow=FLOW)  # the call's flow reaches plain denoisers only
    torch.testing.assert_close(r.per_sample, ref.per_sample, rtol=1e-5, atol=1e-6)
    assert r.value > 0 and r.nfe_a == r.nfe_b == FLOW.nfe


def _perturbed(d):
    """Another map of the same shape: the denoiser, shifted by a constant."""
    class Shifted:
        shape = pfdist.data_shape(d)

        def __call__(self, x, sigma):
            return d(x, sigma) + 0.25

    return Shifted()


@pytest.mark.parametrize("kind", sorted(MAP_KINDS))
def test_maps_do_not_depend_on_batch_size_or_seed_order(denoiser, kind):
    name, d = denoiser
    side = MAP_KINDS[kind](d, FLOW)
    whole = pfdist.pfd(side, _perturbed(d), num_samples=12, seed=SEED, batch_size=12, flow=FLOW)
    small = pfdist.pfd(side, _perturbed(d), num_samples=12, seed=SEED, batch_size=5, flow=FLOW)
    torch.testing.assert_close(small.per_sample, whole.per_sample, rtol=1e-5, atol=1e-6)
    parts = [pfdist.pfd(side, _perturbed(d), num_samples=n, seed=s, flow=FLOW)
             for s, n in ((SEED + 7, 5), (SEED, 7))]  # later seeds first
    torch.testing.assert_close(pfdist.PFDResult.combine(parts).per_sample, whole.per_sample, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solver_contract(denoiser, solver, dtype):
    """Shape and dtype kept, finite, batch-size invariant, NFE as documented."""
    name, d = denoiser
    if solver == "reference" and name in ("mlp", "songunet", "dhariwal-vp"):
        pytest.skip("the adaptive reference solver is for exact denoisers (convergence checks)")
    d = copy.deepcopy(d).to(dtype) if isinstance(d, torch.nn.Module) else d
    flow = pfdist.FlowSettings(steps=5, solver=solver)
    outs = pfdist.flow_outputs(d, num_samples=6, seed=SEED, flow=flow, dtype=dtype, batch_size=6)
    assert outs.values.shape == (6, *pfdist.data_shape(d)) and outs.values.dtype == dtype
    assert torch.isfinite(outs.values).all()
    if flow.nfe is not None:
        assert outs.nfe == flow.nfe
    split = pfdist.flow_outputs(d, num_samples=6, seed=SEED, flow=flow, dtype=dtype, batch_size=4)
    torch.testing.assert_close(split.values, outs.values, rtol=1e-4 if solver == "reference" else 1e-5, atol=1e-5)


# Descriptors.

@pytest.mark.parametrize("desc", sorted(DESCRIPTORS))
def test_descriptor_contract(denoiser, desc):
    """(batch, ...) finite output, batch-size invariant, zero distance from a map to itself,
    and precomputed outputs accepted under the same descriptor only."""
    name, d = denoiser
    shape = pfdist.data_shape(d)
    psi = pfdist.descriptors.resolve(DESCRIPTORS[desc](shape))
    x = _x(shape)
    out = psi(x)
    assert out.shape[0] == x.shape[0] and torch.isfinite(out).all()
    torch.testing.assert_close(torch.cat([psi(x[:2]), psi(x[2:])]), out, rtol=1e-5, atol=1e-6)
    outs = pfdist.flow_outputs(d, num_samples=6, seed=SEED, flow=FLOW, descriptor=psi)
    assert pfdist.pfd(d, outs, num_samples=6, seed=SEED, flow=FLOW, descriptor=psi).value == pytest.approx(0, abs=1e-6)
    fp = pfdist.descriptors.descriptor_fingerprint(psi)
    assert fp is not None and fp == outs.descriptor


# Structure.

PACKAGE = Path(pfdist.__file__).parent


def _imports(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_distance_layer_sees_tensors_only():
    pfdist_imports = {m for m in _imports(PACKAGE / "distance.py") if m.startswith("pfdist")}
    assert pfdist_imports <= {"pfdist.errors"}, pfdist_imports


EDM_DEFAULTS = {"steps": 18, "solver": "heun", "sigma_min": 0.002, "sigma_max": 80, "rho": 7}


def _constant(node):
    """The literal a default is written as: ``80.0`` or ``typer.Option(80.0, ...)``."""
    if isinstance(node, ast.Call) and node.args:
        node = node.args[0]
    return node.value if isinstance(node, ast.Constant) else None


def _defaults(tree):
    """(name, default node) of every function parameter, keyword argument and class field."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            yield from zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults)
            yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.arg, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value


def test_only_flow_settings_write_the_edm_defaults():
    """No module but settings.py writes steps=18, solver="heun", sigma_min=0.002, sigma_max=80 or rho=7."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        for name, node in _defaults(ast.parse(path.read_text())):
            value = _constant(node)
            if name in EDM_DEFAULTS and value is not None and not isinstance(value, bool) and value == EDM_DEFAULTS[name]:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}={value!r}")
    assert not offenders, offenders
