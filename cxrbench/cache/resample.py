"""The cache's resampling methods by name, and Pillow's bilinear filter coefficients, computed as Pillow does.

`box` (the default) is the exact area mean: (sum + 8) >> 4 over each 4x4 block for 1024 -> 256. `bilinear` is
what the reference paper used: torchvision's Resize(256) on a PIL image calls Pillow's
`Image.resize((256, 256), BILINEAR)`, an antialiased (support scaled by the reduction) triangle filter applied
horizontally, rounded to 8 bits, then vertically, with 8-bit fixed-point coefficients (Resample.c:
`precompute_coeffs`, `normalize_coeffs_8bpc`). The coefficients here follow Pillow's double arithmetic step by
step, so the numba kernels that use them give Pillow's pixels bit for bit. This module imports only numpy.
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLES: dict[str, str] = {
    "box": "exact area mean (4x4 block mean for 1024 -> 256, area-weighted for other sizes), rounded half up",
    "bilinear": "Pillow's antialiased bilinear, as torchvision's Resize on a PIL image (the reference paper's); "
    "bit-exact",
}
DEFAULT_RESAMPLE = "box"
PAPER_RESAMPLE = "bilinear"
PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


def manifest_resample(params: dict) -> str:
    """The resampling a cache was built with; stores built before the option have no entry and are box."""
    return str(params.get("resample", DEFAULT_RESAMPLE))


def _triangle(x: float) -> float:
    x = -x if x < 0.0 else x
    return 1.0 - x if x < 1.0 else 0.0


def bilinear_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bilinear taps for one axis: (first input index, number of taps, int32 weights (out, ksize)).

    Weights are the normalised filter values times 2**22, rounded half away from zero, as Pillow stores them.
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    starts = np.zeros(out_size, np.int64)
    counts = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, ksize), np.int32)
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C's cast does
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_triangle((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        for x, w in enumerate(k):
            weights[xx, x] = int(0.5 + w * (1 << PRECISION_BITS)) if w >= 0 else int(-0.5 + w * (1 << PRECISION_BITS))
        starts[xx] = xmin
        counts[xx] = xmax
    return starts, counts, weights
