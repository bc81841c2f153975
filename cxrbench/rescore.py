"""`cxrbench rescore`: re-score a finished run's saved test predictions against radiologist-adjudicated labels
(cxrbench.results.adjudicated), checked against the run's dataset tables, and write the sealed result beside
the run's record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cxrbench.errors import InputError, RecordError

RESULT_FORMAT = "cxrbench-adjudicated"
RESULT_VERSION = 1


def _metadata(run_dir: Path, rec: dict, data: str | None):
    """The metadata of the run's dataset: `data` (a cache or a dataset folder) or the cache the run recorded,
    whose CSV must be the one the record names."""
    from cxrbench.data.dataset import open_dataset

    if data is None:
        cfg_path = run_dir / "run.json"
        cache = None
        if cfg_path.exists():
            try:
                cache = json.loads(cfg_path.read_text()).get("cache_path")
            except json.JSONDecodeError:
                cache = None
        if not isinstance(cache, str) or not Path(cache).is_dir():
            raise RecordError(f"{run_dir}: the cache this run used is not here; pass --data with the run's cache or "
                              "dataset folder so the adjudicated names can be checked against its metadata")
        data = cache
    root = Path(data)
    if (root / "manifest.json").exists():
        from cxrbench.cache.store import open_cache

        ds = open_cache(root).metadata()
    else:
        ds = open_dataset(root)
    want = rec["data"]["metadata_csv_sha256"]
    if ds.metadata.sha256 != want:
        raise RecordError(f"{ds.metadata.path}: not the metadata this run used (sha256 {ds.metadata.sha256[:12]} vs "
                          f"{want[:12]} in the record)")
    return ds.metadata


def rescore_run(run: str | Path, adjudicated: str | Path, mapping: str | Path | None = None,
                sets: tuple[str, ...] = ("test",), data: str | None = None, display=None) -> tuple[dict, Path]:
    """Rescore RUN; returns (result, path of the sealed result file written in the run folder)."""
    import numpy as np

    from cxrbench.cache.store import atomic_write_bytes
    from cxrbench.protocols import protocol_key
    from cxrbench.results.adjudicated import DEFAULT_MAPPING, read_adjudicated, read_mapping, rescore
    from cxrbench.results.record import canonical, read_predictions, read_record

    run_dir = Path(run)
    rec = read_record(run_dir)
    meta = _metadata(run_dir, rec, data)
    labels = read_adjudicated(adjudicated, meta)
    m = DEFAULT_MAPPING if mapping is None else read_mapping(mapping)
    names, patients, y, p, classes = read_predictions(run_dir / rec["predictions"]["path"])
    rows = meta.indices(names, run_dir / rec["predictions"]["path"])
    if not np.array_equal(meta.patients[rows], patients):
        raise RecordError(f"{run_dir}: its predictions name other patients than the metadata for some images")
    truth = meta.labels(len(classes))[rows]
    if list(classes) != list(rec["data"]["classes"]) or not np.array_equal(truth, y):
        raise RecordError(f"{run_dir}: the NIH labels in its predictions differ from the metadata's")
    settings = rec["protocol"]["settings"]
    result = rescore(names, patients, y, p, list(classes), labels, m, resamples=int(settings["bootstrap"]),
                     seed=int(settings["seed"]), sets=tuple(sets))
    if result["coverage"]["in_predictions"] == 0:
        raise InputError(labels.path, f"none of its {'+'.join(sets)} images is in the test predictions of "
                                      f"{run_dir}")
    result = {"format": RESULT_FORMAT, "format_version": RESULT_VERSION, "run_id": rec["run_id"],
              "protocol": protocol_key(rec["protocol"]["id"], rec["protocol"]["version"]),
              "run_record_sha256": rec["record_sha256"], "predictions_sha256": rec["predictions"]["sha256"], **result}
    result["result_sha256"] = hashlib.sha256(canonical(result)).hexdigest()  # sealed, like a run record
    out = run_dir / f"adjudicated-{m.content_hash[:8]}-{'+'.join(sets)}.json"
    atomic_write_bytes(out, (json.dumps(result, indent=1, sort_keys=True) + "\n").encode())
    return result, out
