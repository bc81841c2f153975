"""A minimal PNG writer for tests: every filter type, several IDAT chunks, 8/16-bit, gray/GA/RGB/RGBA."""

from __future__ import annotations

import struct
import zlib

import numpy as np

COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filter_rows(raw: np.ndarray, bpp: int, filters: list[int]) -> bytes:
    """Apply PNG filters (one per row, cycled) to rows of bytes (H, rowbytes)."""
    out = bytearray()
    prev = np.zeros(raw.shape[1], np.int32)
    for y, row in enumerate(raw.astype(np.int32)):
        f = filters[y % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if f == 0:
            enc = row
        elif f == 1:
            enc = row - left
        elif f == 2:
            enc = row - prev
        elif f == 3:
            enc = row - ((left + prev) >> 1)
        else:
            enc = row - np.array([_paeth(int(a), int(b), int(c)) for a, b, c in zip(left, prev, upleft)])
        out.append(f)
        out += (enc & 255).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


def png_bytes(a: np.ndarray, filters: list[int] = (0, 1, 2, 3, 4), idat_chunks: int = 3) -> bytes:
    """Encode (H, W) or (H, W, C) uint8/uint16 as PNG with the given per-row filters and IDAT split."""
    a = np.asarray(a)
    h, w = a.shape[:2]
    ch = 1 if a.ndim == 2 else a.shape[2]
    depth = 16 if a.dtype == np.uint16 else 8
    samples = a.reshape(h, w * ch)
    raw = samples.astype(">u2").view(np.uint8).reshape(h, -1) if depth == 16 else samples.astype(np.uint8)
    data = zlib.compress(filter_rows(raw, ch * depth // 8, list(filters)), 6)
    parts = np.array_split(np.frombuffer(data, np.uint8), idat_chunks)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, COLOR_TYPE[ch], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(_chunk(b"IDAT", p.tobytes()) for p in parts)
        + _chunk(b"IEND", b"")
    )
