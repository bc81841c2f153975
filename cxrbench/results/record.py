"""The run record: one JSON file per run, with a `schema_version`, validated on read.

Every record carries its own sha256 (`record_sha256`, over the canonical JSON of everything else) and the
sha256 of its predictions file, so an edited number or a swapped predictions file is caught. Records are
written via a temp file + rename. Unknown schema versions are refused.

A record, its predictions and its run folder usually come from someone else, so reading them is a trust
boundary: files are read once, as regular files inside the run folder (never through a link), within a size
limit; JSON with NaN, infinities or deep nesting is refused; every field the leaderboard reads is type-checked
before use; names that become parts of paths must pass `safe_name`. Reading never imports anything.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench import files
from cxrbench.errors import RecordError
from cxrbench.names import MAX_NAME, is_safe_name, safe_name  # noqa: F401 - the one name rule, re-exported

SCHEMA_VERSION = 1
RECORD = "record.json"
PREDICTIONS = "predictions.csv.gz"
MAX_RECORD_BYTES = 32 << 20  # a record with every epoch of every fold is a few hundred KB
MAX_PREDICTIONS_BYTES = 256 << 20  # decompressed; all 112,120 images with 15 classes are about 35 MB
MAX_STRING = 4096
_HEX = re.compile(r"[0-9a-f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def inside(folder: Path, name: str, what: str, source: str | Path) -> Path:
    """`folder / name` for a single safe file name that resolves inside `folder` (links leaving it refused)."""
    safe_name(name, what, source)
    path = folder / name
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise RecordError(f"{source}: {what} {name!r} leads outside {folder}")
    return path


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file (not a link, FIFO or device), refused above `limit` bytes (a RecordError)."""
    return files.read_regular(path, limit, what, RecordError)


def parse_json(raw: bytes, source: str | Path) -> Any:
    """Strict JSON: UTF-8, no NaN or infinities (not even as overflowing numbers), bounded nesting."""
    return files.parse_json(raw, source, RecordError)


# ------------------------------------------------------------------------------------------------ schema


class _Bad(Exception):
    def __init__(self, where: str, msg: str) -> None:
        super().__init__(f"field {where} {msg}")


Check = Callable[[Any, str], None]


def _type(*types: type) -> Check:
    def check(v: Any, where: str) -> None:
        if isinstance(v, bool) and bool not in types:
            raise _Bad(where, "has type bool")
        if not isinstance(v, types):
            raise _Bad(where, f"has type {type(v).__name__}")

    return check


_str = _type(str)
_bool = _type(bool)
_dict = _type(dict)
_list = _type(list)


def _int(lo: int = 0) -> Check:
    def check(v: Any, where: str) -> None:
        _type(int)(v, where)
        if v < lo:
            raise _Bad(where, f"is {v}, below {lo}")

    return check


def _num(lo: float = -math.inf, hi: float = math.inf) -> Check:
    def check(v: Any, where: str) -> None:
        _type(int, float)(v, where)
        if not (lo <= v <= hi):
            raise _Bad(where, f"is {v}, outside [{lo}, {hi}]")

    return check


def _opt(c: Check) -> Check:
    def check(v: Any, where: str) -> None:
        if v is not None:
            c(v, where)

    return check


def _hex(n: int) -> Check:
    def check(v: Any, where: str) -> None:
        _str(v, where)
        if len(v) != n or not _HEX.fullmatch(v):
            raise _Bad(where, f"is not {n} lowercase hex digits")

    return check


def _name(v: Any, where: str) -> None:
    _str(v, where)
    if not (1 <= len(v) <= MAX_NAME):
        raise _Bad(where, f"must have 1 to {MAX_NAME} characters")


def _safe_id(v: Any, where: str) -> None:
    """A name that becomes a component of a path (the run id: export's default file name, submit's entry)."""
    _str(v, where)
    if not is_safe_name(v):
        raise _Bad(
            where,
            f"{v[:MAX_NAME]!r} is not a safe name (letters, digits and ._+@- only, no '/', '\\', '..' or NUL, "
            f"no leading dot or dash, at most {MAX_NAME} characters)",
        )


