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


class UnsavedResult(RecordError):
    """The rescore was computed but its file could not be written (a read-only run folder, a full disk): the
    CLI shows `result` before this one-line error, so the computation is not lost."""

    def __init__(self, result: dict, cause: Exception) -> None:
        super().__init__(f"{cause}; the result above was computed but not saved")
        self.result = result


def open_run_tables(run_dir: Path, data: str | Path | None, why: str):
    """The metadata and lists of a run's data: from `data` when given, else from the cache the run recorded;
    `why` ends the error that says the cache is not here."""
    from cxrbench.results.verify import open_tables, recorded_cache

    tables_path = Path(data) if data is not None else recorded_cache(run_dir)
    if tables_path is None:
        raise RecordError(
            f"{run_dir}: the cache this run used is not here; pass --data with the run's cache or dataset folder{why}"
        )
    return open_tables(tables_path)


def rescore_run(
    run: str | Path,
    adjudicated: str | Path,
    mapping: str | Path | None = None,
    sets: tuple[str, ...] = ("test",),
    data: str | None = None,
) -> tuple[dict, Path]:
    """Rescore RUN; returns (result, path of the sealed result file written in the run folder).

    The run folder is untrusted: its record and predictions are read as `submit` reads them, and the predictions
    must be exactly its protocol's test split of the dataset tables at `data` (default: the cache the run
    recorded), with the metadata's labels and patients, before anything is scored."""
    from cxrbench.files import WriteError, atomic_write
    from cxrbench.results.adjudicated import DEFAULT_MAPPING, read_adjudicated, read_mapping, rescore
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import canonical, read_run_files
    from cxrbench.results.verify import check_data, check_protocol

    run_dir = Path(run)
    files = read_run_files(run_dir)
    rec = files.record
    protocol = check_protocol(rec, files.source)
    test = Predictions.parse(files.predictions, files.source)
    tables = open_run_tables(run_dir, data, ", so that its predictions and the adjudicated names can be checked")
    check_data(rec, test, {}, tables, files.source)
    labels = read_adjudicated(adjudicated, tables.dataset.metadata)
    m = DEFAULT_MAPPING if mapping is None else read_mapping(mapping)
    result = rescore(
        test.images,
        test.patients,
        test.labels,
        test.probabilities,
        list(test.classes),
        labels,
        m,
        resamples=protocol.bootstrap,
        seed=protocol.seed,
        sets=tuple(sets),
    )
    if result["coverage"]["in_predictions"] == 0:
        raise InputError(labels.path, f"none of its {'+'.join(sets)} images is in the test predictions of {run_dir}")
    result = {
        "format": RESULT_FORMAT,
        "format_version": RESULT_VERSION,
        "run_id": rec["run_id"],
        "protocol": protocol.key,
        "run_record_sha256": rec["record_sha256"],
        "predictions_sha256": rec["predictions"]["sha256"],
        **result,
    }
    result["result_sha256"] = hashlib.sha256(canonical(result)).hexdigest()  # sealed, like a run record
    out = run_dir / f"adjudicated-{m.content_hash[:8]}-{'+'.join(sets)}.json"
    try:  # the run folder may be someone else's: never through a link, never outside it
        atomic_write(out, (json.dumps(result, indent=1, sort_keys=True) + "\n").encode(), root=run_dir)
    except WriteError as e:
        raise UnsavedResult(result, e) from None
    return result, out
