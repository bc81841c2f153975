import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

from cxrbench.errors import ModelError, WeightsUnavailable
from cxrbench.models import count_parameters, create_model, get_spec, list_models, register_model
from cxrbench.models.registry import refresh_entry_points

from .conftest import REPO

TABLE2 = {
    "resnet50": 23_538_767,
    "densenet121": 6_969_231,
    "densenet121_attA": 7_920_527,
    "densenet121_attB": 6_971_279,
}


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_table2_parameter_counts(name):
    assert count_parameters(create_model(name, num_classes=15)) == TABLE2[name]


@pytest.mark.parametrize("num_classes", [14, 15])
@pytest.mark.slow
def test_forward_backward_every_model(num_classes):
    torch.manual_seed(0)
    for name in list_models():
        spec = get_spec(name)
        m = create_model(name, num_classes=num_classes)
        x = torch.randn(2, 3, 64, 64)
        f = torch.randn(2, 5)
        out = m(x, f) if spec.nonimage else m(x)
        assert out.shape == (2, num_classes), name
        assert torch.isfinite(out).all(), name
        out.sum().backward()
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert m.get_submodule(spec.cam_layer) is not None


@pytest.mark.slow
def test_attention_maps_sum_to_one():
    for name in list_models():
        spec = get_spec(name)
        if not spec.attention:
            continue
        m = create_model(name).eval()
        x = torch.randn(2, 3, 96, 96)
        logits, maps = m(x, torch.randn(2, 5), return_attention=True) if spec.nonimage else m(x, return_attention=True)
        assert len(maps) >= 2
        for a in maps:
            assert a.shape[0] == 2 and a.dim() == 3
            torch.testing.assert_close(a.flatten(1).sum(1), torch.ones(2))


def _g_gradient(name: str) -> tuple[float, float]:
    """|d loss / d g| (through norm5) against |d loss / d transition3|, for one backward pass in float64 (so the
    cancellation is exact up to float64 rounding on any torch and CPU)."""
    torch.manual_seed(0)
    m = create_model(name).double().eval()
    saved = {}

    def keep(key):
        def hook(mod, inp, out):
            out.retain_grad()
            saved[key] = out

        return hook

    m.features.norm5.register_forward_hook(keep("norm5"))
    m.features.transition3.register_forward_hook(keep("t3"))
    m(torch.randn(2, 3, 128, 128, dtype=torch.float64)).sum().backward()
    return saved["norm5"].grad.abs().max().item(), saved["t3"].grad.abs().max().item()


@pytest.mark.slow
def test_g_cancels_in_the_softmax():
    """attA and attB: g adds one constant to every location; the softmax removes it, so g gets no gradient."""
    for name in ("densenet121_attA", "densenet121_attB"):
        g_grad, local_grad = _g_gradient(name)
        assert local_grad > 1e-4
        assert g_grad < 1e-10 * local_grad, (name, g_grad, local_grad)
    # the ReLU variant lets g shape the attention
    g_grad, local_grad = _g_gradient("densenet121_attA_relu")
    assert g_grad > 1e-3 * local_grad


@pytest.mark.slow
def test_g_part_of_u_gets_zero_gradient():
    """In float64 the g-part of u gets a gradient at float64 rounding level (float32 left it at ~1e-5 of the
    l-part on some torch builds: rounding, not signal)."""
    torch.manual_seed(0)
    m = create_model("densenet121_attB").double().eval()
    m(torch.randn(2, 3, 128, 128, dtype=torch.float64)).sum().backward()
    for s, ch in enumerate((128, 256, 512)):
        gr = m.u[s].weight.grad[0, :, 0, 0]
        assert gr[:ch].abs().max() > 1e-4
        assert gr[ch:].abs().max() < 1e-10 * gr[:ch].abs().max()


