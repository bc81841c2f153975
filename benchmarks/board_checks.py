"""What `cxrbench submit` (and every leaderboard load) pays for its checks on a real-size test set.

On the real metadata and official lists (tests/data/nih, 112,120 rows), for the test split of a protocol:
- baseline: the check main had, the point AUROCs from the predictions;
- re-derivation: every figure the board shows, the bootstrap CIs with the protocol's resamples included;
- data check: read the dataset's tables, recompute the protocol's splits, compare image set, labels, patients;
- content duplicates (issue 24) on a board of `--entries` entries of that size: the digest of the submitted
  predictions; the worst case, every filed predictions file read, sha256-checked, parsed and digested (what a
  board pays when no filed entry's test figures can be told apart); and what submit does, the figure test on
  every filed record and the parse of the one whose figures match (cxrbench.results.leaderboard.find_duplicate);
- pre-seal check (issue 24): every file a record names read and sha256-checked (test predictions and one fold's
  validation predictions of the same size), cxrbench.run.record.check_files.

    python benchmarks/board_checks.py                       # nih-official-14c@v1 (25,596 test images)
    python benchmarks/board_checks.py --protocol paper-15c@v1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import Timer, write_result  # noqa: E402

TABLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "nih"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="nih-official-14c@v1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--entries", type=int, default=50, help="filed entries on the board (content duplicates)")
    ap.add_argument("--load", default="", help="what else loaded the machine, recorded with the result")
    ap.add_argument("--tag", default="", help="added to the result's name (e.g. 'loaded': keeps an idle run's file)")
    args = ap.parse_args()

    from cxrbench.data.dataset import splits_for
    from cxrbench.metrics.auroc import per_class_auroc, plain_mean, score, weighted_mean
    from cxrbench.protocols import get_protocol
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import split_hashes
    from cxrbench.results.verify import check_data, open_tables, rederive_test

    protocol = get_protocol(args.protocol)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(TABLES / "Data_Entry_2017_v2020.csv.gz", folder)
        for f in (TABLES / "lists").iterdir():
            shutil.copy(f, folder)
        tables = open_tables(folder)
        md = tables.dataset.metadata
        s = splits_for(md, tables.dataset.layout, protocol)
        rows = s.test
        from cxrbench.data.labels import class_names

        classes = list(class_names(protocol.num_classes))
        y = md.labels(protocol.num_classes)[rows]
        rng = np.random.default_rng(0)
        p = np.clip(0.3 * y + 0.7 * rng.random(y.shape), 0, 1)
        pred = Predictions([str(n) for n in md.names[rows]], md.patients[rows], y, p, classes)
        rec = {
            "protocol": {"id": protocol.id, "version": protocol.version},
            "data": {
                "metadata_csv_sha256": md.sha256,
                "split_hashes": split_hashes(md.names, s),
                "cache_fingerprint": "",
                "classes": classes,
                "excluded_bad_images": 0,
            },
            "test": score(y, p, pred.patients, protocol.bootstrap, protocol.seed).to_dict(tuple(classes)),
        }

        def baseline() -> None:
            a = per_class_auroc(y, p)
            weighted_mean(a, y), plain_mean(a)

        def best(f) -> float:
            times = []
            for _ in range(args.repeats):
                with Timer() as t:
                    f()
                times.append(t.seconds)
            return min(times)

        t_base = best(baseline)
        t_full = best(lambda: rederive_test(rec, protocol, pred, "bench"))
        t_data = best(lambda: check_data(rec, pred, {}, open_tables(folder), "bench"))
        t_digest, t_all, t_submit, t_seal, size = _content_checks(folder, rec, pred, args.entries, best)
    out = {
        "protocol": protocol.key,
        "test_images": len(rows),
        "classes": len(classes),
        "resamples": protocol.bootstrap,
        "seconds": {
            "point_aurocs_baseline": round(t_base, 3),
            "rederive_all_figures": round(t_full, 3),
            "data_check": round(t_data, 3),
        },
        "ratio_rederive_vs_baseline": round(t_full / t_base, 1),
        "board_entries": args.entries,
        "predictions_file_bytes": size,
        "content_duplicates_seconds": {
            "digest_of_the_submitted_predictions": round(t_digest, 3),
            "worst_case_every_filed_file_parsed": round(t_all, 3),
            "submit_figure_test_then_one_parse": round(t_submit, 3),
        },
        "pre_seal_file_check_seconds": round(t_seal, 3),
        "ratios_vs_baseline": {
            "digest": round(t_digest / t_base, 1),
            "worst_case_duplicates": round(t_all / t_base, 1),
            "submit_duplicates": round(t_submit / t_base, 1),
            "pre_seal_check": round(t_seal / t_base, 1),
        },
        "load": args.load or None,
    }
    print(f"{protocol.key}: {len(rows):,} test images x {len(classes)} classes, {protocol.bootstrap} resamples")
    print(f"  point AUROCs (main's check)  {t_base:7.3f} s")
    print(f"  every figure re-derived      {t_full:7.3f} s  ({t_full / t_base:.1f}x the baseline)")
    print(f"  data check (tables, splits)  {t_data:7.3f} s")
    print(f"content duplicates on a board of {args.entries} entries ({size:,}-byte predictions files):")
    print(f"  digest of the submission     {t_digest:7.3f} s  ({t_digest / t_base:.1f}x the baseline)")
    print(f"  every filed file parsed      {t_all:7.3f} s  ({t_all / t_base:.1f}x the baseline; the worst case)")
    print(f"  submit: figures, one parse   {t_submit:7.3f} s  ({t_submit / t_base:.1f}x the baseline)")
    print(f"pre-seal check of the files a record names {t_seal:7.3f} s  ({t_seal / t_base:.1f}x the baseline)")
    name = f"board_checks-{protocol.id}" + (f"-{args.tag}" if args.tag else "")
    print(f"wrote {write_result(name, {**out, 'repeats': args.repeats})}")


def _content_checks(folder: Path, rec: dict, pred, entries: int, best):
    """(digest, worst case, submit's path, pre-seal check, predictions file bytes): see the module docstring.
    The filed entries' predictions files have the same size as the submission's (copies of one written file:
    parsing costs the same whatever the numbers); one filed record has the submission's test figures, the
    others figures that differ in one class, as other results do."""
    import copy
    import hashlib
    import json

    from cxrbench.results.leaderboard import _may_be_same
    from cxrbench.results.record import read_regular, write_predictions
    from cxrbench.results.verify import Predictions, predictions_digest
    from cxrbench.run.record import check_files

    board = folder / "board"
    board.mkdir()
    sha = write_predictions(
        board / "0.csv.gz", pred.images, pred.patients, pred.labels, pred.probabilities, tuple(pred.classes)
    )
    size = (board / "0.csv.gz").stat().st_size
    for i in range(1, entries):
        shutil.copy(board / "0.csv.gz", board / f"{i}.csv.gz")
    filed = []
    for i in range(entries):
        r = {"test": copy.deepcopy(rec["test"]), "predictions": {"sha256": sha}}
        if i != entries - 1:  # the last filed entry has the submission's figures; the others differ somewhere
            c = pred.classes[i % len(pred.classes)]
            r["test"]["per_class"][c]["auroc"] = round(r["test"]["per_class"][c]["auroc"] + 0.001 * (1 + i), 6)
        filed.append((board / f"{i}.csv.gz", r))

    def parsed_digest(path: Path, r: dict) -> str:
        raw = read_regular(path, 256 << 20, "predictions")
        assert hashlib.sha256(raw).hexdigest() == r["predictions"]["sha256"]
        return predictions_digest(Predictions.parse(raw, path))

    sub = Predictions.parse((board / "0.csv.gz").read_bytes(), "submission")  # as submit parses it
    mine = predictions_digest(sub)

    def every() -> None:
        assert sum(parsed_digest(p, r) == mine for p, r in filed) == entries

    def submit_path() -> None:
        hits = [p for p, r in filed if _may_be_same(rec, r) and parsed_digest(p, r) == mine]
        assert len(hits) == 1

    run = folder / "run"
    run.mkdir()
    shutil.copy(board / "0.csv.gz", run / "predictions.csv.gz")
    shutil.copy(board / "0.csv.gz", run / "fold0-val.csv.gz")
    named = {
        "predictions": {"path": "predictions.csv.gz", "sha256": sha},
        "validation": {"folds": [{"predictions": {"path": "fold0-val.csv.gz", "sha256": sha}}]},
    }
    (run / "record.json").write_text(json.dumps(named))
    return (
        best(lambda: predictions_digest(sub)),
        best(every),
        best(submit_path),
        best(lambda: check_files(run, named)),
        size,
    )


if __name__ == "__main__":
    main()
