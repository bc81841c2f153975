"""PNG decoder backends, one conversion rule per odd image, and the resize to the cache size.

Backends: `cxr` (strict container check + libdeflate + numba unfilter fused with the box average: the
fastest), `imagecodecs`, `pyspng`, `opencv`, `pillow`. All of them give identical pixels (tests check it
on the real PNGs and on PNGs with every filter type and several IDAT chunks), and all reject the same bad
files, because each runs the same container check (`png.parse`) first.

Rules (documented in README, one per case):
- 8-bit gray: as stored.
- 16-bit samples: the high byte (v >> 8), never Pillow's saturating convert("L").
- RGB / RGBA (519 RGBA files exist in the real release): ITU-R 601 luma as Pillow's convert("L") computes it;
  alpha is ignored.
- gray+alpha: the gray channel. Palette, sub-byte and interlaced PNGs: decoded by Pillow, then the rules above
  (as are gray+alpha files under pyspng, which cannot read them).
- Any size other than 4x the cache size: area resize (exact 4x4 box average for 1024 -> 256); the original
  shape is recorded.
- `resample="bilinear"` instead resizes as the reference paper did (torchvision's Resize on a PIL image):
  Pillow's antialiased bilinear, bit for bit (cache/resample.py), after the same conversion rules.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cxrbench.cache import kernels
from cxrbench.cache.png import DecodeError, PngInfo, inflate, parse
from cxrbench.cache.resample import RESAMPLES, bilinear_coefficients

# measured order, fastest first (benchmarks/results/cache_build-*.json); the default is the first present
PREFERENCE = ("cxr", "imagecodecs", "pyspng", "opencv", "pillow")


@dataclass(frozen=True)
class Decoded:
    """One image, resized: pixels (size, size) uint8 plus what the rules did."""

    pixels: np.ndarray
    original_shape: tuple[int, int]
    mode: str  # e.g. "gray 8-bit", "RGBA 8-bit"


def to_gray(a: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Apply the conversion rules to a decoded array: (H, W[, C]) uint8/uint16 -> (H, W) uint8."""
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise DecodeError(f"unsupported sample type {a.dtype}")
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] in (1, 2):
        return np.ascontiguousarray(a[:, :, 0])
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[:, :, 2::-1] if bgr else a[:, :, :3]
        r, g, b = (rgb[:, :, i].astype(np.uint32) for i in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).astype(np.uint8)
    raise DecodeError(f"unsupported pixel layout {a.shape}")


@lru_cache(maxsize=32)
def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return bilinear_coefficients(in_size, out_size)


def resize(gray: np.ndarray, size: int, resample: str = "box") -> np.ndarray:
    """`box`: exact 4x4 box average when the image is 4x `size`, else area resize. `bilinear`: Pillow's
    `Image.resize((size, size), BILINEAR)` (horizontal pass, then vertical, as Pillow through 12.x does it)."""
    if resample not in RESAMPLES:
        raise ValueError(f"unknown resample {resample!r} (known: {', '.join(RESAMPLES)})")
    out = np.empty((size, size), np.uint8)
    h, w = gray.shape
    if resample == "bilinear":
        kernels.bilinear_resize(np.ascontiguousarray(gray), out, *_bilinear_taps(w, size), *_bilinear_taps(h, size))
    elif h == 4 * size and w == 4 * size:
        kernels.box4(gray, out)
    else:
        kernels.area_resize(np.ascontiguousarray(gray), out)
    return out


def _fused_full(info: PngInfo) -> np.ndarray:
    raw = np.frombuffer(inflate(info), np.uint8)
    out = np.empty((info.height, info.width), np.uint8)
    if info.color_type == 0 and info.bit_depth == 8:
        bad = kernels.gray8_unfilter(raw, info.width, info.height, out)
    else:
        bad = kernels.unfilter_to_gray(raw, info.width, info.height, _channels(info), info.bit_depth, out)
    if bad:
        raise DecodeError(f"damaged PNG image data: invalid filter type in row {bad - 1}")
    return out


def _channels(info: PngInfo) -> int:
    from cxrbench.cache.png import CHANNELS

    return CHANNELS[info.color_type]


def _fused_supported(info: PngInfo) -> bool:
    return info.interlace == 0 and info.color_type != 3 and info.bit_depth in (8, 16)


