import numpy as np
import pytest
from PIL import Image

from cxrbench.data.dataset import open_dataset
from cxrbench.data.lists import read_bbox
from cxrbench.data.synth import generate, image_dir, plan, render


def test_layout_and_formats(synth_dir):
    ds = open_dataset(synth_dir)
    assert ds.layout.has_official_lists and ds.layout.bbox_csv is not None
    assert len(ds.metadata) == 48
    paths = ds.layout.image_paths()
    assert set(paths) == set(ds.metadata.names)
    assert all(p.parent == image_dir(synth_dir) for p in paths.values())
    modes = {}
    for name, p in paths.items():
        with Image.open(p) as im:
            assert im.size == (1024, 1024)
            modes[name] = im.mode
    assert sorted(set(modes.values())) == ["I;16", "L", "RGB", "RGBA"]
    boxes = read_bbox(ds.layout.bbox_csv, ds.metadata)
    y = ds.metadata.labels(14)
    assert len(boxes) == int(y.sum())  # one box per planted finding
    raw = ds.layout.bbox_csv.read_text()
    if (y[:, 3] == 1).any():
        assert ",Infiltrate," in raw  # spelled as in the real BBox file
    s = ds.splits(__import__("cxrbench.protocols", fromlist=["x"]).get_protocol("smoke"))
    assert [lk.patients for lk in s.leaks if lk.a == "trainval"] == [0]


def test_realistic_label_frequencies():
    ims = plan(3000, seed=0)
    nf = np.mean([im.labels == ("No Finding",) for im in ims])
    assert 0.48 < nf < 0.60  # 53.8% in the real metadata
    inf = np.mean(["Infiltration" in im.labels for im in ims])
    assert 0.14 < inf < 0.22  # 17.7% in the real metadata
    multi = np.mean([len(im.labels) > 1 for im in ims])
    assert 0.10 < multi < 0.22  # co-occurrence as in the real set (16.2%)
    assert len({im.patient for im in ims}) < 3000


def test_finding_visible_in_its_box():
    ims = plan(200, seed=1, odd=False)
    k, im = next((i, m) for i, m in enumerate(ims) if "Mass" in m.labels and len(m.labels) == 1)
    px = render(im, 1, k)
    _, x, y, w, h = im.boxes[0]
    cx, cy = int(x + w / 2), int(y + h / 2)
    clean = render(type(im)(im.name, ("No Finding",), im.patient, 0, 50, "M", "PA", (), "L"), 1, k)
    assert px[cy, cx] - clean[cy, cx] > 0.25  # the mass adds brightness at its centre
    assert abs(px[10, 10] - clean[10, 10]) < 1e-6  # and nothing outside its box


@pytest.mark.slow
def test_deterministic_across_workers(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    generate(a, 8, seed=5, workers=1)
    generate(b, 8, seed=5, workers=2)
    for p in sorted(image_dir(a).iterdir()):
        assert p.read_bytes() == (image_dir(b) / p.name).read_bytes()
    assert (a / "Data_Entry_2017_v2020.csv").read_bytes() == (b / "Data_Entry_2017_v2020.csv").read_bytes()
    # re-running on a complete folder rewrites nothing; another seed is refused
    mtime = (image_dir(a) / p.name).stat().st_mtime_ns
    generate(a, 8, seed=5, workers=1)
    assert (image_dir(a) / p.name).stat().st_mtime_ns == mtime
    import pytest

    from cxrbench.errors import InputError

    with pytest.raises(InputError, match="different phantom set"):
        generate(a, 8, seed=6)
