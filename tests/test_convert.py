"""``pfdist convert``: EDM snapshots become pfdist checkpoints that run through distance and the
paper preset, with each model's trained sigma range respected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pfdist
from pfdist import FlowSettings, PFDistError, build_network, count_parameters
from pfdist.cli import app
from pfdist.cli.common import set_options
from edm_fixtures import FIXTURES, needs_fixtures
from pfdist.experiments import get_preset
from pfdist.experiments.presets import PAPER_WIDTHS, override
from pfdist.specs import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def convert(name: str, out: Path) -> Path:
    r = runner.invoke(app, ["convert", str(FIXTURES / f"{name}.pkl"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


@needs_fixtures
def test_converted_snapshot_is_the_same_denoiser(tmp_path):
    out = convert("ncsnpp-ve-cond", tmp_path / "ve")
    record = json.loads((out / "model.json").read_text())
    assert record["net_config"]["precond"] == "ve" and record["net_config"]["label_dim"] == 10
    assert record["info"]["converted_from"] == "ncsnpp-ve-cond.pkl"
    a, b = pfdist.load_edm(FIXTURES / "ncsnpp-ve-cond.pkl"), load_spec(out)
    assert (b.sigma_min, b.sigma_max, b.label_dim) == (0.02, 100.0, 10)
    x, labels = torch.randn(2, 3, 16, 16), torch.eye(10)[[3, 7]]
    with torch.no_grad():
        torch.testing.assert_close(b(x, 0.3, labels), a(x, 0.3, labels), rtol=0, atol=0)
    r = runner.invoke(app, ["convert", str(tmp_path / "nope.pkl"), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "does not exist" in r.output


@needs_fixtures
def test_distance_between_converted_snapshots(tmp_path):
    vp, edm = convert("ddpmpp-vp-uncond", tmp_path / "vp"), convert("ddpmpp-edm-uncond", tmp_path / "edm")
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["distance", str(vp), str(edm), "-n", "4", "--steps", "3", "-o", str(out)])
    assert r.exit_code == 0, r.output
    expected = pfdist.pfd(pfdist.load_edm(FIXTURES / "ddpmpp-vp-uncond.pkl"), pfdist.load_edm(FIXTURES / "ddpmpp-edm-uncond.pkl"),
                          num_samples=4, steps=3)
    assert json.loads(out.read_text())["pfd"] == pytest.approx(expected.value, rel=1e-6)
    # A snapshot file itself is accepted too, and is the same map.
    r = runner.invoke(app, ["distance", str(vp), str(FIXTURES / "ddpmpp-vp-uncond.pkl"), "-n", "2", "--steps", "3"])
    assert r.exit_code == 0 and "PFD = 0 " in r.output, r.output


class Recording(torch.nn.Module):
    """Passes calls to ``net`` and records the sigmas and labels it was called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.sigmas, self.labels = net, set(), []
        self.sigma_min, self.sigma_max, self.label_dim, self.config = net.sigma_min, net.sigma_max, net.label_dim, net.config

    def forward(self, x, sigma, class_labels=None):
        self.sigmas.update(torch.as_tensor(sigma).reshape(-1).tolist())
        self.labels.append(class_labels)
        return self.net(x, sigma, class_labels)


@needs_fixtures
def test_flows_stay_in_each_models_sigma_range():
    ve = Recording(pfdist.load_edm(FIXTURES / "ncsnpp-ve-cond.pkl"))  # trained on [0.02, 100], 10 classes
    pfdist.flow_outputs(ve, num_samples=2, flow=FlowSettings(steps=4))
    assert min(ve.sigmas) == pytest.approx(0.02) and max(ve.sigmas) == pytest.approx(80.0)
    assert all(labels.shape == (2, 10) and (labels.sum(1) == 1).all() for labels in ve.labels)  # one-hot
    ve.sigmas.clear()
    pfdist.flow_outputs(ve, num_samples=2, flow=FlowSettings(steps=4, sigma_max=120.0))
    assert max(ve.sigmas) == pytest.approx(100.0)
    vp = Recording(pfdist.load_edm(FIXTURES / "ddpmpp-vp-uncond.pkl"))  # [0.001, 152]: the default grid fits
    pfdist.flow_outputs(vp, num_samples=2, flow=FlowSettings(steps=4))
    assert min(vp.sigmas) == pytest.approx(0.002) and vp.labels == [None] * len(vp.labels)


