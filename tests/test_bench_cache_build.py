"""The cache build benchmark runs on real originals: every method on the same hard-linked files, ratios within
a round, a per-stage profile whose stages add up to the decode, and a projection from the measured rate."""

import os

import pytest

from benchmarks.cache_build import measure, parser, project, stage_profile
from benchmarks.paper_size import lay_out
from cxrbench.data.layout import scan_images

from .conftest import REAL_ORIGINALS


@pytest.mark.slow
def test_benchmark_measures_real_files(tmp_path):
    lay_out(tmp_path / "data", REAL_ORIGINALS, n=12)
    paths = sorted(str(p) for p in scan_images(tmp_path / "data").values())
    assert len(paths) == 12 and all(os.stat(p).st_nlink > 1 for p in paths)  # originals, hard-linked
    res = measure(tmp_path / "data", tmp_path, paths, "cxr", workers=1, rounds=2)
    assert len(res["rounds"]) == 2 and res["median_round"] in res["rounds"]
    for r in res["rounds"]:
        assert r["cache_vs_baseline"] == round(r["cache_build_images_per_s"] / r["baseline_pillow_images_per_s"], 2)
        assert r["inflate_only_images_per_s"] > 0 and r["cache_build_bilinear_images_per_s"] > 0
    ms = stage_profile(paths, n=6, rounds=1)
    parts = ms["read"] + ms["parse_crc_join"] + ms["inflate"] + ms["unfilter_box"]
    assert set(ms) >= {"read", "parse_crc_join", "inflate", "unfilter_box", "compress", "write"}
    assert 0.3 * parts < ms["decode_box_total"] + ms["read"] < 3 * parts
    p = project(100.0, 1.9)
    assert p["minutes_linear"] == round(112_120 / 1600 / 60, 2) and p["two_worker_efficiency"] == 0.95


def test_default_input_is_2520_real_originals(monkeypatch, tmp_path):
    from benchmarks.paper_size import default_sources

    args = parser().parse_args([])
    assert args.n == 2520 and args.sources is None and args.rounds >= 2
    monkeypatch.setenv("CXRBENCH_REAL_DATA", str(tmp_path))  # sources default to $CXRBENCH_REAL_DATA/images
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(REAL_ORIGINALS[0].read_bytes())
    assert default_sources() == [tmp_path / "images" / "a.png"]
