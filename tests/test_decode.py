import io

import numpy as np
import pytest
from PIL import Image

from cxrbench.cache import kernels
from cxrbench.cache.decode import available_decoders, decode_full, decode_resized, resize, to_gray
from cxrbench.cache.png import DecodeError

from .conftest import REAL_ORIGINALS, REAL_PNGS, real_data_or_skip
from .pngutil import png_bytes

BACKENDS = available_decoders()


def test_all_backends_present_here():
    assert BACKENDS == ["cxr", "imagecodecs", "pyspng", "opencv", "pillow"]


def _assert_backends_equal_pillow(data: bytes, name: str) -> None:
    """Every backend gives Pillow's pixels under the documented rules, full size and box-reduced to 256."""
    im = Image.open(io.BytesIO(data))
    ref = _pillow_rule(data)
    small = np.asarray(Image.fromarray(ref).reduce(4))  # Pillow's exact 4x4 mean
    for b in BACKENDS:
        assert np.array_equal(decode_full(b, data), ref), (name, b)
        d = decode_resized(b, data, 256)
        assert np.array_equal(d.pixels, small), (name, b)
        assert d.original_shape == (1024, 1024), (name, b)
        assert d.mode == ("RGBA 8-bit" if im.mode == "RGBA" else "gray 8-bit"), (name, b)


@pytest.mark.parametrize("path", REAL_ORIGINALS, ids=lambda p: p.name)
def test_real_originals_identical_across_backends(path):
    """Original NIH files (tIME chunk, 8 KB IDAT chunks), the RGBA one included."""
    _assert_backends_equal_pillow(path.read_bytes(), path.name)


