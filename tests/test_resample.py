"""The paper's resampling (Pillow's antialiased bilinear) as a cache option: bit-exact against Pillow on the
real originals, a cache parameter, a protocol field that runs check, and a recorded deviation where it differs."""

import gzip
import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from cxrbench.cache import kernels
from cxrbench.cache.build import build_cache, select_images
from cxrbench.cache.decode import available_decoders, decode_resized, resize
from cxrbench.cache.resample import PRECISION_BITS, bilinear_coefficients
from cxrbench.cache.store import open_cache
from cxrbench.errors import CacheError

from .conftest import REAL_CSV, REAL_ORIGINALS, real_data_or_skip

BILINEAR = Image.Resampling.BILINEAR


def _paper_pipeline(data: bytes) -> np.ndarray:
    """What the paper fed its models before the crop: the PNG opened by PIL, converted to RGB, torchvision's
    Resize(256) (Pillow's bilinear on a PIL image); R = G = B for these files, so one channel says it all."""
    from torchvision import transforms

    im = Image.open(io.BytesIO(data)).convert("RGB")
    a = np.asarray(transforms.Resize(256)(im))
    assert a.shape == (256, 256, 3) and (a[..., 0] == a[..., 2]).all()
    return a[..., 0]


def _assert_bilinear_like_pillow(data: bytes, name: str) -> None:
    ref = _paper_pipeline(data)
    for b in available_decoders():
        assert np.array_equal(decode_resized(b, data, 256, "bilinear").pixels, ref), (name, b)


@pytest.mark.parametrize("path", REAL_ORIGINALS, ids=lambda p: p.name)
def test_bilinear_is_the_papers_resize_bit_for_bit(path):
    data = path.read_bytes()
    _assert_bilinear_like_pillow(data, path.name)
    box = decode_resized("cxr", data, 256).pixels.astype(int)
    assert np.abs(box - _paper_pipeline(data)).max() >= 5  # the box mean is a different image


@pytest.mark.slow
def test_bilinear_on_all_real_originals():
    """Every original in CXRBENCH_REAL_DATA (CI: all 200; skipped without it)."""
    folder = real_data_or_skip()
    paths = sorted((folder / "images").glob("*.png"))
    assert len(paths) >= 4
    for p in paths:
        _assert_bilinear_like_pillow(p.read_bytes(), p.name)


@pytest.mark.parametrize(
    "shape,size",
    [((1000, 900), 256), ((37, 53), 256), ((256, 256), 64), ((1024, 1024), 224), ((300, 301), 250), ((64, 64), 256)],
)
def test_bilinear_other_sizes_equal_pillow(shape, size):
    """Downscaling, upscaling, odd sizes (aspect ratios within the range where Pillow runs the horizontal pass
    first, as every Pillow did before 13 and Pillow 13 still does for these)."""
    g = np.random.default_rng(size).integers(0, 256, shape, dtype=np.uint8)
    ref = np.asarray(Image.fromarray(g).resize((size, size), BILINEAR))
    assert np.array_equal(resize(g, size, "bilinear"), ref)