def test_registry_duplicate_and_did_you_mean():
    with pytest.raises(ModelError, match="already registered"):
        register_model(lambda num_classes=15, pretrained=False: None, name="densenet121")
    with pytest.raises(ModelError, match="did you mean 'densenet121'"):
        get_spec("densenet12")
    assert list_models("densenet121_att*") == [
        "densenet121_attA",
        "densenet121_attA_nonimage",
        "densenet121_attA_relu",
        "densenet121_attB",
    ]
    assert "tiny" in list_models(exclude="densenet*") and "densenet121" not in list_models(exclude="densenet*")


PLUGIN = textwrap.dedent("""
    import torch
    from torch import nn
    from cxrbench.models import register_model

    @register_model(cam_layer="conv", input_size=32)
    def {name}(num_classes=15, pretrained=False):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.fc = nn.Linear(4, num_classes + {extra})
            def forward(self, x):
                return self.fc(self.conv(x).mean((2, 3)))
        return Net()
""")


def test_file_plugin(tmp_path):
    from cxrbench.models.plugins import load_plugin_file

    p = tmp_path / "my_plugin.py"
    p.write_text(PLUGIN.format(name="filenet", extra=0))
    assert load_plugin_file(p) == ["filenet"]
    spec = get_spec("filenet")
    assert spec.source["kind"] == "file" and len(spec.source["sha256"]) == 64
    assert create_model("filenet", num_classes=14)(torch.zeros(1, 3, 32, 32)).shape == (1, 14)
    assert load_plugin_file(p) == ["filenet"]  # loading the same file twice is harmless


def test_file_plugin_errors(tmp_path):
    from cxrbench.models.plugins import load_plugin_file

    bad = tmp_path / "broken.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(ModelError, match=r"plugin file .*broken.py failed to import: ModuleNotFoundError"):
        load_plugin_file(bad)
    taken = tmp_path / "taken.py"
    taken.write_text(PLUGIN.format(name="resnet50", extra=0))
    with pytest.raises(
        ModelError,
        match=r"plugin file .*taken.py registers model 'resnet50', which is already "
        r"registered \(built-in\)",
    ):
        load_plugin_file(taken)
    wrong = tmp_path / "wrong.py"
    wrong.write_text(PLUGIN.format(name="wrongnet", extra=3))
    load_plugin_file(wrong)
    with pytest.raises(ModelError, match=r"model 'wrongnet' \(file .*wrong.py\) returned output of shape \(2, 18\)"):
        create_model("wrongnet", num_classes=15)
    with pytest.raises(ModelError, match="not found"):
        load_plugin_file(tmp_path / "absent.py")


def test_entry_point_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "fakeplug-1.2.dist-info").mkdir(parents=True)
    (site / "fakeplug-1.2.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.2\n")
    (site / "fakeplug-1.2.dist-info" / "entry_points.txt").write_text(
        "[cxrbench.models]\nepnet = fakeplug_models:epnet\nepbroken = fakeplug_missing:thing\n"
    )
    (site / "fakeplug_models.py").write_text(PLUGIN.format(name="epnet", extra=0))
    monkeypatch.syspath_prepend(str(site))
    refresh_entry_points()
    try:
        assert "epnet" in list_models()
        assert get_spec("epnet").factory is not None
        spec = get_spec("epnet")
        assert spec.source["kind"] == "entry point" and spec.source["distribution"] == "fakeplug"
        assert spec.source["version"] == "1.2" and spec.source_text == "entry point fakeplug 1.2"
        assert create_model("epnet", num_classes=15)(torch.zeros(2, 3, 32, 32)).shape == (2, 15)
        with pytest.raises(ModelError, match=r"plugin epbroken \(fakeplug\) failed to import 'fakeplug_missing:thing'"):
            get_spec("epbroken")
    finally:
        monkeypatch.undo()
        refresh_entry_points()
    assert "epnet" not in list_models()


def test_weights_absent_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailable) as e:
        create_model("densenet121", pretrained=True)
    msg = str(e.value)
    assert "not on this machine" in msg and "--no-pretrained" in msg and "--weights FILE" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "densenet121-a639ec97.pth") in msg


