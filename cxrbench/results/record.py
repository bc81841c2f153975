"""The run record: one JSON file per run, with a `schema_version`, validated on read.

Every record carries its own sha256 (`record_sha256`, over the canonical JSON of everything else) and the
sha256 of its predictions file, so an edited number or a swapped predictions file is caught. Records are
written via a temp file + rename. Unknown schema versions are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.errors import RecordError
from cxrbench.hashing import file_sha256

SCHEMA_VERSION = 1
RECORD = "record.json"
PREDICTIONS = "predictions.csv.gz"

# key -> type(s) of the top level of a schema-1 record
_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "run_id": str,
    "created": str,
    "protocol": dict,
    "model": dict,
    "lr": float,
    "deviations": list,
    "data": dict,
    "seeds": dict,
    "code": dict,
    "environment": dict,
    "timing": dict,
    "validation": dict,
    "test": dict,
    "predictions": dict,
    "record_sha256": str,
}
_NESTED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "protocol": {"id": str, "version": int, "hash": str, "settings": dict},
    "model": {"name": str, "source": dict, "parameters": int, "pretrained": bool},
    "data": {"metadata_csv_sha256": str, "split_hashes": dict, "cache_fingerprint": str, "classes": list},
    "code": {"cxrbench_version": str, "git_commit": (str, type(None)), "git_dirty": (bool, type(None))},
    "timing": {"wall_seconds": (int, float), "train_images_per_s": (int, float)},
    "test": {"per_class": dict, "weighted_mean": dict, "plain_mean": dict, "n_images": int},
    "predictions": {"path": str, "sha256": str},
}


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
    """Check schema version, keys, types and the record's own hash; returns the record or raises RecordError."""
    if not isinstance(rec, dict):
        raise RecordError(f"{source}: not a JSON object")
    ver = rec.get("schema_version")
    if ver != SCHEMA_VERSION:
        raise RecordError(f"{source}: unknown schema_version {ver!r} (this cxrbench reads {SCHEMA_VERSION})")
    for key, typ in _SCHEMA.items():
        if key not in rec:
            raise RecordError(f"{source}: missing field {key!r}")
        if not isinstance(rec[key], typ) or (typ is float and isinstance(rec[key], bool)):
            raise RecordError(f"{source}: field {key!r} has type {type(rec[key]).__name__}")
    extra = set(rec) - set(_SCHEMA) - {"localization"}
    if extra:
        raise RecordError(f"{source}: unknown field(s) {', '.join(sorted(extra))}")
    for key, fields in _NESTED.items():
        for sub, typ in fields.items():
            if sub not in rec[key]:
                raise RecordError(f"{source}: missing field {key}.{sub}")
            if not isinstance(rec[key][sub], typ):
                raise RecordError(f"{source}: field {key}.{sub} has type {type(rec[key][sub]).__name__}")
    if rec["record_sha256"] != record_hash(rec):
        raise RecordError(f"{source}: record_sha256 does not match its content (the record was edited)")
    return rec


def write_record(run_dir: Path, rec: dict) -> Path:
    """Seal and write record.json atomically."""
    rec = seal(rec)
    validate(rec, run_dir / RECORD)
    path = run_dir / RECORD
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_record(path: str | Path, check_predictions: bool = True) -> dict:
    """Read and validate a record (a run folder or its record.json); also the predictions' sha256."""
    p = Path(path)
    if p.is_dir():
        p = p / RECORD
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        raise RecordError(f"{p}: no run record here") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}: not valid JSON ({e})") from None
    validate(rec, p)
    if check_predictions:
        pred = p.parent / rec["predictions"]["path"]
        if not pred.exists():
            raise RecordError(f"{p}: its predictions file {pred} is missing")
        if file_sha256(pred) != rec["predictions"]["sha256"]:
            raise RecordError(f"{p}: predictions file {pred} does not match the sha256 in the record")
    return rec


def write_predictions(path: Path, names: list[str], patients: np.ndarray, y: np.ndarray, p: np.ndarray,
                      classes: tuple[str, ...]) -> str:
    """Test-set probabilities per image (with labels and patient ids) as a deterministic gzip CSV; returns its
    sha256."""
    buf = io.StringIO()
    buf.write(",".join(["image", "patient", *(f"y:{c}" for c in classes), *(f"p:{c}" for c in classes)]) + "\n")
    for i, name in enumerate(names):
        buf.write(",".join([name, str(int(patients[i])), *(str(int(v)) for v in y[i]),
                            *(f"{float(v):.7g}" for v in p[i])]) + "\n")
    raw = gzip.compress(buf.getvalue().encode(), mtime=0)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(raw)
    os.replace(tmp, path)
    return hashlib.sha256(raw).hexdigest()


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(names, patients, y (N, C), p (N, C), classes) from a predictions file."""
    import pandas as pd

    df = pd.read_csv(path, dtype={"image": str})
    classes = [c[2:] for c in df.columns if c.startswith("y:")]
    y = df[[f"y:{c}" for c in classes]].to_numpy(np.uint8)
    p = df[[f"p:{c}" for c in classes]].to_numpy(np.float64)
    return df["image"].tolist(), df["patient"].to_numpy(np.int64), y, p, classes