def test_paper_students_are_edm_ddpmpp_networks():
    paper = get_preset("paper")
    nets = [s.net for s in paper.scaling.students]
    assert [n["model_channels"] for n in nets] == list(PAPER_WIDTHS) and len(nets) == 10
    for n in nets:
        assert (n["arch"], n["channel_mult"], n["num_blocks"], n["attn_resolutions"], n["dropout"]) == (
            "songunet", [2, 2, 2], 4, [16], 0.13)
    with torch.device("meta"):
        counts = [count_parameters(build_network({**n, "shape": [3, 32, 32]})) for n in (nets[0], nets[-1])]
    # EDM's DDPM++ CIFAR-10 network (width 128) has 55.73 M parameters; the smallest has 0.88 M.
    assert [round(c / 1e6, 2) for c in counts] == [0.88, 55.73]


@needs_fixtures
@pytest.mark.filterwarnings("ignore:no collapse fit")  # one student size: nothing to collapse
def test_paper_preset_at_tiny_size_with_a_converted_teacher(tmp_path):
    teacher = convert("ddpmpp-vp-uncond", tmp_path / "teacher")
    student = {**get_preset("paper").scaling.students[0].net, "model_channels": 4}  # the paper's family, narrow
    tiny = {
        "eval": {"num_samples": 4, "test_samples": 4, "loss_repeats": 1, "steps": 3, "batch_size": 4},
        "scaling": {"ns": [2, 4], "students": [{"label": "ddpmpp-4", "net": student}],
                    "train": {"epochs": 1, "epoch_images": 4, "batch_size": 2, "warmup_images": 0,
                              "ema_halflife_images": 4, "checkpoint_every": 1}},
        "dynamics": None, "bias_variance": None,
    }
    r = runner.invoke(app, ["reproduce", "--preset", "paper", "--teacher", str(teacher), "--out", str(tmp_path / "run"),
                            "--set", json.dumps(tiny)])
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "run" / "scaling.csv").read_text().splitlines()
    assert len(rows) == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preset"]["teacher"] == str(teacher) and config["preset"]["eval"]["num_samples"] == 4


def test_preset_overrides_are_checked():
    paper = get_preset("paper")
    assert override(paper, {"eval": {"num_samples": 64}}).eval.num_samples == 64
    assert override(paper, {"dynamics": None}).dynamics is None
    with pytest.raises(PFDistError, match=r"unknown keys \['num_sample'\] in eval"):
        override(paper, {"eval": {"num_sample": 64}})
    r = runner.invoke(app, ["reproduce", "--preset", "paper", "--set", '{"evals": 1}'])
    assert r.exit_code == 2 and "unknown keys ['evals']" in r.output
    r = runner.invoke(app, ["reproduce", "--preset", "paper", "--set", "dynamics=null", "--set", "eval.num_sample=64"])
    assert r.exit_code == 2 and "unknown keys ['num_sample'] in eval" in r.output


def test_set_takes_dot_lists_beside_json():
    changes = set_options(["eval.num_samples=500", "dynamics=null", "name=my-study", "scaling.ns=[2, 4]",
                           '{"eval": {"steps": 4}}'])
    assert changes == [{"eval": {"num_samples": 500}}, {"dynamics": None}, {"name": "my-study"},
                       {"scaling": {"ns": [2, 4]}}, {"eval": {"steps": 4}}]
    p = get_preset("quick")
    for change in changes:
        p = override(p, change)
    assert (p.eval.num_samples, p.eval.flow.steps, p.dynamics, p.name, p.scaling.ns) == (500, 4, None, "my-study", (2, 4))
    for bad in ("eval..steps=4", "=4", "1a=2"):
        with pytest.raises(PFDistError, match="is not a key path"):
            set_options([bad])


def test_set_reaches_eval_fields_left_out_of_the_preset_dict():
    """error_estimate is absent from a preset's dict while off (older keys stay); --set still turns it on."""
    preset = get_preset("quick")
    assert "error_estimate" not in preset.to_dict()["eval"]
    changed = override(preset, set_options(["eval.error_estimate=true"])[0])
    assert changed.eval.error_estimate is True and changed.to_dict()["eval"]["error_estimate"] is True
    assert override(preset, {"eval": {"num_samples": 64}}).to_dict()["eval"] == {**preset.to_dict()["eval"],
                                                                                 "num_samples": 64}
