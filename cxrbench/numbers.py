"""How a number is written into a record, a board or an export: a Python float rounded to 6 decimals, and
None where it is undefined (None, NaN, infinite). Records are hashed, so every writer uses this one rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DECIMALS = 6


def rounded(x: float) -> float:
    """`x` as recorded: a Python float rounded to 6 decimals (NaN stays NaN)."""
    return round(float(x), DECIMALS)


def finite_or_none(x: float | None) -> float | None:
    """`x` as recorded, or None where it is undefined (None, NaN, infinite)."""
    return None if x is None or not np.isfinite(x) else rounded(x)


def mean_or_none(xs: Sequence[float]) -> float | None:
    """The mean of `xs` as recorded, or None for no values."""
    return rounded(float(np.mean(xs))) if len(xs) else None
