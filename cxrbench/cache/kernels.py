"""numba kernels: PNG unfiltering fused with the 4x4 box average, grayscale conversion, area resize.

`gray8_box4` is the hot path for ChestX-ray14 (8-bit grayscale 1024x1024): one pass over the inflated rows
that unfilters each row into a two-row ring and adds it into a 256-wide accumulator, so the 1024x1024 image
is never materialised. Everything else (other depths, colours, sizes) goes through `unfilter_to_gray` +
`area_resize`, which give the same pixels as a library decoder followed by the same resize.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(cache=True, nogil=True, boundscheck=False)


@numba.njit(**_JIT)
def _unfilter_row(f, row, prev, cur, bpp):
    """Undo one PNG filter (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) into `cur`; returns False if f is bad."""
    n = row.shape[0]
    if f == 0:
        for x in range(n):
            cur[x] = row[x]
    elif f == 1:
        for x in range(n):
            a = np.int32(cur[x - bpp]) if x >= bpp else np.int32(0)
            cur[x] = (np.int32(row[x]) + a) & 255
    elif f == 2:
        for x in range(n):
            cur[x] = (np.int32(row[x]) + np.int32(prev[x])) & 255
    elif f == 3:
        for x in range(n):
            a = np.int32(cur[x - bpp]) if x >= bpp else np.int32(0)
            cur[x] = (np.int32(row[x]) + ((a + np.int32(prev[x])) >> 1)) & 255
    elif f == 4:
        for x in range(n):
            b = np.int32(prev[x])
            if x >= bpp:
                a = np.int32(cur[x - bpp])
                c = np.int32(prev[x - bpp])
            else:
                a = np.int32(0)
                c = np.int32(0)
            pa = abs(b - c)
            pb = abs(a - c)
            pc = abs(a + b - 2 * c)
            if pa <= pb and pa <= pc:
                p = a
            elif pb <= pc:
                p = b
            else:
                p = c
            cur[x] = (np.int32(row[x]) + p) & 255
    else:
        return False
    return True


@numba.njit(**_JIT)
def gray8_box4(raw, width, height, out):
    """8-bit gray, width and height multiples of 4: unfilter + exact 4x4 box average ((sum + 8) >> 4).

    Returns 0 on success, or 1 + the row index of a bad filter byte.
    """
    stride = width + 1
    ring = np.zeros((2, width), np.uint8)
    acc = np.zeros(width // 4, np.uint32)
    for y in range(height):
        base = y * stride
        f = raw[base]
        row = raw[base + 1 : base + stride]
        prev = ring[(y + 1) & 1]
        cur = ring[y & 1]
        if f == 2:  # Up: the most frequent filter in the NIH files, kept branch-free
            for x in range(width):
                cur[x] = row[x] + prev[x]
        elif f == 4:  # Paeth with bpp = 1, its left neighbours carried in registers
            a = np.int32(0)
            c = np.int32(0)
            for x in range(width):
                b = np.int32(prev[x])
                pa = abs(b - c)
                pb = abs(a - c)
                pc = abs(a + b - 2 * c)
                if pa <= pb and pa <= pc:
                    p = a
                elif pb <= pc:
                    p = b
                else:
                    p = c
                a = (np.int32(row[x]) + p) & 255
                cur[x] = a
                c = b
        elif not _unfilter_row(f, row, prev, cur, 1):
            return 1 + y
        for x in range(width // 4):
            acc[x] += np.uint32(cur[4 * x]) + np.uint32(cur[4 * x + 1]) + np.uint32(cur[4 * x + 2]) + np.uint32(cur[4 * x + 3])
        if (y & 3) == 3:
            oy = y >> 2
            for x in range(width // 4):
                out[oy, x] = (acc[x] + 8) >> 4
                acc[x] = 0
    return 0


@numba.njit(**_JIT)
def unfilter_to_gray(raw, width, height, channels, depth, out):
    """Unfilter any non-interlaced 8/16-bit PNG and convert each pixel to 8-bit gray into `out` (H, W).

    Rules: 16-bit samples keep their high byte (v >> 8); RGB(A) becomes ITU-R 601 luma exactly as Pillow's
    convert("L") computes it ((19595 R + 38470 G + 7471 B + 32768) >> 16); alpha is ignored.
    Returns 0 on success, or 1 + the row index of a bad filter byte.
    """
    bps = depth // 8  # bytes per sample
    bpp = channels * bps
    rowlen = width * bpp
    stride = rowlen + 1
    ring = np.zeros((2, rowlen), np.uint8)
    for y in range(height):
        base = y * stride
        prev = ring[(y + 1) & 1]
        cur = ring[y & 1]
        if not _unfilter_row(raw[base], raw[base + 1 : base + stride], prev, cur, bpp):
            return 1 + y
        for x in range(width):
            p = x * bpp
            if channels <= 2:  # gray, gray+alpha: the high byte of the gray sample
                out[y, x] = cur[p]
            else:
                r = np.uint32(cur[p])
                g = np.uint32(cur[p + bps])
                b = np.uint32(cur[p + 2 * bps])
                out[y, x] = (r * 19595 + g * 38470 + b * 7471 + 32768) >> 16
    return 0


@numba.njit(**_JIT)
def box4(img, out):
    """Exact 4x4 box average of a uint8 image whose sides are 4x those of `out`: (sum + 8) >> 4."""
    oh, ow = out.shape
    for oy in range(oh):
        for ox in range(ow):
            s = np.uint32(0)
            for dy in range(4):
                for dx in range(4):
                    s += np.uint32(img[4 * oy + dy, 4 * ox + dx])
            out[oy, ox] = (s + 8) >> 4


@numba.njit(**_JIT)
def _area_weights(n_in, n_out):
    """Sparse (start index, weights) of each output cell's coverage of the input cells (sums to n_in/n_out)."""
    scale = n_in / n_out
    starts = np.empty(n_out, np.int64)
    maxw = int(np.ceil(scale)) + 2
    weights = np.zeros((n_out, maxw), np.float64)
    for o in range(n_out):
        lo = o * scale
        hi = (o + 1) * scale
        i0 = int(np.floor(lo))
        starts[o] = i0
        i = i0
        k = 0
        while i < hi and i < n_in and k < maxw:
            w = min(hi, i + 1.0) - max(lo, float(i))
            if w > 0:
                weights[o, k] = w
            i += 1
            k += 1
    return starts, weights


@numba.njit(**_JIT)
def area_resize(img, out):
    """Area ("box") resize of a uint8 image to `out`'s shape: each output pixel is the mean of the input area
    it covers (fractional cells weighted by coverage), rounded half up. For an exact 4x reduction this
    equals `box4`."""
    h, w = img.shape
    oh, ow = out.shape
    ys, wy = _area_weights(h, oh)
    xs, wx = _area_weights(w, ow)
    norm = (h / oh) * (w / ow)
    tmp = np.zeros((h, ow), np.float64)
    for y in range(h):
        for ox in range(ow):
            s = 0.0
            for k in range(wx.shape[1]):
                if wx[ox, k] > 0:
                    s += wx[ox, k] * img[y, xs[ox] + k]
            tmp[y, ox] = s
    for oy in range(oh):
        for ox in range(ow):
            s = 0.0
            for k in range(wy.shape[1]):
                if wy[oy, k] > 0:
                    s += wy[oy, k] * tmp[ys[oy] + k, ox]
            v = np.floor(s / norm + 0.5 + 1e-9)
            out[oy, ox] = min(255.0, max(0.0, v))