def test_bilinear_coefficients_are_pillows_fixed_point():
    starts, counts, w = bilinear_coefficients(1024, 256)
    one = 1 << PRECISION_BITS
    # inside: the triangle of half-width 4 sampled at pixel centres, 1 3 5 7 7 5 3 1 (/32), exact in 22 bits
    assert starts[1] == 2 and counts[1] == 8 and w[1, :8].tolist() == [c * one // 32 for c in (1, 3, 5, 7, 7, 5, 3, 1)]
    # the edges are cut and renormalised (here 3.5 of 4 remains), rounded as Pillow rounds
    assert starts[0] == 0 and counts[0] == 6 and abs(int(w[0, :6].sum()) - one) <= 3
    with pytest.raises(ValueError, match="unknown resample 'nearest'"):
        resize(np.zeros((8, 8), np.uint8), 2, "nearest")
    assert kernels.bilinear_resize is not None


def _dataset(root, n=70):
    """The first n real metadata rows, the images cycling through the real originals (RGBA one included)."""
    with gzip.open(REAL_CSV, "rt") as fh:
        lines = [next(fh) for _ in range(n + 1)]
    (root / "images").mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    names = [ln.split(",")[0] for ln in lines[1:]]
    srcs = [p.read_bytes() for p in REAL_ORIGINALS]
    for i, nm in enumerate(names):
        (root / "images" / nm).write_bytes(srcs[i % len(srcs)])
    return names, srcs


@pytest.mark.slow
def test_cache_build_resample_bilinear(tmp_path):
    names, srcs = _dataset(tmp_path / "data")
    bil = build_cache(tmp_path / "data", tmp_path / "bil", workers=1, resample="bilinear").path
    box = build_cache(tmp_path / "data", tmp_path / "box", workers=1).path
    sb, sx = open_cache(bil), open_cache(box)
    assert sb.manifest["params"]["resample"] == "bilinear"
    assert "resample" not in sx.manifest["params"]  # a box store is what it was before the option
    assert sb.fingerprint != sx.fingerprint  # the resampling is part of the store's identity
    pix = sb.read(np.arange(len(names)))
    for i in range(len(srcs)):
        assert np.array_equal(pix[i], _paper_pipeline(srcs[i])), names[i]
    assert not np.array_equal(pix, sx.read(np.arange(len(names))))
    with pytest.raises(CacheError, match="resample 'box' -> 'bilinear'"):
        build_cache(tmp_path / "data", box, workers=1, resample="bilinear")
    with pytest.raises(CacheError, match="unknown --resample 'lanczos'"):
        build_cache(tmp_path / "data", tmp_path / "x", resample="lanczos")
    assert build_cache(tmp_path / "data", bil, resample="bilinear").up_to_date


def test_cli_cache_build_resample(tmp_path):
    from click.testing import CliRunner

    from cxrbench.cli import cli

    _dataset(tmp_path / "data", n=10)
    r = CliRunner().invoke(
        cli,
        [
            "cache",
            "build",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "c"),
            "--resample",
            "bilinear",
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["params"]["resample"] == "bilinear"
    r = CliRunner().invoke(cli, ["cache", "build", "--data-dir", "x", "--out", "y", "--resample", "cubic"])
    assert r.exit_code == 2 and "cubic" in r.output


def test_paper_subset_cache_serves_v1_and_v2(real_metadata):
    from cxrbench.data.subset import select_subset

    rows = set(select_images(real_metadata, "paper").tolist())
    y = real_metadata.labels(15)
    for rule in ("shortfall-unselected", "shortfall-all"):
        assert set(select_subset(y, seed=0, rule=rule).tolist()) <= rows


@pytest.mark.slow
def test_run_refuses_a_cache_of_another_resampling_and_records_the_deviation(synth_cache, synth_dir, tmp_path):
    from cxrbench.protocols import PROTOCOLS, get_protocol
    from cxrbench.results.record import read_record
    from cxrbench.run import RunOptions, run
    from cxrbench.run.bind import bind_cache as bind

    smoke = get_protocol("smoke")
    bilinear_smoke = replace(smoke, id="smoke-bilinear-test", resample="bilinear")
    with pytest.raises(
        CacheError,
        match="resampled with box, protocol smoke-bilinear-test@v1 needs bilinear "
        r"\(cache build --resample bilinear\)",
    ):
        bind(open_cache(synth_cache), bilinear_smoke)
    bil_cache = build_cache(synth_dir, tmp_path / "bil", workers=1, resample="bilinear").path
    with pytest.raises(CacheError, match="resampled with bilinear, protocol smoke@v1 needs box"):
        bind(open_cache(bil_cache), smoke)
    bind(open_cache(bil_cache), bilinear_smoke)  # matching: accepted
    # a box protocol that names the paper says in its record that its images were not resampled as the paper's
    # were; a bilinear one's doesn't, and neither does one that makes no claim to be the paper's (smoke)
    paper_box = replace(smoke, id="paper-box-test")
    for proto in (bilinear_smoke, paper_box):
        PROTOCOLS[proto.key] = proto
    try:
        recs = {}
        for name, proto, cache in (
            ("box", paper_box, synth_cache),
            ("bilinear", bilinear_smoke, bil_cache),
            ("smoke", smoke, synth_cache),
        ):
            opts = RunOptions(
                model="tiny", protocol=proto.key, cache=str(cache), out=str(tmp_path / "runs"), device="cpu"
            )
            recs[name] = read_record(run(replace(opts, run_id=f"r-{name}")).parent)
    finally:
        for proto in (bilinear_smoke, paper_box):
            del PROTOCOLS[proto.key]
    assert not [d for d in recs["smoke"]["deviations"] if "resampled" in d]
    box_dev = [d for d in recs["box"]["deviations"] if "resampled" in d]
    assert box_dev == [
        "images resampled with box (exact area mean (4x4 block mean for 1024 -> 256, area-weighted "
        "for other sizes), rounded half up), not with the reference paper's bilinear (Pillow's "
        "antialiased bilinear, as torchvision's Resize on a PIL image (the reference paper's); "
        "bit-exact)"
    ]
    assert not [d for d in recs["bilinear"]["deviations"] if "resampled" in d]
    assert recs["bilinear"]["protocol"]["settings"]["resample"] == "bilinear"