def _pillow_full(data: bytes) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            im: Image.Image = opened
            if im.mode in ("P", "PA", "1", "L;1", "L;2", "L;4"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            if im.mode == "I":  # 16-bit gray opened as 32-bit by older Pillow releases
                return to_gray(np.asarray(im).astype(np.uint16))
            return to_gray(np.asarray(im))
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"Pillow could not decode it: {type(e).__name__}: {e}") from None


def _library(name: str, decode, data: bytes) -> np.ndarray:
    """A library decoder's array under the rules; its own errors become DecodeError."""
    try:
        return to_gray(decode(data))
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"{name} could not decode it: {e}") from None


def _opencv_full(data: bytes) -> np.ndarray:
    """OpenCV's decode under the rules; its cv2.error (and a None result) become DecodeError, per file."""
    import cv2

    try:
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception as e:  # cv2.error
        raise DecodeError(f"OpenCV could not decode it: {type(e).__name__}: {str(e).strip()}") from None
    if a is None:
        raise DecodeError("OpenCV could not decode it")
    return to_gray(a, bgr=True)


def _decode_full(backend: str, data: bytes) -> np.ndarray:
    """The whole image as 8-bit gray under the rules (the container is checked first, for every backend)."""
    info = parse(data)
    if backend == "cxr":
        return _fused_full(info) if _fused_supported(info) else _pillow_full(data)
    if backend == "pillow":
        return _pillow_full(data)
    if backend == "imagecodecs":
        import imagecodecs

        return _library("imagecodecs", imagecodecs.png_decode, data)
    if backend == "pyspng":
        import pyspng

        if info.color_type == 4:  # pyspng cannot read gray+alpha: Pillow decodes those
            return _pillow_full(data)
        return _library("pyspng", pyspng.load, data)
    if backend == "opencv":
        return _opencv_full(data)
    raise ValueError(f"unknown decoder {backend!r}")


def decode_full(backend: str, data: bytes) -> np.ndarray:
    """Public form of the full decode (tests compare backends pixel for pixel with it)."""
    return _decode_full(backend, data)


def decode_resized(backend: str, data: bytes, size: int, resample: str = "box") -> Decoded:
    """Decode and resize one PNG (`resample`: box or bilinear); raises DecodeError with the reason for a bad file."""
    info = parse(data)
    if (
        resample == "box"
        and backend == "cxr"
        and _fused_supported(info)
        and info.color_type == 0
        and info.bit_depth == 8
        and info.width == 4 * size
        and info.height == 4 * size
    ):
        raw = np.frombuffer(inflate(info), np.uint8)
        out = np.empty((size, size), np.uint8)
        bad = kernels.gray8_box4(raw, info.width, info.height, out)
        if bad:
            raise DecodeError(f"damaged PNG image data: invalid filter type in row {bad - 1}")
        return Decoded(out, (info.height, info.width), info.mode)
    gray = _decode_full(backend, data)
    return Decoded(resize(gray, size, resample), (info.height, info.width), info.mode)


def available_decoders() -> list[str]:
    """Backends importable here, fastest first."""
    import importlib.util

    mods = {"cxr": "numba", "imagecodecs": "imagecodecs", "pyspng": "pyspng", "opencv": "cv2", "pillow": "PIL"}
    return [b for b in PREFERENCE if importlib.util.find_spec(mods[b]) is not None]


def default_decoder() -> str:
    return available_decoders()[0]


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel once, before worker processes fork."""
    raw = np.zeros(8 * 9, np.uint8)
    kernels.gray8_box4(raw, 8, 8, np.empty((2, 2), np.uint8))
    kernels.gray8_box4(np.zeros(32 * 33, np.uint8), 32, 32, np.empty((8, 8), np.uint8))
    kernels.gray8_unfilter(np.zeros(32 * 33, np.uint8), 32, 32, np.empty((32, 32), np.uint8))
    kernels.unfilter_to_gray(np.zeros(2 * 7, np.uint8), 2, 2, 3, 8, np.empty((2, 2), np.uint8))
    kernels.box4(np.zeros((8, 8), np.uint8), np.empty((2, 2), np.uint8))
    kernels.area_resize(np.zeros((5, 7), np.uint8), np.empty((2, 2), np.uint8))
    resize(np.zeros((8, 8), np.uint8), 2, "bilinear")
