"""A run's training history file (`history.csv`): one row per epoch of every training, written by the fit stage
and read back, checked, by the API and the gallery (a run folder may come from anyone)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrbench.errors import RecordError

if TYPE_CHECKING:
    import pandas as pd


HISTORY = "history.csv"
HISTORY_COLUMNS = (
    "training",
    "epoch",
    "train_loss",
    "val_loss",
    "val_weighted_auroc",
    "val_plain_auroc",
    "lr",
    "images_per_s",
    "seconds",
)


def write_history(path: Path, trainings: list[tuple[str, dict]]) -> None:
    """history.csv: one row per epoch (numbered from 1) of every training (fold0, ..., final), with the training
    and validation loss, validation AUROCs, learning rate, images/s and seconds (empty where not measured, e.g.
    validation of the final training, or epochs trained by a cxrbench that did not record them)."""
    import csv
    import io

    from cxrbench.files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for name, result in trainings:
        for h in result.get("history", []):
            row = {**h, "training": name, "epoch": int(h["epoch"]) + 1}
            w.writerow(["" if row.get(c) is None else row.get(c) for c in HISTORY_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def read_history(path: Path) -> pd.DataFrame:
    """A history.csv (cxrbench.run.fit.write_history), checked: its columns, trainings named fold<k> or final,
    whole epochs from 1, finite numbers or empty cells."""
    import io
    import re

    import pandas as pd

    from cxrbench.files import read_regular

    if not path.exists() and not path.is_symlink():
        raise RecordError(f"{path}: no training history (runs write history.csv since cxrbench 0.1.0's API)")
    raw = read_regular(path, 64 << 20, "training history", lambda m: RecordError(m))
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise RecordError(f"{path}: not a readable history CSV ({' '.join(str(e).split())[:200]})") from None
    if tuple(df.columns) != HISTORY_COLUMNS:
        raise RecordError(f"{path}: columns must be {', '.join(HISTORY_COLUMNS)}")
    if not df["training"].map(lambda t: re.fullmatch(r"fold\d{1,3}|final", t) is not None).all():
        raise RecordError(f"{path}: trainings must be named fold<k> or final")
    if not df["epoch"].str.fullmatch(r"[1-9]\d{0,5}").all():
        raise RecordError(f"{path}: epochs must be whole numbers from 1")
    out = pd.DataFrame({"training": df["training"], "epoch": df["epoch"].astype(int)})
    for c in HISTORY_COLUMNS[2:]:
        try:
            v = pd.to_numeric(df[c].replace("", "nan"), errors="raise").astype(float)
        except (ValueError, TypeError):
            raise RecordError(f"{path}: column {c} must hold numbers") from None
        if np.isinf(v).any():
            raise RecordError(f"{path}: column {c} holds an infinite number")
        out[c] = v
    return out