def _obj(required: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """A dict with these keys (others allowed: later cxrbench versions and runs add fields)."""

    def check(v: Any, where: str) -> None:
        _dict(v, where)
        for k, c in required.items():
            if k not in v:
                raise _Bad(f"'{where}.{k}'", "is missing")
            c(v[k], f"{where}.{k}")
        for k, c in (optional or {}).items():
            if k in v:
                c(v[k], f"{where}.{k}")

    return check


def _items(c: Check) -> Check:
    def check(v: Any, where: str) -> None:
        _list(v, where)
        for i, x in enumerate(v):
            c(x, f"{where}[{i}]")

    return check


def _values(c: Check) -> Check:
    def check(v: Any, where: str) -> None:
        _dict(v, where)
        for k, x in v.items():
            c(x, f"{where}.{k}")

    return check


def _pair(c: Check) -> Check:
    def check(v: Any, where: str) -> None:
        _list(v, where)
        if len(v) != 2:
            raise _Bad(where, f"has {len(v)} items, not 2")
        c(v[0], f"{where}[0]")
        c(v[1], f"{where}[1]")

    return check


_auroc = _opt(_num(0.0, 1.0))
_metric = _obj({"auroc": _auroc, "ci95": _pair(_auroc)})
_files = _obj({"path": _str, "sha256": _hex(64)})
_loc_scores = _values(_opt(_num(0.0)))
_loc_part = _obj({"overall": _loc_scores}, {"per_class": _values(_loc_scores)})

_SCHEMA: dict[str, Check] = {
    "schema_version": _int(),
    "run_id": _safe_id,
    "created": _str,
    "protocol": _obj({"id": _str, "version": _int(1), "hash": _str, "settings": _dict}),
    "model": _obj({"name": _name, "source": _obj({"kind": _str}), "parameters": _int(0), "pretrained": _bool}),
    "lr": _num(0.0),
    "deviations": _items(_str),
    "data": _obj(
        {
            "metadata_csv_sha256": _hex(64),
            "split_hashes": _obj({"trainval": _str, "test": _str, "folds": _items(_obj({"train": _str, "val": _str}))}),
            "cache_fingerprint": _str,
            "classes": _items(_str),
        },
        {"excluded_bad_images": _int(0), "n_test": _int(0), "n_trainval": _int(0)},
    ),
    "seeds": _values(_int()),
    "code": _obj({"cxrbench_version": _str, "git_commit": _opt(_str), "git_dirty": _opt(_bool)}),
    "environment": _obj({"device": _str}, {"device_name": _str, "deterministic": _bool, "bitwise_reproducible": _bool}),
    "timing": _obj({"wall_seconds": _num(0.0), "train_images_per_s": _num(0.0)}),
    "validation": _obj(
        {
            "folds": _items(
                _obj(
                    {},
                    {
                        "history": _items(
                            _obj(
                                {"epoch": _int(0), "train_loss": _num()},
                                {"val_weighted_auroc": _auroc, "val_plain_auroc": _auroc},
                            )
                        ),
                        "per_class": _values(_auroc),
                        "weighted_auroc": _auroc,
                        "plain_auroc": _auroc,
                        "predictions": _files,
                    },
                )
            )
        },
        {"mean_weighted_auroc": _auroc, "mean_plain_auroc": _auroc},
    ),
    "test": _obj(
        {
            "per_class": _values(_metric),
            "weighted_mean": _metric,
            "plain_mean": _metric,
            "n_images": _int(1),
            "n_patients": _int(1),
            "bootstrap": _obj({"resamples": _int(1), "seed": _int(), "unit": _str}),
        }
    ),
    "predictions": _files,
    "record_sha256": _hex(64),
}
_OPTIONAL: dict[str, Check] = {
    # the checkpoint whose model scored the test set (fold0.pt or final.pt) with the whole file's sha256; records
    # made before cxrbench wrote it have none (their checkpoint is checked against its own header only)
    "scoring_checkpoint": _files,
    "localization": _obj(
        {"model": _loc_part, "centre_baseline": _loc_part},
        {"images": _int(0), "method": _str, "degenerate_maps": _int(0)},
    ),
}


def _strings(v: Any, where: str) -> None:
    """Every string (and key) is short and free of control characters (terminal escapes, line breaks)."""
    if isinstance(v, str):
        if len(v) > MAX_STRING:
            raise _Bad(where, f"is a string of {len(v):,} characters (at most {MAX_STRING:,})")
        if _CONTROL.search(v):
            raise _Bad(where, "holds a control character")
    elif isinstance(v, dict):
        for k, x in v.items():
            _strings(k, f"{where} (a key)")
            _strings(x, f"{where}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _strings(x, f"{where}[{i}]")


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def record_hash(rec: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in rec.items() if k != "record_sha256"})).hexdigest()


def seal(rec: dict) -> dict:
    """Set `record_sha256` (call last, after every other field is final)."""
    rec = dict(rec)
    rec["record_sha256"] = record_hash(rec)
    return rec


def validate(rec: Any, source: str | Path = "record") -> dict:
    """Check schema version, every field the leaderboard reads (types, ranges, no control characters) and the
    record's own hash; returns the record or raises RecordError."""
    if not isinstance(rec, dict):
        raise RecordError(f"{source}: not a JSON object")
    ver = rec.get("schema_version")
    if ver != SCHEMA_VERSION or isinstance(ver, bool):
        raise RecordError(f"{source}: unknown schema_version {ver!r} (this cxrbench reads {SCHEMA_VERSION})")
    for key in _SCHEMA:
        if key not in rec:
            raise RecordError(f"{source}: missing field {key!r}")
    extra = set(rec) - set(_SCHEMA) - set(_OPTIONAL)
    if extra:
        raise RecordError(f"{source}: unknown field(s) {', '.join(sorted(map(str, extra)))[:200]}")
    try:
        for key, check in {**_SCHEMA, **_OPTIONAL}.items():
            if key in rec:
                check(rec[key], key)
        _strings(rec, "record")
        _consistent(rec)
    except _Bad as e:
        raise RecordError(f"{source}: {e}") from None
    if rec["record_sha256"] != record_hash(rec):
        raise RecordError(f"{source}: record_sha256 does not match its content (the record was edited)")
    return rec


