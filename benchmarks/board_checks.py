"""What `cxrbench submit` (and every leaderboard load) pays for its checks on a real-size test set.

On the real metadata and official lists (tests/data/nih, 112,120 rows), for the test split of a protocol:
- baseline: the check main had, the point AUROCs from the predictions;
- re-derivation: every figure the board shows, the bootstrap CIs with the protocol's resamples included;
- data check: read the dataset's tables, recompute the protocol's splits, compare image set, labels, patients.

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
    }
    print(f"{protocol.key}: {len(rows):,} test images x {len(classes)} classes, {protocol.bootstrap} resamples")
    print(f"  point AUROCs (main's check)  {t_base:7.3f} s")
    print(f"  every figure re-derived      {t_full:7.3f} s  ({t_full / t_base:.1f}x the baseline)")
    print(f"  data check (tables, splits)  {t_data:7.3f} s")
    print(f"wrote {write_result(f'board_checks-{protocol.id}', out)}")


if __name__ == "__main__":
    main()
