"""Read the NIH metadata CSV (`Data_Entry_2017_v2020.csv`, or the older `Data_Entry_2017.csv`, plain or
gzipped) into a validated, typed table.

Every malformed row is reported with the file, its line number and the reason.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrbench.data.labels import ALL_LABELS, NO_FINDING, label_matrix, nonimage_features
from cxrbench.errors import InputError

REQUIRED_COLUMNS: dict[str, str] = {
    "Image Index": "image",
    "Finding Labels": "labels",
    "Follow-up #": "follow_up",
    "Patient ID": "patient",
    "Patient Age": "age",
    "Patient Gender": "sex",
    "View Position": "view",
}
MAX_AGE = 120
_AGE = re.compile(r"^(\d{1,3})([YMD]?)$")
_INT = re.compile(r"^\d+$")
# what an image name may be (the real ones are NNNNNNNN_NNN.png): one file name, nothing that needs quoting in
# a CSV (comma, quote, line break) or that could leave a folder (separators, a leading dot)
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,123}\.(?i:png)")


MAX_TABLE_BYTES = 128 << 20  # a table or list file, on disk and inflated; the full metadata CSV is about 8 MB


def read_text_maybe_gz(path: Path) -> bytes:
    """The bytes of a table the user gave, transparently gunzipped when it is a gzip file: a regular file
    (never a FIFO or folder), at most MAX_TABLE_BYTES on disk and inflated (a small gzip that inflates to
    gigabytes is refused in bounded memory)."""
    from cxrbench.files import gunzip, read_regular

    p = Path(path)
    raw = read_regular(p, MAX_TABLE_BYTES, "the file", follow=True)
    return gunzip(raw, MAX_TABLE_BYTES, p)


@dataclass(frozen=True, eq=False)
class Metadata:
    """The metadata table: one row per image, in file order, with typed columns.

    Columns: image (str), patient (int64), follow_up (int64), age (int64, years), sex ("M"/"F"),
    view ("PA"/"AP"), labels (the `Finding Labels` string), width, height (original pixels, when present).
    """

    table: pd.DataFrame
    path: Path
    sha256: str
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index.update({n: i for i, n in enumerate(self.table["image"].tolist())})

    def __len__(self) -> int:
        return len(self.table)

    @property
    def names(self) -> np.ndarray:
        return self.table["image"].to_numpy(dtype=object)

    @property
    def patients(self) -> np.ndarray:
        return self.table["patient"].to_numpy(dtype=np.int64)

    @property
    def label_strings(self) -> np.ndarray:
        return self.table["labels"].to_numpy(dtype=object)

    def labels(self, num_classes: int = 15) -> np.ndarray:
        """Multi-hot uint8 (N, C) in the fixed class order."""
        return label_matrix(self.label_strings, num_classes)

    def features(self) -> np.ndarray:
        """Non-image features float32 (N, 5): age_z, sex one-hot, view one-hot."""
        t = self.table
        return nonimage_features(t["age"].to_numpy(), t["sex"].to_numpy(), t["view"].to_numpy())

    def has(self, name: str) -> bool:
        return name in self._index

    def indices(self, names: list[str], source: Path | str, lines: list[int] | None = None) -> np.ndarray:
        """Row indices of `names`; a name absent from the metadata is an error naming `source` and its line."""
        out = np.empty(len(names), dtype=np.int64)
        for k, n in enumerate(names):
            i = self._index.get(n)
            if i is None:
                raise InputError(
                    source,
                    f"image {n!r} is not in the metadata file {self.path.name}",
                    line=None if lines is None else lines[k],
                )
            out[k] = i
        return out


def read_metadata(path: str | Path) -> Metadata:
    """Read and validate an NIH metadata CSV; see `Metadata` for the columns."""
    path = Path(path)
    raw = read_text_maybe_gz(path)
    sha = hashlib.sha256(raw).hexdigest()
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, skipinitialspace=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(path, f"not a readable CSV: {' '.join(str(e).split())}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            path,
            f"missing column {missing[0]!r} (columns found: {', '.join(df.columns[:9])})",
            line=1,
        )
    out = pd.DataFrame({new: df[old].str.strip() for old, new in REQUIRED_COLUMNS.items()})
    _validate(out, path)

    ages = out["age"].str.extract(_AGE)
    given = ages[0].astype(np.int64)
    unit = ages[1]
    years = np.where(unit == "M", given // 12, np.where(unit == "D", given // 365, given))
    table = pd.DataFrame(
        {
            "image": out["image"].astype(object),
            "patient": out["patient"].astype(np.int64),
            "follow_up": out["follow_up"].astype(np.int64),
            "age": years.astype(np.int64),
            "sex": out["sex"].astype(object),
            "view": out["view"].astype(object),
            "labels": out["labels"].astype(object),
        }
    )
    if "OriginalImage[Width" in df.columns and "Height]" in df.columns:
        table["width"] = pd.to_numeric(df["OriginalImage[Width"], errors="coerce").astype("Int64")
        table["height"] = pd.to_numeric(df["Height]"], errors="coerce").astype("Int64")
    return Metadata(table=table, path=path, sha256=sha)


def _fail(path: Path, mask: np.ndarray, frame: pd.DataFrame, reason) -> None:
    """Raise for the first row where `mask` is true; `reason(row)` words it."""
    bad = np.flatnonzero(mask)
    if len(bad) == 0:
        return
    i = int(bad[0])
    more = f" ({len(bad) - 1} more such rows)" if len(bad) > 1 else ""
    image = frame["image"].iloc[i]
    raise InputError(path, f"image {image!r}: {reason(frame.iloc[i])}{more}", line=i + 2)


def _validate(f: pd.DataFrame, path: Path) -> None:
    if len(f) == 0:
        raise InputError(path, "no data rows")
    img = f["image"]
    _fail(path, (img == "").to_numpy(), f, lambda r: "empty Image Index")
    _fail(path, ~img.str.lower().str.endswith(".png").to_numpy(), f, lambda r: "Image Index must name a .png file")
    _fail(
        path,
        ~img.str.fullmatch(IMAGE_NAME.pattern).to_numpy(dtype=bool),
        f,
        lambda r: (
            "Image Index may hold only letters, digits and ._- (no comma, quote, space or path "
            "separator; real names look like 00000001_000.png)"
        ),
    )
    dup = img.duplicated().to_numpy()
    _fail(path, dup, f, lambda r: "Image Index appears twice")

    tokens = f["labels"].str.split("|")
    known = set(ALL_LABELS)
    unknown = tokens.map(lambda ts: next((t for t in ts if t not in known), None))
    _fail(
        path,
        unknown.notna().to_numpy(),
        f,
        lambda r: (
            f"unknown label {next(t for t in r['labels'].split('|') if t not in known)!r} "
            f"in {r['labels']!r} (known: {', '.join(ALL_LABELS)})"
        ),
    )
    mixed = tokens.map(lambda ts: len(ts) > 1 and NO_FINDING in ts).to_numpy()
    _fail(path, mixed, f, lambda r: f"{NO_FINDING!r} combined with findings in {r['labels']!r}")

    for col, label in (("patient", "Patient ID"), ("follow_up", "Follow-up #")):
        _fail(
            path,
            ~f[col].str.fullmatch(_INT).to_numpy(),
            f,
            lambda r, c=col, lab=label: f"bad {lab} {r[c]!r} (expected a whole number)",
        )

    age = f["age"].str.extract(_AGE)
    _fail(
        path,
        age[0].isna().to_numpy(),
        f,
        lambda r: f"bad Patient Age {r['age']!r} (expected whole years, e.g. 58 or 058Y)",
    )
    years = age[0].astype(np.int64)
    too_old = ((years > MAX_AGE) & (age[1].isin(["", "Y"]))).to_numpy()
    _fail(
        path,
        too_old,
        f,
        lambda r: (
            f"implausible Patient Age {r['age']!r} (over {MAX_AGE}); the v2020 release "
            "(Data_Entry_2017_v2020.csv) corrects these ages"
        ),
    )
    _fail(
        path, ~f["sex"].isin(["M", "F"]).to_numpy(), f, lambda r: f"bad Patient Gender {r['sex']!r} (expected M or F)"
    )
    _fail(
        path,
        ~f["view"].isin(["PA", "AP"]).to_numpy(),
        f,
        lambda r: f"bad View Position {r['view']!r} (expected PA or AP)",
    )
