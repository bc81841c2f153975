"""The leaderboard: validated records filed append-only under `<board>/records/<id>@v<version>/`, ranked
within one protocol version and one data fingerprint only, with paired comparisons against the best entry.

`submit` re-derives every test metric from the record's predictions file, so an edited number is refused
even when its hash was recomputed; the predictions travel with the record for later paired comparisons.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrbench.errors import ConfigError, RecordError
from cxrbench.hashing import file_sha256
from cxrbench.results.record import read_predictions, read_record, validate

DEFAULT_BOARD = Path("leaderboard")
TOLERANCE = 1e-5


@dataclass
class Entry:
    """One filed record."""

    id: str
    record: dict
    path: Path
    predictions: Path

    @property
    def protocol_key(self) -> str:
        from cxrbench.protocols import protocol_key

        return protocol_key(self.record["protocol"]["id"], self.record["protocol"]["version"])

    @property
    def data_key(self) -> str:
        """What must be equal for two results to be ranked together: metadata, splits, exclusions."""
        d = self.record["data"]
        blob = json.dumps([d["metadata_csv_sha256"], d["split_hashes"], d.get("excluded_bad_images", 0)],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def weighted(self) -> float | None:
        return self.record["test"]["weighted_mean"]["auroc"]


@dataclass
class Group:
    protocol: str
    data_key: str
    entries: list[Entry]
    comparisons: dict[str, dict] = field(default_factory=dict)  # entry id -> paired comparison vs best


def _check_protocol(rec: dict, source: Path) -> None:
    from cxrbench.protocols import get_protocol, protocol_key

    key = protocol_key(rec["protocol"]["id"], rec["protocol"]["version"])
    try:
        p = get_protocol(key)
    except ConfigError as e:
        raise RecordError(f"{source}: protocol {key} is not known to this cxrbench ({e})") from None
    if rec["protocol"]["hash"] != p.content_hash or rec["protocol"]["settings"] != p.to_dict():
        raise RecordError(f"{source}: its protocol settings do not match {key} (hash {rec['protocol']['hash']} vs "
                          f"{p.content_hash}): a modified or mixed protocol is not filed under {key}")


def _check_metrics(rec: dict, predictions: Path, source: Path) -> None:
    from cxrbench.metrics import per_class_auroc, plain_mean, weighted_mean

    names, patients, y, p, classes = read_predictions(predictions)
    if classes != rec["data"]["classes"]:
        raise RecordError(f"{source}: the predictions' classes differ from the record's")
    if len(names) != rec["test"]["n_images"]:
        raise RecordError(f"{source}: {len(names)} predictions, but the record scores {rec['test']['n_images']}")
    a = per_class_auroc(y, p)
    for i, c in enumerate(classes):
        want = rec["test"]["per_class"][c]["auroc"]
        got = None if not np.isfinite(a[i]) else float(a[i])
        if (want is None) != (got is None) or (got is not None and abs(got - want) > TOLERANCE):
            raise RecordError(f"{source}: the recorded test AUROC of {c} ({want}) does not follow from its "
                              f"predictions ({got}); the record was altered")
    for key, val in (("weighted_mean", weighted_mean(a, y)), ("plain_mean", plain_mean(a))):
        want = rec["test"][key]["auroc"]
        if want is not None and abs(val - want) > TOLERANCE:
            raise RecordError(f"{source}: the recorded {key} ({want}) does not follow from its predictions")


def submit(run: str | Path, board: str | Path = DEFAULT_BOARD, allow_dirty: bool = False) -> Path:
    """Validate a run's record and file it (with its predictions) on the board; returns the filed path."""
    run = Path(run)
    src = run / "record.json" if run.is_dir() else run
    rec = read_record(src)  # schema, own hash, predictions sha256
    _check_protocol(rec, src)
    pred = src.parent / rec["predictions"]["path"]
    _check_metrics(rec, pred, src)
    dirty = rec["code"]["git_dirty"]
    if dirty is not False and not allow_dirty:
        state = "a modified (dirty) git tree" if dirty else "code outside a git checkout"
        raise RecordError(f"{src}: the run used {state}; commit and run again, or submit with --allow-dirty (the "
                          "board then marks the entry)")
    from cxrbench.protocols import protocol_key

    pkey = protocol_key(rec["protocol"]["id"], rec["protocol"]["version"])
    entry_id = f"{rec['run_id']}-{rec['record_sha256'][:8]}"
    folder = Path(board) / "records" / pkey
    target = folder / f"{entry_id}.json"
    if target.exists():
        raise RecordError(f"{src}: this record is already on the leaderboard ({target}); records are append-only")
    for other in folder.glob("*.json") if folder.exists() else []:
        if json.loads(other.read_text()).get("record_sha256") == rec["record_sha256"]:
            raise RecordError(f"{src}: this record is already on the leaderboard ({other})")
    folder.mkdir(parents=True, exist_ok=True)
    pred_target = folder / f"{entry_id}.predictions.csv.gz"
    tmp = pred_target.with_name(f".{pred_target.name}.tmp{os.getpid()}")
    shutil.copyfile(pred, tmp)
    os.replace(tmp, pred_target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, target)
    return target


def load(board: str | Path = DEFAULT_BOARD) -> list[Entry]:
    """Every filed record, validated (schema, hash, predictions sha256)."""
    root = Path(board) / "records"
    out = []
    if not root.exists():
        return out
    for path in sorted(root.glob("*/*.json")):
        rec = json.loads(path.read_text())
        validate(rec, path)
        pred = path.with_name(path.name[: -len(".json")] + ".predictions.csv.gz")
        if not pred.exists() or file_sha256(pred) != rec["predictions"]["sha256"]:
            raise RecordError(f"{path}: its predictions file {pred} is missing or altered")
        out.append(Entry(path.name[: -len(".json")], rec, path, pred))
    return out


def rank(entries: list[Entry], protocol: str | None = None, resamples: int = 1000) -> list[Group]:
    """Groups by (protocol version, data fingerprint), each sorted by weighted mean test AUROC, with the paired
    bootstrap comparison of every entry against the group's best."""
    from cxrbench.metrics import compare

    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        if protocol and protocol not in (e.protocol_key, e.record["protocol"]["id"]):
            continue
        groups.setdefault((e.protocol_key, e.data_key), []).append(e)
    out = []
    for (pk, dk), es in sorted(groups.items()):
        es.sort(key=lambda e: (-(e.weighted if e.weighted is not None else -1), e.id))
        g = Group(pk, dk, es)
        best = es[0]
        nb, pb_, yb, pbest, _ = read_predictions(best.predictions)
        for e in es[1:]:
            n, pat, y, p, _ = read_predictions(e.predictions)
            if n != nb:  # same test set (same split hash), possibly another order
                order = {name: i for i, name in enumerate(n)}
                idx = np.array([order[name] for name in nb])
                p = p[idx]
            c = compare(yb, p, pbest, pb_, metric="weighted", resamples=resamples, seed=0)  # entry - best
            g.comparisons[e.id] = c.to_dict()
        out.append(g)
    return out
