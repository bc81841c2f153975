import gzip
import shutil

import pytest

from cxrbench.data.layout import discover, scan_images
from cxrbench.data.lists import list_indices, read_bbox, read_name_list
from cxrbench.errors import InputError

from .conftest import NIH, REAL_BBOX, REAL_CSV, REAL_PNGS


def test_discover_the_real_tables():
    lay = discover(NIH)
    assert lay.metadata_csv == REAL_CSV and lay.bbox_csv == REAL_BBOX
    assert not lay.has_official_lists  # they lie in lists/, not beside the CSV as in the release
    assert lay.image_paths() == {}  # real/images is not one of the release's image folders
    parts = lay.named_split("chexnet-community")
    assert set(parts) == {"train", "val", "test"}
    with pytest.raises(InputError, match="missing: test, train, val"):
        lay.named_split("nope")


def test_official_release_layout(tmp_path):
    """images_001/images/*.png ... images_012/images/*.png, lists beside the CSV."""
    shutil.copy(REAL_CSV, tmp_path / "Data_Entry_2017_v2020.csv.gz")
    for i, png in enumerate(REAL_PNGS):
        d = tmp_path / f"images_{i + 1:03d}" / "images"
        d.mkdir(parents=True)
        shutil.copy(png, d / png.name)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n")
    lay = discover(tmp_path)
    assert lay.has_official_lists
    paths = lay.image_paths()
    last = REAL_PNGS[-1].name
    assert len(paths) == len(REAL_PNGS) and paths[last] == tmp_path / f"images_{len(REAL_PNGS):03d}" / "images" / last
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    shutil.copy(REAL_PNGS[0], flat / "images" / REAL_PNGS[0].name)
    assert list(scan_images(flat)) == [REAL_PNGS[0].name]


def test_discover_errors(tmp_path):
    with pytest.raises(InputError, match="no metadata CSV found"):
        discover(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        discover(tmp_path / "missing")


def test_real_bbox(real_metadata):
    b = read_bbox(REAL_BBOX, real_metadata)
    assert len(b) == 984 and b["image"].nunique() == 880
    assert "Infiltrate" not in set(b["label"]) and (b["label"] == "Infiltration").sum() == 123
    assert set(b["label"]) == {
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
    }
    assert (b[["w", "h"]] > 0).all().all()


def test_bbox_errors(tmp_path, real_metadata):
    p = tmp_path / "BBox_List_2017.csv"
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Cardiomegaly,1,2,3,x\n")
    with pytest.raises(InputError, match=r"line 2: bad box"):
        read_bbox(p)
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Tumour,1,2,3,4\n")
    with pytest.raises(InputError, match=r"line 2: unknown finding 'Tumour'"):
        read_bbox(p)
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n99999999_000.png,Mass,1,2,3,4\n")
    with pytest.raises(InputError, match=r"line 2: image '99999999_000.png' is not in the metadata"):
        read_bbox(p, real_metadata)


def test_name_lists(tmp_path, real_metadata):
    p = tmp_path / "test_list.txt"
    p.write_text("00000001_000.png\n\n00000002_000.png\n")
    assert read_name_list(p) == ["00000001_000.png", "00000002_000.png"]
    assert list(list_indices(p, real_metadata)) == [0, 3]
    p.write_text("00000001_000.png\n00000001_000.png\n")
    with pytest.raises(InputError, match="line 2: image '00000001_000.png' listed twice"):
        read_name_list(p)
    p.write_text("00000001_000.png\n99999999_000.png\n")
    with pytest.raises(InputError) as e:
        list_indices(p, real_metadata)
    assert "test_list.txt, line 2" in str(e.value) and "not in the metadata" in str(e.value)


def test_community_split_lists(real_metadata):
    sizes = {}
    for part in ("train", "val", "test"):
        sizes[part] = len(list_indices(NIH / "splits" / f"chexnet-community_{part}.txt.gz", real_metadata))
    assert sizes == {"train": 78_468, "val": 11_219, "test": 22_433}
    with gzip.open(NIH / "splits" / "chexnet-community_test.txt.gz", "rt") as fh:
        assert fh.readline().strip().endswith(".png")
