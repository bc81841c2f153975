"""Image files a user brings to a trained model (PNG, JPEG, DICOM), decoded to the cache's 8-bit gray and size.

A PNG goes through exactly the cache build's code (`cxrbench.cache.decode.decode_resized`: the container check,
the conversion rules, the resize), so a ChestX-ray14 original predicted from its file gives the pixels the run
was scored on. Other formats are first turned into one gray image, then resized by the same `resize`:

- JPEG (Pillow): grey as stored; RGB (and CMYK, converted to RGB by Pillow) by the cache's luma rule.
- DICOM (pydicom): the modality LUT (rescale slope and intercept, or a Modality LUT Sequence), then the VOI
  LUT if the file has one (its output range mapped onto 0-255), else the first window centre/width by the
  standard's linear function (PS3.3 C.11.2.1.2.1), else the image's own minimum-maximum range; MONOCHROME1
  is inverted (white is low). RGB / YCbCr files use the luma rule. Multi-frame files and pixel data that
  pydicom cannot decode here (a compressed transfer syntax without its handler) are refused with the reason.

Every problem is an `InputError` naming the file, so that a folder of files skips the bad ones by name.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from cxrbench.errors import InputError

MAX_IMAGE_BYTES = 512 << 20  # one X-ray file; the largest DICOM radiographs are tens of MB
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")  # what a folder is searched for


def sniff(data: bytes) -> str | None:
    """The format of a file's bytes by their signature: png, jpeg, dicom, or None."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def read_gray(path: str | Path, size: int, resample: str = "box") -> np.ndarray:
    """The (size, size) uint8 image of a PNG, JPEG or DICOM file under the cache's rules (module docstring)."""
    from cxrbench.files import read_regular

    path = Path(path)
    data = read_regular(path, MAX_IMAGE_BYTES, "image", follow=True)
    return decode_bytes(data, size, resample, path)


def decode_bytes(data: bytes, size: int, resample: str = "box", source: str | Path = "image") -> np.ndarray:
    """`read_gray` on bytes already read; `source` names them in errors."""
    from cxrbench.cache.decode import decode_resized, default_decoder, resize
    from cxrbench.cache.png import DecodeError

    kind = sniff(data)
    try:
        if kind == "png":
            return decode_resized(default_decoder(), data, size, resample).pixels
        if kind == "jpeg":
            return resize(_jpeg(data), size, resample)
        if kind == "dicom":
            return resize(dicom_gray(data, source), size, resample)
    except DecodeError as e:
        raise InputError(source, f"cannot be decoded: {e}") from None
    raise InputError(source, "is not a PNG, JPEG or DICOM file (its first bytes are none of their signatures)")


def _too_large(w: int, h: int, frames: int = 1) -> str | None:
    """Why an image of this size (from its header) is refused before decoding, or None: the cache's PNG limit
    (`cxrbench.cache.png.MAX_PIXELS`) holds for every format."""
    from cxrbench.cache.png import MAX_PIXELS

    if w * h * frames > MAX_PIXELS:
        return (
            f"image too large: {w}x{h}{f' x {frames} frames' if frames > 1 else ''} is {w * h * frames:,} pixels, "
            f"over the limit of {MAX_PIXELS:,} (8192 x 8192) checked before decoding"
        )
    return None