def test_weights_download_failure_is_reported(monkeypatch, tmp_path):
    import cxrbench.models.weights as w

    monkeypatch.delenv("CXRBENCH_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, dst):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(w, "_download", no_network)
    with pytest.raises(WeightsUnavailable, match=r"the download failed \(OSError: Network is unreachable\)"):
        create_model("resnet50", pretrained=True)


def test_weights_from_cache_and_file(monkeypatch, tmp_path):
    """Weights in torchvision's cache (old DenseNet key names included) or a file load into the backbone."""
    import torchvision

    from cxrbench.models.weights import cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    torch.manual_seed(1)
    ref = torchvision.models.densenet121(weights=None)
    sd = ref.state_dict()
    # torchvision's real file: old key names ('norm.1.weight') and no BatchNorm step counters
    old_style = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
        for k, v in sd.items()
        if not k.endswith("num_batches_tracked")
    }
    path, _ = cache_path("densenet121")
    path.parent.mkdir(parents=True)
    torch.save(old_style, path)
    m = create_model("densenet121_attA", pretrained=True)
    assert m.cxrbench_weights["pretrained"] and m.cxrbench_weights["path"] == str(path)
    torch.testing.assert_close(m.features.conv0.weight, ref.features.conv0.weight)
    torch.testing.assert_close(
        m.features.denseblock2.denselayer3.norm1.weight, ref.features.denseblock2.denselayer3.norm1.weight
    )
    f = tmp_path / "resnet.pth"
    r = torchvision.models.resnet50(weights=None)
    torch.save({"state_dict": r.state_dict()}, f)
    m = create_model("resnet50", pretrained=str(f))
    torch.testing.assert_close(m.backbone.layer4[2].conv3.weight, r.layer4[2].conv3.weight)
    assert len(m.cxrbench_weights["sha256"]) == 64
    torch.save({"nonsense": torch.zeros(1)}, f)
    with pytest.raises(ModelError, match="do not fit resnet50"):
        create_model("resnet50", pretrained=str(f))


def test_models_command_json():
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = {x["name"]: x for x in json.loads(r.stdout)}  # stderr: the timm line
    for name, n in TABLE2.items():
        assert rows[name]["parameters_15c"] == n
    assert rows["densenet121_attA"]["cam_layer"] == "features.transition3"
    assert rows["densenet121"]["cam_layer"] == "features.norm5" and rows["tiny"]["source"] == "built-in"


def test_example_plugin_matches_docs_and_runs():
    from pathlib import Path

    from cxrbench.models.plugins import load_plugin_file

    repo = Path(__file__).resolve().parents[1]
    example = (repo / "examples" / "my_model.py").read_text()
    assert example.strip() in (repo / "docs" / "plugins.md").read_text()
    assert load_plugin_file(repo / "examples" / "my_model.py") == ["mynet"]
    m = create_model("mynet", num_classes=15)
    assert 3_000 < count_parameters(m) < 8_000
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 15)


@pytest.mark.slow
def test_models_command_says_how_timm_backbones_are_named_and_whether_timm_is_here(monkeypatch):
    from cxrbench.cli import cli

    monkeypatch.setitem(sys.modules, "timm", None)  # as where timm is not installed
    r = CliRunner().invoke(cli, ["models"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "timm backbones: --model timm/<name> (e.g. timm/resnet18," in text
    assert "timm is not installed (pip install 'cxrbench[timm]')" in text
    r = CliRunner().invoke(cli, ["models", "--json"])
    assert r.exit_code == 0 and {x["name"] for x in json.loads(r.stdout)} >= {"tiny", "densenet121"}
    assert "timm is not installed" in " ".join(r.stderr.split())


@pytest.mark.slow
def test_models_command_finds_timm_without_importing_it(tmp_path):
    """A timm package that fails when imported: `cxrbench models` still works and says timm is there."""
    poisoned = tmp_path / "site" / "timm"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise RuntimeError('timm was imported')\n")
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]))
    r = subprocess.run(
        [sys.executable, "-m", "cxrbench", "models", "--pattern", "tiny"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0 and "timm was imported" not in r.stderr, r.stderr[-2000:]
    assert re.search(r"timm (\S+ )+is installed\.", " ".join(r.stdout.split())), r.stdout
