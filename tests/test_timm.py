"""timm backbones by name (`--model timm/<architecture>`): the Grad-CAM layer from timm's feature info, weights
from a file for everything but the classifier, a smoke run recorded and reloaded like any model."""

from __future__ import annotations

import pytest
import torch

from cxrbench.errors import ModelError, WeightsUnavailable

timm = pytest.importorskip("timm")


def test_spec_from_feature_info_and_unknown_names():
    from cxrbench.models import create_model, get_spec

    spec = get_spec("timm/resnet18")
    assert spec.cam_layer == "layer4" and spec.source["kind"] == "timm" and spec.source["architecture"] == "resnet18"
    assert get_spec("timm/efficientnet_b0").cam_layer == "blocks.6"
    model = create_model("timm/resnet18", num_classes=15)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 15) and model.cxrbench_weights == {"pretrained": False}
    with pytest.raises(ModelError, match=r"unknown timm model 'resnet181'; did you mean 'timm/resnet18'"):
        get_spec("timm/resnet181")


def test_weights_file_loads_everything_but_the_classifier(tmp_path, monkeypatch):
    from cxrbench.models import create_model

    torch.manual_seed(3)
    imagenet = timm.create_model("resnet18", num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    model = create_model("timm/resnet18", num_classes=15, pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight) and model.fc.out_features == 15
    assert model.cxrbench_weights["origin"] == "file" and len(model.cxrbench_weights["sha256"]) == 64
    with pytest.raises(WeightsUnavailable, match="not found"):
        create_model("timm/resnet18", pretrained=str(tmp_path / "none.pth"))
    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: nothing there
    monkeypatch.setattr("cxrbench.models.timm_models._cached_file", lambda hub_id: None)
    with pytest.raises(WeightsUnavailable, match=r"not in the local Hugging Face cache and downloads are off"):
        create_model("timm/resnet18", pretrained=True)


@pytest.mark.parametrize("arch", ["test_resnet", pytest.param("resnet18", marks=pytest.mark.long)])
@pytest.mark.slow
def test_smoke_run_of_a_timm_model_is_recorded_and_reloaded(synth_cache, tmp_path, arch):
    """timm's 0.4M-parameter test ResNet in the default suite; resnet18 (minutes on 2 loaded cores) as slow."""
    import numpy as np

    import cxrbench
    from cxrbench.cache.store import open_cache
    from cxrbench.run import RunOptions, run

    opts = RunOptions(model=f"timm/{arch}", protocol="smoke", cache=str(synth_cache), out=str(tmp_path), device="cpu")
    rec = run(opts)
    r = cxrbench.load_run(rec.parent)
    assert rec.parent.name == f"timm_{arch}__smoke@v1__lr0.1__seed0"
    assert r.record.model.source_kind == "timm" and r.record.model.parameters == sum(
        p.numel() for p in timm.create_model(arch, num_classes=15).parameters()
    )
    assert len(r.history) == 20 and r.history["val_loss"].notna().all()
    store = open_cache(synth_cache)
    pos = {str(n): i for i, n in enumerate(store.names())}
    pixels = store.read(np.array([pos[n] for n in r.test.images[:2]]))
    got = r.probabilities(r.model(), pixels)
    assert np.abs(got - r.test.probabilities[:2]).max() < 1e-5
