import gc

import numpy as np
import pytest
import torch

from cxrbench.explain.gradcam import GradCAM
from cxrbench.explain.localization import Geometry, centre_map, iobb, pointing_hit, predicted_box, score_maps
from cxrbench.models import create_model, get_spec


def test_gradcam_matches_captum_on_densenet121():
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    m = create_model("densenet121").eval()
    x = torch.randn(3, 3, 128, 128)
    classes = torch.tensor([[2, 7], [0, 14], [5, 5]])
    with GradCAM(m, "features.norm5") as cam:
        res = cam(x, classes)
    ref_layer = LayerGradCam(m, m.features.norm5)
    for j in range(2):
        ref = ref_layer.attribute(x, target=classes[:, j].tolist(), relu_attributions=True)[:, 0]
        torch.testing.assert_close(res.maps[:, j], ref.float(), rtol=1e-4, atol=1e-6)
    # an untrained model gives some all-negative sums: those maps are zero and flagged, the rest are not
    assert torch.equal(res.degenerate, res.maps.flatten(2).amax(-1) == 0) and not res.degenerate.all()
    assert len(m.features.norm5._forward_hooks) == 0


def test_attA_norm5_is_flagged_degenerate_but_its_cam_layer_is_not():
    torch.manual_seed(0)
    m = create_model("densenet121_attA").eval()
    x = torch.randn(2, 3, 128, 128)
    cls = torch.tensor([[1], [3]])
    with GradCAM(m, "features.norm5") as cam:
        bad = cam(x, cls)
    assert bad.degenerate.all() and (bad.peak_ratio < 1e-6).all()
    assert (bad.normalised() == 0).all()  # never stretched into a picture
    with GradCAM(m, get_spec("densenet121_attA").cam_layer) as cam:
        good = cam(x, cls)
    assert not good.degenerate.any() and (good.peak_ratio > 1e-3).all()
    n = good.normalised((128, 128))
    assert n.shape == (2, 1, 128, 128) and torch.allclose(n.flatten(2).amax(-1), torch.ones(2, 1), atol=0.05)


@pytest.mark.slow
def test_hooks_released_no_memory_growth_over_1000_images():
    torch.manual_seed(0)
    m = create_model("tiny").eval()
    x = torch.randn(50, 3, 64, 64)
    cls = torch.zeros(50, 1, dtype=torch.long)

    def tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, torch.nn.Parameter))

    counts = []
    for _ in range(20):  # 20 x 50 = 1,000 images
        with GradCAM(m, "features.b3") as cam:
            res = cam(x, cls)
        del res
        assert all(len(mod._forward_hooks) == 0 for mod in m.modules())
        counts.append(tensors())
    assert counts[-1] <= counts[2]


def test_gradcam_outside_with_block_refuses():
    m = create_model("tiny")
    cam = GradCAM(m, "features.b3")
    with pytest.raises(RuntimeError, match="inside a `with` block"):
        cam(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, dtype=torch.long))


def test_localization_geometry_and_scores():
    g = Geometry(image_size=256, resize=256, crop=224)
    assert g.scale == 4 and g.offset == 16
    assert g.box_in_crop(64, 64, 400, 40) == (0.0, 0.0, 100.0, 10.0)
    m = np.zeros((20, 20))
    m[5:8, 10:14] = 1.0
    m[6, 12] = 2.0
    assert pointing_hit(m, (10, 5, 14, 8)) and not pointing_hit(m, (0, 0, 5, 5))
    assert predicted_box(m, 0.5) == (10, 5, 14, 8) and predicted_box(m, 0.75) == (12, 6, 13, 7)
    assert iobb(m, (10, 5, 14, 8)) == 1.0
    assert iobb(m, (12, 6, 13, 7)) == pytest.approx(1 / 12)  # the truth covers one of 12 predicted pixels
    s = score_maps([("Mass", (10, 5, 14, 8), m), ("Mass", (0, 0, 2, 2), m), ("Nodule", (0, 0, 2, 2), None)])
    assert s["per_class"]["Mass"]["pointing"] == 0.5 and s["per_class"]["Nodule"]["pointing"] == 0.0
    assert s["overall"]["boxes"] == 3
    c = centre_map(64)
    assert np.unravel_index(np.argmax(c), c.shape) in ((31, 31), (31, 32), (32, 31), (32, 32))


@pytest.mark.long
def test_trained_model_beats_the_centre_baseline_on_synth(synth1000_cache, tmp_path):
    """The planted boxes of a phantom set play the NIH boxes' role: a trained model's heatmaps must localise
    better than the image centre."""
    from cxrbench.results.record import read_record
    from cxrbench.run import RunOptions, run

    rec = read_record(
        run(
            RunOptions(model="tiny_attn", protocol="smoke", cache=str(synth1000_cache), out=str(tmp_path), device="cpu")
        ).parent
    )
    loc = rec["localization"]
    model, centre = loc["model"]["overall"], loc["centre_baseline"]["overall"]
    assert model["boxes"] > 100
    assert model["pointing"] > centre["pointing"], (model, centre)
    assert model["iobb@0.25"] > centre["iobb@0.25"] + 0.1, (model, centre)
