"""A strict PNG container reader: signature, chunks, CRCs, IHDR and the concatenated IDAT stream.

Every decoder backend runs this check first, so that all backends reject the same broken files (zero-byte,
truncated, damaged, non-PNG) with the same reason, and none of them pads a truncated image.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The most pixels (width x height) any decoder is allowed to allocate for, checked from the header before
# any backend decodes: 8192 x 8192. ChestX-ray14's images are 1024 x 1024; at the limit a 16-bit RGBA image
# needs 512 MiB. Without it, a 389 KB PNG that really is 20000 x 20000 makes a decoder allocate ~900 MB.
MAX_PIXELS = 8192 * 8192
_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
# bytes per complete pixel for (colour type, bit depth) with depth >= 8
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class DecodeError(Exception):
    """An image that cannot be decoded; `reason` says why in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int
    idat: bytes  # the concatenated zlib stream

    @property
    def bpp(self) -> int:
        """Bytes per pixel for the filter (1 for sub-byte depths)."""
        return max(1, CHANNELS.get(self.color_type, 1) * self.bit_depth // 8)

    @property
    def row_bytes(self) -> int:
        return (self.width * CHANNELS.get(self.color_type, 1) * self.bit_depth + 7) // 8

    @property
    def filtered_size(self) -> int:
        """Size of the inflated, still filtered, non-interlaced image data."""
        return self.height * (1 + self.row_bytes)

    @property
    def mode(self) -> str:
        names = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}
        return f"{names.get(self.color_type, '?')} {self.bit_depth}-bit"


def describe_non_png(data: bytes) -> str:
    """What a file that is not a PNG seems to be, in words: never its bytes (it may be any file at all)."""
    if len(data) == 0:
        return "empty file (0 bytes)"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG data, not PNG (the file is named .png but holds a JPEG)"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF data, not PNG"
    if data[:2] == b"BM":
        return "BMP data, not PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF data, not PNG"
    return f"not a PNG file ({len(data):,} bytes without the PNG signature)"


def _chunk_name(ctype: bytes) -> str:
    """A chunk type for a message: the four letters when it is letters, never other raw bytes."""
    return repr(ctype.decode("ascii")) if ctype.isalpha() and ctype.isascii() else "with an invalid type"


def parse(data: bytes) -> PngInfo:
    """Walk the chunks of a PNG, checking the CRC of every chunk, that IHDR is the first chunk and the only one,
    and that the IDAT chunks are consecutive (as the PNG specification requires); raises DecodeError. Every
    backend runs this first, so all of them give the same verdict on these files."""
    if data[:8] != SIGNATURE:
        if len(data) < 8 and SIGNATURE.startswith(data) and data:
            raise DecodeError(f"truncated PNG ({len(data)} bytes)")
        raise DecodeError(describe_non_png(data))
    pos = 8
    n = len(data)
    ihdr = None
    idat: list[bytes] = []
    last = b""
    while True:
        if pos + 8 > n:
            raise DecodeError(f"truncated PNG: file ends at byte {n} before the IEND chunk")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 8 + length + 4
        if end > n:
            raise DecodeError(
                f"truncated PNG: chunk {_chunk_name(ctype)} at byte {pos} runs past the end of the file ({n} bytes)"
            )
        body = data[pos + 8 : pos + 8 + length]
        if ctype[:1].isupper() and ctype not in _CRITICAL:
            raise DecodeError(f"damaged PNG: unknown critical chunk {_chunk_name(ctype)} at byte {pos}")
        # every chunk's CRC, ancillary ones too: decoders differ on a bad ancillary CRC (libpng drops the chunk,
        # others refuse the file), so the one container check refuses it for all of them
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            name = ctype.decode("ascii") if ctype.isalpha() and ctype.isascii() else "(invalid type)"
            raise DecodeError(f"damaged PNG: bad CRC in the {name} chunk at byte {pos}")
        if ctype == b"IHDR":
            if ihdr is not None or pos != 8:
                raise DecodeError(f"damaged PNG: an IHDR chunk at byte {pos} that is not the first chunk")
            if length != 13:
                raise DecodeError("damaged PNG: IHDR chunk of the wrong size")
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            if idat and last != b"IDAT":
                raise DecodeError(
                    f"damaged PNG: the IDAT chunks are not consecutive ({_chunk_name(last)} chunk before the IDAT "
                    f"at byte {pos})"
                )
            idat.append(body)
        elif ctype == b"IEND":
            break
        last = ctype
        pos = end
    if ihdr is None:
        raise DecodeError("damaged PNG: no IHDR chunk")
    w, h, depth, ctype_, comp, filt, interlace = ihdr
    if w == 0 or h == 0 or comp != 0 or filt != 0 or interlace > 1 or ctype_ not in CHANNELS:
        raise DecodeError(f"damaged PNG: invalid header ({w}x{h}, colour type {ctype_}, depth {depth})")
    if w * h > MAX_PIXELS:
        raise DecodeError(
            f"image too large: {w}x{h} is {w * h:,} pixels, over the limit of {MAX_PIXELS:,} "
            "(8192 x 8192) that every decoder enforces before it allocates"
        )
    if not idat:
        raise DecodeError("damaged PNG: no image data (IDAT) chunk")
    return PngInfo(w, h, depth, ctype_, interlace, b"".join(idat))


def inflate(info: PngInfo) -> bytes:
    """The filtered image data (libdeflate through imagecodecs when present, else zlib), size-checked."""
    expected = info.filtered_size
    try:
        import imagecodecs

        out = imagecodecs.deflate_decode(info.idat, out=expected + 1)
    except ImportError:
        d = zlib.decompressobj()
        try:
            out = d.decompress(info.idat, expected + 1)
        except zlib.error as e:
            raise DecodeError(f"damaged PNG image data: {e}") from None
        if not d.eof and len(out) <= expected:
            raise DecodeError(f"truncated PNG image data: inflated {len(out)} of {expected} bytes") from None
    except Exception as e:  # imagecodecs.DeflateError and friends
        raise DecodeError(f"damaged or truncated PNG image data: {e}") from None
    if len(out) != expected:
        raise DecodeError(f"truncated or damaged PNG image data: inflated {len(out)} bytes, expected {expected}")
    return bytes(out) if not isinstance(out, bytes) else out
