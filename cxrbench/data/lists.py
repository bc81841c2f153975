"""Image-name lists (`train_val_list.txt`, `test_list.txt`, named splits) and the BBox CSV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cxrbench.data.labels import BBOX_ALIASES, FINDINGS
from cxrbench.data.metadata import Metadata, read_text_maybe_gz
from cxrbench.errors import InputError


def _read_names(path: Path) -> tuple[list[str], list[int]]:
    text = read_text_maybe_gz(path).decode("utf-8", errors="replace")
    names: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not name.endswith(".png"):
            raise InputError(path, f"{name[:60]!r} is not an image name (expected NNNNNNNN_NNN.png)", line=lineno)
        if name in seen:
            raise InputError(path, f"image {name!r} listed twice (first on line {seen[name]})", line=lineno)
        seen[name] = lineno
        names.append(name)
        lines.append(lineno)
    return names, lines


def read_name_list(path: str | Path) -> list[str]:
    """Image names, one a line (blank lines skipped; duplicates and non-PNG names are errors)."""
    return _read_names(Path(path))[0]


def list_indices(path: str | Path, metadata: Metadata) -> np.ndarray:
    """Sorted metadata row indices of a list's names; a name absent from the metadata is an error."""
    path = Path(path)
    names, lines = _read_names(path)
    return np.sort(metadata.indices(names, path, lines))


BBOX_COLUMNS = ("image", "label", "x", "y", "w", "h")


def read_bbox(path: str | Path, metadata: Metadata | None = None) -> pd.DataFrame:
    """The BBox CSV as columns image, label, x, y, w, h (1024-pixel space); `Infiltrate` -> `Infiltration`."""
    path = Path(path)
    raw = read_text_maybe_gz(path)
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(path, f"not a readable CSV: {' '.join(str(e).split())}") from None
    if df.shape[1] < 6:
        raise InputError(
            path, f"expected 6 columns (Image Index, Finding Label, x, y, w, h), found {df.shape[1]}", line=1
        )
    trailing = df.iloc[:, 6:].to_numpy() != ""
    if trailing.any():
        row = int(np.flatnonzero(trailing.any(axis=1))[0])
        raise InputError(path, "unexpected values after the h column", line=row + 2)
    df = df.iloc[:, :6].copy()
    df.columns = list(BBOX_COLUMNS)
    df["image"] = df["image"].str.strip()
    df["label"] = df["label"].str.strip().replace(BBOX_ALIASES)
    bad_label = ~df["label"].isin(FINDINGS)
    if bad_label.any():
        i = int(np.flatnonzero(bad_label.to_numpy())[0])
        raise InputError(path, f"unknown finding {df['label'].iloc[i]!r}", line=i + 2)
    coords = df[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1) | (coords[["w", "h"]] <= 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        box = df.iloc[i][["x", "y", "w", "h"]].tolist()
        raise InputError(path, f"bad box {box} (need numbers, w and h > 0)", line=i + 2)
    out = pd.DataFrame({"image": df["image"].astype(object), "label": df["label"].astype(object)})
    out[["x", "y", "w", "h"]] = coords.astype(np.float64)
    if metadata is not None:
        unknown = ~out["image"].map(metadata.has).astype(bool)
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise InputError(
                path, f"image {out['image'].iloc[i]!r} is not in the metadata file {metadata.path.name}", line=i + 2
            )
    return out
