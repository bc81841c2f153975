"""numba kernels: PNG unfiltering fused with the 4x4 box average, grayscale conversion, area and bilinear resize.

`gray8_box4` is the hot path for ChestX-ray14 (8-bit grayscale 1024x1024): one pass over the inflated rows
that unfilters 32 rows at a time in SIMD lanes (a wavefront) and adds them into 4x4 box sums, so the
1024x1024 image is never materialised. `gray8_unfilter` runs the same wavefront into the full image (for the
bilinear resize and full decodes). Everything else (other depths, colours, sizes) goes through
`unfilter_to_gray` + `area_resize` or `bilinear_resize`, which give the same pixels as a library decoder
followed by the same resize (Pillow's, for bilinear).
"""

from __future__ import annotations

from typing import Literal, TypedDict

import numba
import numpy as np


class _JitOptions(TypedDict, total=False):
    """The keywords given to `numba.njit` here (typed, so the checker sees them against njit's signature)."""

    cache: bool
    nogil: bool
    boundscheck: bool
    inline: Literal["always"]


_JIT: _JitOptions = {"cache": True, "nogil": True, "boundscheck": False}
# Helpers called in hot loops are inlined by numba itself: loaded from numba's on-disk cache, a call that LLVM
# had inlined at the first compile stays a call, and the wavefront kernel ran at half speed that way (measured).
_INLINE: _JitOptions = {**_JIT, "inline": "always"}


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
def _serial_box4(raw, width, height, out):
    """Row by row: unfilter into a two-row ring, add into a (width / 4) accumulator."""
    stride = width + 1
    ring = np.zeros((2, width), np.uint8)
    acc = np.zeros(width // 4, np.uint32)
    for y in range(height):
        base = y * stride
        prev = ring[(y + 1) & 1]
        cur = ring[y & 1]
        if not _unfilter_row(raw[base], raw[base + 1 : base + stride], prev, cur, 1):
            return 1 + y
        for x in range(width // 4):
            acc[x] += (
                np.uint32(cur[4 * x])
                + np.uint32(cur[4 * x + 1])
                + np.uint32(cur[4 * x + 2])
                + np.uint32(cur[4 * x + 3])
            )
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


@numba.njit(**_INLINE)
def _clip8(acc):
    """Pillow's clip8: the accumulated fixed-point sum (rounding offset included) >> 22, clamped to 0..255."""
    v = acc >> 22
    return 0 if v < 0 else (255 if v > 255 else v)


@numba.njit(**_JIT)
def bilinear_resize(img, out, xs, xn, xk, ys, yn, yk):
    """Pillow's two-pass 8-bit resample of `img` into `out` with precomputed taps (resample.bilinear_coefficients
    per axis): horizontal into an 8-bit image of the rows the vertical pass uses, then vertical, in int32 as
    Pillow sums (no overflow: the weights sum to about 2**22). Bit-exact."""
    oh, ow = out.shape
    y0 = ys[0]
    y1 = ys[oh - 1] + yn[oh - 1]
    tmp = np.empty((y1 - y0, ow), np.uint8)
    half = np.int32(1 << 21)
    for y in range(y0, y1):
        row = img[y]
        trow = tmp[y - y0]
        for ox in range(ow):
            acc = half
            s = xs[ox]
            for k in range(xn[ox]):
                acc += np.int32(row[s + k]) * xk[ox, k]
            trow[ox] = _clip8(acc)
    accs = np.empty(ow, np.int32)
    for oy in range(oh):
        s = ys[oy] - y0
        accs[:] = half
        for k in range(yn[oy]):
            w = yk[oy, k]
            trow = tmp[s + k]
            for ox in range(ow):
                accs[ox] += np.int32(trow[ox]) * w
        for ox in range(ow):
            out[oy, ox] = _clip8(accs[ox])


WAVE = 32  # rows unfiltered together by the wavefront kernel (two AVX2 registers of int16 lanes)


@numba.njit(**_INLINE)
def _wave_tables():
    """Per-lane constant masks of the wavefront: `group_end[s & 3, k]` is 0 where lane k closes a 4-column group
    at step s (-1 elsewhere); `started[min(s, WAVE - 1), k]` is -1 once lane k has reached column 0."""
    group_end = np.full((4, WAVE), -1, np.int16)
    started = np.zeros((WAVE, WAVE), np.int16)
    for k in range(WAVE):
        for r in range(4):
            if ((r - k) & 3) == 3:
                group_end[r, k] = 0
        for s in range(k, WAVE):
            started[s, k] = -1
    return group_end, started


@numba.njit(**_INLINE)
def _wave(raw, width, height, box, full, want_box, want_full):
    """Unfilter WAVE rows at once along an anti-diagonal wavefront, so the serial left-neighbour chain of
    Sub/Average/Paeth runs in SIMD lanes (one lane per row, each lane one column behind the lane above).

    At step s lane k reconstructs row y0+k, column s-k: its left neighbour is its own previous output, its upper
    neighbours are lane k-1's previous two outputs. The lane loop is written so that LLVM vectorises it: int16
    values, separate arrays for the last three steps, the filter chosen with per-lane bit masks, no per-lane
    branch. `want_box`: exact 4x4 box average into `box` ((sum + 8) >> 4), from horizontal 4-sums kept per lane
    in a skewed buffer; `want_full`: the unfiltered image into `full`. Returns 0, or 1 + the row of a bad filter
    byte.
    """
    stride = width + 1
    steps = width + WAVE - 1
    group_end, started = _wave_tables()
    prevrow = np.zeros(steps + 1, np.int16)  # the row above the block (zeros above row 0)
    last = np.zeros(steps, np.int16)
    v1 = np.zeros(WAVE + 1, np.int16)  # outputs at step s-1; index 0 is the row above lane 0
    v2 = np.zeros(WAVE + 1, np.int16)  # at s-2
    nw = np.zeros(WAVE + 1, np.int16)  # at s
    mask = np.zeros((5, WAVE), np.int16)  # mask[f, k] = -1 where lane k's row has filter f
    skew = np.zeros((steps, WAVE), np.uint8)  # skew[s, k] = filtered byte of row y0+k, column s-k
    hsum = np.zeros((steps, WAVE), np.int16)
    vals = np.zeros((steps, WAVE), np.uint8)
    run = np.zeros(WAVE, np.int16)
    for y0 in range(0, height, WAVE):
        mask[:, :] = 0
        for k in range(WAVE):
            f = raw[(y0 + k) * stride]
            if f > 4:
                return 1 + y0 + k
            mask[f, k] = -1
        base0 = y0 * stride + 1
        for s in range(steps):
            row = skew[s]
            for k in range(WAVE):
                row[k] = raw[base0 + k * width + s]
        v1[:] = 0
        v2[:] = 0
        run[:] = 0
        for s in range(steps):
            v1[0] = prevrow[s]
            st = started[min(s, WAVE - 1)]
            ge = group_end[s & 3]
            sk = skew[s]
            hs = hsum[s]
            vs = vals[s]
            for k in range(WAVE):
                a = v1[k + 1]
                b = v1[k]
                c = v2[k]
                p = np.int16(np.int16(a + b) - c)
                pa = np.int16(abs(np.int16(p - a)))
                pb = np.int16(abs(np.int16(p - b)))
                pc = np.int16(abs(np.int16(p - c)))
                paeth = a if (pa <= pb) & (pa <= pc) else (b if pb <= pc else c)
                avg = np.int16(np.int16(a + b) >> 1)
                pred = np.int16((a & mask[1, k]) | (b & mask[2, k]) | (avg & mask[3, k]) | (paeth & mask[4, k]))
                val = np.int16(np.int16(np.int16(sk[k]) + pred) & 255) & st[k]
                nw[k + 1] = val
                vs[k] = np.uint8(val)
                h = np.int16(run[k] + val)
                hs[k] = h
                run[k] = h & ge[k]
            last[s] = nw[WAVE]
            v1, v2, nw = nw, v1, v2
        if want_box:
            for k in range(0, WAVE, 4):
                oy = (y0 + k) >> 2
                for ox in range(width // 4):
                    s3 = 4 * ox + 3 + k
                    t = np.int32(hsum[s3, k]) + hsum[s3 + 1, k + 1] + hsum[s3 + 2, k + 2] + hsum[s3 + 3, k + 3]
                    box[oy, ox] = (t + 8) >> 4
        if want_full:
            for k in range(WAVE):
                dst = full[y0 + k]
                for x in range(width):
                    dst[x] = vals[x + k, k]
        for x in range(width):
            prevrow[x] = last[x + WAVE - 1]
    return 0


@numba.njit(**_JIT)
def gray8_box4(raw, width, height, out):
    """8-bit gray, width and height multiples of 4: unfilter + exact 4x4 box average ((sum + 8) >> 4).

    Returns 0 on success, or 1 + the row index of a bad filter byte.
    """
    if height % WAVE == 0 and width >= WAVE:
        return _wave(raw, width, height, out, out, True, False)
    return _serial_box4(raw, width, height, out)


@numba.njit(**_JIT)
def gray8_unfilter(raw, width, height, out):
    """8-bit gray: the unfiltered image into `out` (height, width), by the wavefront where the height allows
    (a multiple of WAVE), else row by row. Returns 0, or 1 + the row index of a bad filter byte."""
    if height % WAVE == 0 and width >= WAVE:
        return _wave(raw, width, height, out, out, False, True)
    return unfilter_to_gray(raw, width, height, 1, 8, out)