def _consistent(rec: dict) -> None:
    """Cross-field shape: the classes, the per-class tables and the folds agree with each other."""
    classes = rec["data"]["classes"]
    if len(set(classes)) != len(classes) or not classes:
        raise _Bad("data.classes", "must list each class once")
    if set(rec["test"]["per_class"]) != set(classes):
        raise _Bad("test.per_class", "must have one entry per class of data.classes")
    for k, f in enumerate(rec["validation"]["folds"]):
        if "per_class" in f and not set(f["per_class"]) <= set(classes):
            raise _Bad(f"validation.folds[{k}].per_class", "names a class not in data.classes")
    if len(rec["validation"]["folds"]) != len(rec["data"]["split_hashes"]["folds"]):
        raise _Bad("validation.folds", "must have one entry per fold of data.split_hashes.folds")


# ------------------------------------------------------------------------------------------------ files


def write_record(run_dir: Path, rec: dict) -> Path:
    """Seal and write record.json atomically."""
    rec = seal(rec)
    validate(rec, run_dir / RECORD)
    path = run_dir / RECORD
    files.atomic_write_text(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return path


@dataclass(frozen=True)
class RunFiles:
    """A run's record and prediction files exactly as read and checked (copy these bytes, not the files again)."""

    record: dict
    source: Path  # the record file
    raw: bytes  # the record file's bytes
    predictions: bytes  # the test predictions' bytes (sha256 checked)
    folds: dict[int, bytes] = field(default_factory=dict)  # validation predictions by fold (sha256 checked)


def _checked(folder: Path, files: dict, what: str, source: Path) -> bytes:
    path = inside(folder, files["path"], f"{what} path", source)
    raw = read_regular(path, MAX_PREDICTIONS_BYTES, what)
    if hashlib.sha256(raw).hexdigest() != files["sha256"]:
        raise RecordError(f"{source}: {what} file {path} does not match the sha256 in the record")
    return raw


def read_run_files(path: str | Path) -> RunFiles:
    """Read and validate a record (a run folder or its record.json) and every predictions file it lists, each
    a regular file inside the run folder whose sha256 equals the record's."""
    p = Path(path)
    if p.is_dir():
        p = p / RECORD
    if not p.exists() and not p.is_symlink():
        raise RecordError(f"{p}: no run record here")
    raw = read_regular(p, MAX_RECORD_BYTES, "run record")
    rec = validate(parse_json(raw, p), p)
    pred = _checked(p.parent, rec["predictions"], "predictions", p)
    folds = {
        k: _checked(p.parent, f["predictions"], f"fold {k} validation predictions", p)
        for k, f in enumerate(rec["validation"]["folds"])
        if "predictions" in f
    }
    return RunFiles(rec, p, raw, pred, folds)


def read_record(path: str | Path, check_predictions: bool = True) -> dict:
    """Read and validate a record (a run folder or its record.json); also its predictions files' sha256."""
    if check_predictions:
        return read_run_files(path).record
    p = Path(path)
    if p.is_dir():
        p = p / RECORD
    if not p.exists() and not p.is_symlink():
        raise RecordError(f"{p}: no run record here")
    return validate(parse_json(read_regular(p, MAX_RECORD_BYTES, "run record"), p), p)


def probability_text(v: float) -> str:
    """A probability as the predictions files write it (7 significant digits): thresholds are chosen on these
    values, and `predict` prints and compares at the same precision."""
    return f"{float(v):.7g}"


def write_predictions(
    path: Path, names: list[str], patients: np.ndarray, y: np.ndarray, p: np.ndarray, classes: tuple[str, ...]
) -> str:
    """Probabilities per image (with labels and patient ids) as a deterministic gzip CSV (csv quoting, so any
    image name round-trips); returns its sha256."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "patient", *(f"y:{c}" for c in classes), *(f"p:{c}" for c in classes)])
    for i, name in enumerate(names):
        w.writerow([name, str(int(patients[i])), *(str(int(v)) for v in y[i]), *(probability_text(v) for v in p[i])])
    raw = gzip.compress(buf.getvalue().encode(), mtime=0)
    files.atomic_write(path, raw)
    return hashlib.sha256(raw).hexdigest()


def _gunzip(raw: bytes, limit: int, source: str | Path) -> bytes:
    """Gzip undone within `limit` output bytes (a small file that inflates to gigabytes is refused)."""
    return files.gunzip(raw, limit, source, RecordError)


def names_hash(names: Any) -> str:
    """The 16-hex-digit hash a record stores for a set of image names (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(str(n) for n in names)).encode()).hexdigest()[:16]


def split_hashes(names: np.ndarray, splits: Any) -> dict:
    """`data.split_hashes` of a record: the hashes of train-val, test and every fold's train and val names."""

    def h(rows: np.ndarray) -> str:
        return names_hash(names[rows])

    return {
        "trainval": h(splits.trainval),
        "test": h(splits.test),
        "folds": [{"train": h(f.train), "val": h(f.val)} for f in splits.folds],
    }
