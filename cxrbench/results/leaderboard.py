"""The leaderboard: validated records filed append-only under `<board>/records/<id>@v<version>/`, ranked
within one protocol version and one data fingerprint only, with paired comparisons against the best entry.

A submitted run folder is untrusted. `submit` reads each file once (regular files inside the run folder), checks
the record's schema and hash, re-derives every figure the board shows from the predictions (`verify`), checks
the predictions against the protocol's test split and the metadata's labels of the run's data, refuses a copy
of a filed result (same content, whatever its own hash), and writes only inside the board. `load` re-checks
every filed record and skips (naming it) any that fails, so one bad file never takes the board down.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.errors import CxrbenchError, InputError, RecordError
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import (
    MAX_PREDICTIONS_BYTES,
    MAX_RECORD_BYTES,
    RunFiles,
    parse_json,
    read_regular,
    read_run_files,
    safe_name,
    validate,
)
from cxrbench.results.verify import check_data, open_tables, recorded_cache, verify

DEFAULT_BOARD = Path("leaderboard")


@dataclass
class Entry:
    """One filed record, re-checked when loaded."""

    id: str
    record: dict
    path: Path
    predictions: Path
    marks: dict[str, str | None] = field(default_factory=dict)  # figure group -> re-derived / reported / None
    test: Predictions | None = None  # the parsed test predictions
    resampled: np.ndarray | None = None  # (R, C) test AUROCs over the protocol's patient resamples
    declared: tuple[str, ...] = ()  # settings that differ from the protocol with a declared deviation
    digest: str = ""  # the test predictions' content digest (verify.predictions_digest)
    # replicates (set by `rank`): every record of this entry's recipe that differs only in the training seed,
    # itself included, in seed order (empty: not grouped yet), and their scores (ReplicateScores)
    members: list[Entry] = field(default_factory=list)
    scores: Any = None

    @property
    def protocol_key(self) -> str:
        from cxrbench.protocols import protocol_key

        return protocol_key(self.record["protocol"]["id"], self.record["protocol"]["version"])

    @property
    def data_key(self) -> str:
        return data_key(self.record)

    @property
    def weighted(self) -> float | None:
        return self.record["test"]["weighted_mean"]["auroc"]

    @property
    def seed(self) -> int:
        return int(self.record["seeds"]["train"])

    @property
    def n_seeds(self) -> int:
        return max(1, len(self.members))

    @property
    def ranked_by(self) -> float | None:
        """What the entry is ranked by: its weighted mean test AUROC, over its seeds when it has several."""
        return self.scores.mean() if self.n_seeds > 1 else self.weighted


@dataclass(frozen=True)
class Skipped:
    """A filed record that failed its checks, with the reason."""

    path: Path
    reason: str


@dataclass
class Group:
    protocol: str
    data_key: str
    entries: list[Entry]  # one per recipe and set of seeds (see `replicate_sets`), ranked
    comparisons: dict[str, dict] = field(default_factory=dict)  # entry id -> paired comparison vs best
    method: str = ""  # the comparison of two entries of 2+ seeds (cxrbench.metrics.replicates)

    @property
    def pooled(self) -> bool:
        """Whether an entry of the group pools several seeds."""
        return any(e.n_seeds > 1 for e in self.entries)


def recipe_key(rec: dict) -> str:
    """What replicates share: everything a record says about how it trained except the training seed (model
    and its source, lr, pretrained and its weights, the deviations); protocol and data are the group's."""
    m = rec["model"]
    blob = [m["name"], m["source"], m["pretrained"], m.get("weights"), rec["lr"], sorted(rec["deviations"])]
    return json.dumps(blob, sort_keys=True, default=str)


def replicate_sets(entries: list[Entry]) -> list[list[Entry]]:
    """Entries of one protocol version and data, as sets of replicates: records of one recipe (`recipe_key`)
    that differ only in the training seed, each seed once per set (a seed filed twice, e.g. from other code,
    starts another set; the earlier filed goes first), each set in seed order."""
    sets: dict[str, list[list[Entry]]] = {}
    for e in sorted(entries, key=lambda e: (e.record["created"], str(e.path))):
        mine = sets.setdefault(recipe_key(e.record), [])
        home = next((s for s in mine if all(x.seed != e.seed for x in s)), None)
        if home is None:
            mine.append([e])
        else:
            home.append(e)
    return [sorted(s, key=lambda e: e.seed) for mine in sets.values() for s in mine]