@pytest.mark.slow
def test_all_real_originals_identical_across_backends():
    """Every original in CXRBENCH_REAL_DATA (CI points it at the 200 originals; skipped without it)."""
    import hashlib

    folder = real_data_or_skip()
    rows = [ln.split("\t") for ln in (folder / "MANIFEST.tsv").read_text().splitlines()[1:] if ln.strip()]
    assert rows, f"{folder}/MANIFEST.tsv lists no image"
    modes = set()
    for name, sha, _, mode, *_ in rows:
        data = (folder / "images" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha, f"{name} differs from its manifest"
        _assert_backends_equal_pillow(data, name)
        modes.add(mode)
    assert len(rows) >= 4 and {"L", "RGBA"} <= modes


def _pillow_rule(data: bytes) -> np.ndarray:
    """Reference: Pillow's decode, then the documented rules."""
    im = Image.open(io.BytesIO(data))
    a = np.asarray(im)
    if im.mode.startswith("I;16") or a.dtype == np.uint16:
        return (a.astype(np.uint16) >> 8).astype(np.uint8)
    if im.mode in ("RGB", "RGBA"):
        return np.asarray(im.convert("RGB").convert("L"))
    if im.mode == "LA":
        return a[:, :, 0]
    return a


@pytest.mark.parametrize("filt", [0, 1, 2, 3, 4], ids=["None", "Sub", "Up", "Average", "Paeth"])
@pytest.mark.parametrize("kind", ["gray8", "gray16", "ga8", "rgb8", "rgba8", "rgb16"])
def test_every_filter_and_format(filt, kind):
    rng = np.random.default_rng(filt)
    h, w = 24, 40
    smooth = np.cumsum(rng.integers(-3, 4, (h, w)), axis=1) + 128
    base = np.clip(smooth, 0, 255).astype(np.uint8)
    arr = {
        "gray8": base,
        "gray16": (base.astype(np.uint16) * 257 + rng.integers(0, 200, (h, w))).astype(np.uint16),
        "ga8": np.dstack([base, rng.integers(0, 256, (h, w), dtype=np.uint8)]),
        "rgb8": np.dstack([base, 255 - base, rng.integers(0, 256, (h, w), dtype=np.uint8)]),
        "rgba8": np.dstack([base, base // 2, 255 - base, np.full((h, w), 255, np.uint8)]),
        "rgb16": np.dstack([base.astype(np.uint16) * 257] * 3).astype(np.uint16),
    }[kind]
    data = png_bytes(arr, filters=[filt], idat_chunks=4)
    ref = _pillow_rule(data)
    for b in BACKENDS:
        assert np.array_equal(decode_full(b, data), ref), (b, kind)


def test_mixed_filters_and_fused_box_kernel():
    rng = np.random.default_rng(0)
    img = np.clip(np.cumsum(rng.integers(-4, 5, (64, 64)), axis=0) + 100, 0, 255).astype(np.uint8)
    data = png_bytes(img, filters=[0, 1, 2, 3, 4, 4, 2, 1], idat_chunks=7)
    expect = ((img.reshape(16, 4, 16, 4).astype(np.int64).sum((1, 3)) + 8) // 16).astype(np.uint8)
    for b in BACKENDS:
        assert np.array_equal(decode_resized(b, data, 16).pixels, expect), b


def test_sixteen_bit_is_shifted_not_saturated():
    a = np.array([[0, 255, 256, 40000, 65535, 1000]], np.uint16).repeat(4, 0)
    data = png_bytes(a, filters=[0], idat_chunks=1)
    for b in BACKENDS:
        assert decode_full(b, data)[0].tolist() == [0, 0, 1, 156, 255, 3], b
    assert np.asarray(Image.open(io.BytesIO(data)).convert("L"))[0, 3] == 255  # what the rule avoids


def test_area_resize_other_sizes():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (1000, 900), dtype=np.uint8)
    out = resize(img, 256)
    # reference: exact area average with rational weights, rounded half up
    ys = np.linspace(0, 1000, 257)
    xs = np.linspace(0, 900, 257)

    def weights(edges, n):
        w = np.zeros((len(edges) - 1, n))
        for o in range(len(edges) - 1):
            for i in range(int(np.floor(edges[o])), min(n, int(np.ceil(edges[o + 1])))):
                w[o, i] = min(edges[o + 1], i + 1) - max(edges[o], i)
        return w / w.sum(1, keepdims=True)

    ref = np.floor(weights(ys, 1000) @ img.astype(np.float64) @ weights(xs, 900).T + 0.5 + 1e-9)
    assert np.abs(out.astype(int) - ref.astype(int)).max() == 0
    # 4x reduction: the general kernel equals the exact box average
    big = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    a = np.empty((16, 16), np.uint8)
    b = np.empty((16, 16), np.uint8)
    kernels.area_resize(big, a)
    kernels.box4(big, b)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_rejected_alike(backend):
    good = REAL_PNGS[0].read_bytes()
    idat = good.index(b"IDAT")  # after IHDR and the originals' tIME chunk
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 100
    cases = {
        "empty": (b"", "empty file"),
        "truncated": (good[: len(good) // 2], "truncated PNG"),
        "jpeg": (jpeg, "JPEG data, not PNG"),
        "no IEND": (good[:-12], "truncated PNG"),
        "bad crc": (
            good[: idat + 100] + bytes([good[idat + 100] ^ 1]) + good[idat + 101 :],
            "bad CRC in the IDAT chunk",
        ),
        "unknown critical chunk": (good[: idat + 3] + b"U" + good[idat + 4 :], "unknown critical chunk 'IDAU'"),
    }
    for data, reason in cases.values():
        with pytest.raises(DecodeError, match=reason):
            decode_resized(backend, data, 256)


def test_to_gray_bgr():
    a = np.zeros((2, 2, 3), np.uint8)
    a[..., 2] = 200  # red in OpenCV's BGR order
    assert to_gray(a, bgr=True)[0, 0] == (200 * 19595 + 32768) >> 16


@pytest.mark.parametrize("shape", [(128, 96), (72, 64), (64, 36)], ids=["wavefront", "serial-rows", "narrow"])
def test_box_kernel_paths_agree_with_reference(shape):
    """The wavefront kernel (height a multiple of 32) and the row kernel give the reference result."""
    from cxrbench.cache.png import inflate, parse

    rng = np.random.default_rng(sum(shape))
    h, w = shape
    img = np.clip(np.cumsum(rng.integers(-9, 10, (h, w)), axis=1) + rng.integers(0, 256, (h, 1)), 0, 255)
    img = img.astype(np.uint8)
    filters = list(rng.integers(0, 5, 50))
    data = png_bytes(img, filters=filters, idat_chunks=5)
    raw = np.frombuffer(inflate(parse(data)), np.uint8)
    out = np.empty((h // 4, w // 4), np.uint8)
    assert kernels.gray8_box4(raw, w, h, out) == 0
    expect = ((img.reshape(h // 4, 4, w // 4, 4).astype(np.int64).sum((1, 3)) + 8) // 16).astype(np.uint8)
    assert np.array_equal(out, expect)
    bad = raw.copy()
    bad[(h // 2) * (w + 1)] = 7  # an invalid filter byte in row h/2
    assert kernels.gray8_box4(bad, w, h, out) == 1 + h // 2
    with pytest.raises(DecodeError, match=f"invalid filter type in row {h // 2}"):
        import zlib

        from .pngutil import _chunk

        body = zlib.compress(bad.tobytes())
        ihdr = __import__("struct").pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
        decode_resized(
            "cxr",
            b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""),
            w // 4 if w == h else h // 4,
        )