def _jpeg(data: bytes) -> np.ndarray:
    import warnings

    from PIL import Image

    from cxrbench.cache.decode import to_gray
    from cxrbench.cache.png import DecodeError

    try:
        with warnings.catch_warnings():  # the size is checked below, from the header, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        with im:
            why = _too_large(*im.size)
            if why is not None:
                raise DecodeError(why)
            im.load()
            return to_gray(np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB")))
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError(f"image too large: {e}") from None
    except Exception as e:
        raise DecodeError(f"Pillow could not decode the JPEG: {type(e).__name__}: {e}") from None


def window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2.1) onto 0-255, as float."""
    if width < 1:
        raise ValueError(f"window width {width} is below 1")
    lo = centre - 0.5 - (width - 1) / 2
    hi = centre - 0.5 + (width - 1) / 2
    y = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.where(values <= lo, 0.0, np.where(values > hi, 255.0, y))


def _first(v) -> float:
    """The first value of a DICOM attribute that may hold several (WindowCenter 40\\400)."""
    try:
        return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"not a number: {v!r}") from None


def dicom_gray(data: bytes, source: str | Path = "image") -> np.ndarray:
    """A DICOM file's image as (H, W) uint8 display values (the module docstring's rules)."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise InputError(
            source, "is a DICOM file; reading DICOM needs pydicom: pip install 'cxrbench[dicom]'"
        ) from None
    from cxrbench.cache.decode import to_gray

    _bounded_deflate(data, source)
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:
        raise InputError(source, f"is not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise InputError(source, "is a DICOM file without an image (no Pixel Data)")
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise InputError(source, "has a Rows, Columns or Number of Frames that is not a number") from None
    why = _too_large(rows, cols, max(frames, 1))
    if why is not None:
        raise InputError(source, why)
    if frames > 1:
        raise InputError(source, f"is a multi-frame DICOM file ({frames} frames); give one radiograph per file")
    try:
        raw = ds.pixel_array
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" (transfer syntax {ts.name})" if ts is not None else ""
        raise InputError(
            source, f"holds pixel data that cannot be decoded here{what}: {type(e).__name__}: {e}"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if raw.ndim == 3:  # colour (pydicom gives YCbCr as RGB): the cache's luma rule on 8 bits
        if raw.dtype != np.uint8:
            raise InputError(source, f"colour DICOM with {raw.dtype} samples is not supported")
        return to_gray(raw)
    if raw.ndim != 2:
        raise InputError(source, f"has an image of shape {raw.shape}; one 2-D radiograph is needed")
    try:
        m = np.asarray(apply_modality_lut(raw, ds))
        v = m.astype(np.float64)
        if "VOILUTSequence" in ds:  # a LUT is indexed by whole modality values
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            idx = m if m.dtype.kind in "iu" else np.rint(v).astype(np.int64)
            out = np.asarray(apply_voi_lut(idx, ds), dtype=np.float64) * (255.0 / (2**bits - 1))
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            out = window(v, _first(ds.WindowCenter), _first(ds.WindowWidth))
        else:
            lo, hi = float(v.min()), float(v.max())
            out = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    except InputError:
        raise
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        raise InputError(source, f"has a modality or VOI LUT that cannot be applied ({why})") from None
    if not np.isfinite(out).all():
        raise InputError(source, "its rescale or window gives non-finite values")
    gray = np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset zlib-compressed


def _bounded_deflate(data: bytes, source: str | Path) -> None:
    """A deflated DICOM dataset inflates within MAX_IMAGE_BYTES (pydicom inflates it whole when it reads the
    file, before any header can be checked); else an InputError naming the file."""
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception:
        return  # not readable as DICOM: dcmread says why
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        z.decompress(data[fp.tell() :], MAX_IMAGE_BYTES)
    except zlib.error as e:
        raise InputError(source, f"is a deflated DICOM file that cannot be inflated ({e})") from None
    if z.unconsumed_tail:
        raise InputError(source, f"is a deflated DICOM file that inflates to over {MAX_IMAGE_BYTES:,} bytes")


def find_images(paths: list[str | Path]) -> list[Path]:
    """Files given, and the files under folders given whose names end in one of SUFFIXES (sorted, no links
    followed into other folders); each file once, in the order given."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        found = sorted(q for q in p.rglob("*") if q.suffix.lower() in SUFFIXES and q.is_file()) if p.is_dir() else [p]
        for q in found:
            if q not in seen:
                seen.add(q)
                out.append(q)
    return out
