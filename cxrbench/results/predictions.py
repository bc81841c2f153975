"""A run's predictions: one row per image with its patient, its labels and the model's probabilities.

`Predictions` is what a predictions file (`predictions.csv.gz`, `fold<k>-val.csv.gz`) holds once parsed and
checked; `Predictions.parse` is the one parser of that format (the files usually come from someone else, so it
is strict), `Predictions.write` writes it deterministically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cxrbench.errors import RecordError


@dataclass(frozen=True, eq=False)
class Predictions:
    """Parsed predictions: `images` (N names), `patients` (N int64), `labels` (N, C uint8 0/1),
    `probabilities` (N, C float64 in [0, 1]) and the `classes` (C names, the column order)."""

    images: list[str]
    patients: npt.NDArray[np.int64]
    labels: npt.NDArray[np.uint8]
    probabilities: npt.NDArray[np.float64]
    classes: list[str]

    @classmethod
    def parse(cls, raw: bytes, source: str | Path) -> Predictions:
        """Predictions from a file's bytes (gzip or plain), checked strictly: the columns image, patient,
        y:<class>..., p:<class>... (same classes, same order), image names as the metadata allows them and each
        once, whole-number patients, labels 0 or 1, probabilities in [0, 1]."""
        import pandas as pd

        from cxrbench import files
        from cxrbench.data.metadata import IMAGE_NAME
        from cxrbench.results.record import MAX_PREDICTIONS_BYTES

        text = files.gunzip(raw, MAX_PREDICTIONS_BYTES, source, RecordError)
        try:
            df = pd.read_csv(io.BytesIO(text), dtype=str, keep_default_na=False, na_filter=False, engine="c")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
            raise RecordError(f"{source}: not a readable predictions CSV ({' '.join(str(e).split())[:200]})") from None
        cols = [str(c) for c in df.columns]
        ys = [c[2:] for c in cols if c.startswith("y:")]
        want = ["image", "patient", *(f"y:{c}" for c in ys), *(f"p:{c}" for c in ys)]
        if cols != want or not ys:
            raise RecordError(
                f"{source}: columns must be image, patient, y:<class>..., p:<class>... with the same "
                f"classes in the same order (found {', '.join(cols)[:300]})"
            )
        if len(df) == 0:
            raise RecordError(f"{source}: no predictions")
        names = [str(n) for n in df["image"].tolist()]
        bad = next((n for n in names if not IMAGE_NAME.fullmatch(n)), None)
        if bad is not None:
            raise RecordError(f"{source}: image name {bad[:80]!r} is not a ChestX-ray14 file name")
        if len(set(names)) != len(names):
            dup = pd.Series(names)[pd.Series(names).duplicated()].iloc[0]
            raise RecordError(f"{source}: image {dup!r} is listed twice")
        pat = df["patient"]
        if not pat.str.fullmatch(r"\d{1,12}").all():
            raise RecordError(f"{source}: patient ids must be whole numbers")
        yv = df[[f"y:{c}" for c in ys]]
        if not yv.isin(["0", "1"]).all().all():
            raise RecordError(f"{source}: labels (y:...) must be 0 or 1")
        try:
            p = df[[f"p:{c}" for c in ys]].astype(np.float64).to_numpy()
        except ValueError as e:
            raise RecordError(f"{source}: probabilities (p:...) must be numbers ({str(e)[:120]})") from None
        if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
            raise RecordError(f"{source}: probabilities (p:...) must be finite numbers in [0, 1]")
        return cls(names, pat.to_numpy().astype(np.int64), (yv.to_numpy() == "1").astype(np.uint8), p, ys)

    @classmethod
    def read(cls, path: str | Path) -> Predictions:
        """Predictions from a file: a regular file (never through a link) within the size limit, then `parse`."""
        from cxrbench.results.record import MAX_PREDICTIONS_BYTES, read_regular

        path = Path(path)
        return cls.parse(read_regular(path, MAX_PREDICTIONS_BYTES, "predictions"), path)

    def write(self, path: Path) -> str:
        """Write as a deterministic gzip CSV (see `cxrbench.results.record.write_predictions`); its sha256."""
        from cxrbench.results.record import write_predictions

        return write_predictions(path, self.images, self.patients, self.labels, self.probabilities, tuple(self.classes))
