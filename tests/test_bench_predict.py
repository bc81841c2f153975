"""The predict benchmark runs on real originals: both paths score the same files with the same model, each
path's time split into its decode + preprocessing and model parts, and its input list is the 1024x1024 PNGs of
a MANIFEST.tsv."""

import shutil

import pytest
from PIL import Image

from benchmarks.predict import originals, png_size, throughput

from .conftest import REAL_ORIGINALS


@pytest.mark.slow
def test_both_paths_score_the_same_real_files():
    paths = [p for p in REAL_ORIGINALS if png_size(p) == (1024, 1024)][:3]
    assert len(paths) == 3
    res = throughput(paths, batch=2)
    assert set(res) == {"cxrbench", "baseline"}
    for r in res.values():
        assert r["seconds"] == pytest.approx(r["decode_preprocess_seconds"] + r["model_seconds"], abs=0.02)
        assert r["images_per_s"] == pytest.approx(3 / r["seconds"], rel=0.02)
        assert 0 < r["decode_share"] < 1


def test_originals_are_the_manifests_1024_pngs(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    names = []
    for i, p in enumerate(REAL_ORIGINALS):
        names.append(f"{i:03d}.png")
        shutil.copyfile(p, tmp_path / "images" / names[-1])
    Image.new("L", (512, 512)).save(tmp_path / "images" / "small.png")  # not an original's size: left out
    names.insert(1, "small.png")
    (tmp_path / "MANIFEST.tsv").write_text("name\tsha256\n" + "".join(f"{n}\tx\n" for n in reversed(names)))
    monkeypatch.setenv("CXRBENCH_REAL_DATA", str(tmp_path))
    square = [n for n in names if png_size(tmp_path / "images" / n) == (1024, 1024)]
    assert "small.png" not in square and len(square) == len(REAL_ORIGINALS)
    assert [p.name for p in originals(len(square))] == list(reversed(square))  # the manifest's order
    with pytest.raises(SystemExit, match=f"only {len(square)} 1024x1024 originals"):
        originals(len(square) + 1)
    monkeypatch.delenv("CXRBENCH_REAL_DATA")
    with pytest.raises(SystemExit, match="set CXRBENCH_REAL_DATA"):
        originals(1)