def data_key(rec: dict) -> str:
    """What must be equal for two results to be ranked together: metadata, splits, exclusions."""
    d = rec["data"]
    blob = json.dumps([d["metadata_csv_sha256"], d["split_hashes"], d.get("excluded_bad_images", 0)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


LOCK = ".submit.lock"
# two identical sets of predictions give the same point AUROCs (the record's are rounded to 6 digits and
# re-derived): a filed entry whose figures differ by more than this cannot hold the same predictions
_SAME_FIGURE = 2e-5


def _figures(rec: dict) -> tuple[int, list[float | None]]:
    t = rec["test"]
    return t["n_images"], [t["per_class"][c]["auroc"] for c in sorted(t["per_class"])]


def _may_be_same(a: dict, b: dict) -> bool:
    """Whether two records' test figures allow the same predictions (a cheap test before parsing any file)."""
    (na, fa), (nb, fb) = _figures(a), _figures(b)
    if na != nb or len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > _SAME_FIGURE):
            return False
    return True


def filed_digest(path: Path, rec: dict) -> str | None:
    """The content digest of a filed record's test predictions (None when its file is missing or altered: such
    an entry is skipped when the board is read, so it cannot be the original of a duplicate either)."""
    from cxrbench.results.verify import predictions_digest

    try:
        raw = read_regular(_predictions_file(path), MAX_PREDICTIONS_BYTES, "predictions")
        if hashlib.sha256(raw).hexdigest() != rec["predictions"]["sha256"]:
            return None
        return predictions_digest(Predictions.parse(raw, path))
    except CxrbenchError:
        return None


def find_duplicate(board: Path, rec: dict, digest: str) -> Path | None:
    """The filed record whose test predictions have the same content (`digest`) as `rec`'s, whatever either
    record says about its run id, lr, seed, model or file; only entries whose test figures allow it are
    parsed."""
    for path, other in _filed(board):
        if _may_be_same(rec, other) and filed_digest(path, other) == digest:
            return path
    return None


@contextmanager
def board_lock(root: Path):
    """An exclusive lock on the board (`ROOT/.submit.lock`, a regular file), held while a submit checks what
    is filed and writes: two submits of one result cannot both pass the duplicate check."""
    import fcntl

    from cxrbench.files import make_dirs, open_lock

    make_dirs(root)
    fd = open_lock(root / LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _fold_file(record_path: Path, k: int) -> Path:
    return record_path.with_name(record_path.name[: -len(".json")] + f".fold{k}-val.csv.gz")


def _predictions_file(record_path: Path) -> Path:
    return record_path.with_name(record_path.name[: -len(".json")] + ".predictions.csv.gz")


def _within(path: Path, root: Path, source: Path) -> Path:
    if not path.resolve().is_relative_to(root.resolve()):
        raise RecordError(f"{source}: refusing to write {path}: it lies outside the leaderboard {root}")
    return path


def _filed(board: Path) -> list[tuple[Path, dict]]:
    """(path, record) of every filed record that still parses and validates (others are skipped here)."""
    out = []
    for path in sorted((board / "records").glob("*/*.json")):
        try:
            out.append((path, validate(parse_json(read_regular(path, MAX_RECORD_BYTES, "filed record"), path), path)))
        except CxrbenchError:
            continue
    return out


def submit(
    run: str | Path, board: str | Path = DEFAULT_BOARD, allow_dirty: bool = False, data: str | Path | None = None
) -> Path:
    """Check a run (record, predictions, re-derived figures, the protocol's split of its data) and file it with
    its predictions on the board; returns the filed record's path.

    `data` is the cache or dataset folder whose tables the predictions are checked against (default: the cache
    the run recorded in its run.json, when it exists here)."""
    files: RunFiles = read_run_files(run)
    rec, src = files.record, files.source
    checked = verify(rec, files.predictions, files.folds, src)
    dirty = rec["code"]["git_dirty"]
    if dirty is not False and not allow_dirty:
        state = "a modified (dirty) git tree" if dirty else "code outside a git checkout"
        raise RecordError(
            f"{src}: the run used {state}; commit and run again, or submit with --allow-dirty (the "
            "board then marks the entry)"
        )
    where = Path(data) if data is not None else recorded_cache(src.parent)
    if where is None:
        raise RecordError(
            f"{src}: its predictions must be checked against the protocol's test split of the run's "
            "data, and the cache the run recorded is not here; pass --data with that cache or the "
            "dataset folder"
        )
    check_data(rec, checked.test, checked.folds, open_tables(where), src)

    from cxrbench.protocols import protocol_key

    pkey = safe_name(protocol_key(rec["protocol"]["id"], rec["protocol"]["version"]), "protocol", src)
    entry_id = f"{safe_name(rec['run_id'], 'run_id', src)}-{rec['record_sha256'][:8]}"
    root = Path(board)
    folder = root / "records" / pkey
    target = folder / f"{entry_id}.json"
    with board_lock(root):  # the checks below and the writes after them, one submit at a time
        for other, orec in _filed(root):
            if orec["record_sha256"] == rec["record_sha256"]:
                raise RecordError(
                    f"{src}: this record is already on the leaderboard ({other}); records are append-only"
                )
        same = find_duplicate(root, rec, checked.digest)
        if same is not None:
            raise RecordError(
                f"{src}: the same result is already on the leaderboard ({same}): its test predictions have "
                "the same images and probabilities, whatever the run id, lr, seed, model or file says"
            )
        if target.exists() or target.is_symlink():
            raise RecordError(f"{src}: {target} exists already; records are append-only")
        from cxrbench.files import atomic_write, make_dirs

        make_dirs(folder, root=root)  # records/ or its protocol folder a link (out of the board): refused here
        writes = [(_within(_predictions_file(target), root, src), files.predictions)]
        writes += [(_within(_fold_file(target, k), root, src), raw) for k, raw in sorted(files.folds.items())]
        writes.append((_within(target, root, src), files.raw))  # the record last: a filed record has its files
        for path, raw in writes:
            atomic_write(path, raw, root=root)
    return target


def _load_entry(path: Path) -> Entry:
    from cxrbench.protocols import protocol_key

    rec = validate(parse_json(read_regular(path, MAX_RECORD_BYTES, "filed record"), path), path)
    key = protocol_key(rec["protocol"]["id"], rec["protocol"]["version"])
    if path.parent.name != key:
        raise RecordError(f"{path}: a {key} record filed under {path.parent.name}")

    def checked(p: Path, sha: str, what: str) -> bytes:
        raw = read_regular(p, MAX_PREDICTIONS_BYTES, what)
        if hashlib.sha256(raw).hexdigest() != sha:
            raise RecordError(f"{path}: its {what} file {p} is altered (sha256 differs from the record's)")
        return raw

    pred = _predictions_file(path)
    raw = checked(pred, rec["predictions"]["sha256"], "predictions")
    folds = {
        k: checked(_fold_file(path, k), f["predictions"]["sha256"], f"fold {k} validation predictions")
        for k, f in enumerate(rec["validation"]["folds"])
        if "predictions" in f
    }
    v = verify(rec, raw, folds, path)
    return Entry(path.name[: -len(".json")], rec, path, pred, v.marks, v.test, v.resampled, v.declared, v.digest)


def scan(board: str | Path = DEFAULT_BOARD) -> tuple[list[Entry], list[Skipped]]:
    """Every filed record that passes its checks, and every one that does not (with the reason)."""
    root = Path(board)
    if not root.is_dir():
        raise InputError(root, f"no leaderboard here (a folder made by `cxrbench submit RUN --leaderboard {root}`)")
    entries, skipped = [], []
    for path in sorted((root / "records").glob("*/*.json")):
        try:
            entries.append(_load_entry(path))
        except CxrbenchError as e:
            skipped.append(Skipped(path, str(e)))
        except Exception as e:  # a file crafted to break a check it should have failed is skipped all the same
            skipped.append(Skipped(path, f"{path}: cannot be checked ({type(e).__name__}: {e})"))
    first: dict[tuple[str, str, str], Entry] = {}
    kept = []
    for entry in sorted(entries, key=lambda e: (e.record["created"], str(e.path))):
        key = (entry.protocol_key, entry.data_key, entry.digest)  # a duplicate that would be ranked beside its original
        if key in first:  # filed by hand or by an older cxrbench: the earliest one stands
            skipped.append(
                Skipped(entry.path, f"{entry.path}: the same test predictions as {first[key].path} (a duplicate)")
            )
        else:
            first[key] = entry
            kept.append(entry)
    kept.sort(key=lambda e: str(e.path))
    return kept, skipped


def load(board: str | Path = DEFAULT_BOARD, display=None) -> list[Entry]:
    """Every filed record that passes its checks; each one that fails is named with the reason (a warning) and
    left out."""
    entries, skipped = scan(board)
    if skipped:
        from cxrbench.console import get_display

        d = display or get_display()
        for s in skipped:
            d.warn(f"skipped {s.path}: {s.reason.removeprefix(f'{s.path}: ')}")
    return entries


def rank(entries: list[Entry], protocol: str | None = None, method: str = "two-level-t") -> list[Group]:
    """Groups by (protocol version, data fingerprint); in each, the replicates of one recipe are one entry
    (`replicate_sets`, scored from each seed's checked predictions), sorted by weighted mean test AUROC (over
    seeds), with the paired comparison of every entry against the group's best (the protocol's resamples and
    seed; the resamples drawn when the entries were checked are reused): for two entries of 2+ seeds `method`
    of cxrbench.metrics.replicates, which counts seed and patient variance; with one seed on a side, the paired
    patient bootstrap (`patient-bootstrap@v1`, exactly today's test for one seed each)."""
    from cxrbench.metrics.auroc import bootstrap_aurocs, compare_resampled
    from cxrbench.metrics.replicates import METHODS, PATIENT_BOOTSTRAP, ReplicateError, compare_replicates
    from cxrbench.protocols import get_protocol

    groups: dict[tuple[str, str], list[Entry]] = {}
    for e in entries:
        if protocol and protocol not in (e.protocol_key, e.record["protocol"]["id"]):
            continue
        groups.setdefault((e.protocol_key, e.data_key), []).append(e)
    out = []
    for (pk, dk), filed in sorted(groups.items()):
        proto = get_protocol(pk)

        def resampled(e: Entry, t: Predictions, proto=proto) -> np.ndarray:
            if e.resampled is None:
                e.resampled = bootstrap_aurocs(t.labels, t.probabilities, t.patients, proto.bootstrap, proto.seed)
            return e.resampled

        es = []
        for s in replicate_sets(filed):
            for e in s:
                e.test = e.test or Predictions.read(e.predictions)
            pooled = _pool(s, pk, dk, proto, resampled) if len(s) > 1 else None
            if pooled is None:  # one seed, or seeds that cannot pool (other test images): entries of their own
                for e in s:
                    e.members, e.scores = [e], None
                es += s
            else:
                s[0].members, s[0].scores = s, pooled
                es.append(s[0])
        es.sort(key=lambda e: (-(e.ranked_by if e.ranked_by is not None else -1), e.id))
        g = Group(pk, dk, es, method=METHODS[method])
        if any(e.n_seeds > 1 for e in es):
            for e in es:  # the single-seed entries too, for the comparisons with pooled ones
                e.scores = e.scores or _pool([e], pk, dk, proto, resampled)
        best = es[0].test or Predictions.read(es[0].predictions)
        order = {name: i for i, name in enumerate(best.images)}
        for e in es[1:]:
            t = e.test or Predictions.read(e.predictions)
            if e.n_seeds > 1 or es[0].n_seeds > 1:
                if e.scores is None or es[0].scores is None:
                    continue
                try:
                    g.comparisons[e.id] = compare_replicates(e.scores, es[0].scores, "weighted", method).to_dict()
                except ReplicateError:
                    pass  # not the same test images, labels or patients: no paired comparison
                continue
            if set(t.images) != set(order):
                continue  # not the same test images: no paired comparison
            idx = np.array([order[n] for n in t.images])
            y, p = np.empty_like(best.labels), np.empty_like(t.probabilities)
            y[idx], p[idx] = t.labels, t.probabilities
            if not np.array_equal(y, best.labels) or not np.array_equal(best.patients[idx], t.patients):
                continue  # other labels or patients for the same images: no paired comparison
            c = compare_resampled(
                best.labels,
                p,
                best.probabilities,
                resampled(e, t),
                resampled(es[0], best),
                "weighted",
                proto.bootstrap,
                proto.seed,
            )  # entry - best
            g.comparisons[e.id] = {**c.to_dict(), "method": PATIENT_BOOTSTRAP, "single_seed": True, "seeds": [1, 1]}
        out.append(g)
    return out


def _pool(members: list[Entry], pk: str, dk: str, proto, resampled):
    """The ReplicateScores of entries that differ only in seed, from each one's checked predictions and the
    patient resamples drawn when it was checked; None when they cannot pool (ReplicateError)."""
    from cxrbench.metrics.replicates import Replicate, ReplicateError, scores_from

    tests = [e.test or Predictions.read(e.predictions) for e in members]
    reps = [
        Replicate(e.seed, np.asarray(t.images), t.patients, t.labels, t.probabilities, pk, dk, str(e.path))
        for e, t in zip(members, tests)
    ]
    try:
        return scores_from(reps, [resampled(e, t) for e, t in zip(members, tests)], proto.bootstrap, proto.seed)
    except ReplicateError:
        return None
