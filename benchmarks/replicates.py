"""What scoring and comparing replicate groups (5 training seeds per entry) costs on a real-size test set, against
today's single-record scoring in the same run, on one CPU core.

Test set: a protocol's real test split (tests/data/nih: its images, labels and patients; nih-official-14c@v1 has
25,596 images x 14 classes of 2,797 patients); predictions are phantom (labels plus noise, one draw per seed).
- baseline: two single records scored (`score_with_resamples`: point AUROCs and the patient bootstrap) and
  compared (`compare_resampled`), as the board does today;
- replicates: two 5-seed groups scored (`score_replicates`: per-seed figures on the same patient resamples)
  and compared with `two-level-t@v1` (the default) and `two-level-bootstrap@v1`;
both with the protocol's resamples (1,000) and bootstrap seed. The process is pinned to one core.

    python benchmarks/replicates.py
    python benchmarks/replicates.py --seeds 3 --protocol paper-15c@v1
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, Timer, git_commit, machine  # noqa: E402

TABLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "nih"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="nih-official-14c@v1")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per entry")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (the fastest is kept)")
    ap.add_argument("--note", default="", help="machine state to record, e.g. 'loaded by other agents'")
    ap.add_argument("--out", type=Path, default=RESULTS / "replicates.json")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from cxrbench.data.dataset import splits_for
    from cxrbench.files import atomic_write_json
    from cxrbench.metrics.auroc import compare_resampled, score_with_resamples
    from cxrbench.metrics.replicates import Replicate, compare_replicates, score_replicates
    from cxrbench.protocols import get_protocol
    from cxrbench.results.verify import open_tables

    protocol = get_protocol(args.protocol)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(TABLES / "Data_Entry_2017_v2020.csv.gz", folder)
        for f in (TABLES / "lists").iterdir():
            shutil.copy(f, folder)
        md = open_tables(folder).dataset.metadata
        s = splits_for(md, open_tables(folder).dataset.layout, protocol)
    rows = s.test
    y = md.labels(protocol.num_classes)[rows]
    patients = md.patients[rows]
    names = np.array([str(n) for n in md.names[rows]])
    rng = np.random.default_rng(0)

    def group(tag: str, gain: float) -> list[Replicate]:
        return [
            Replicate(
                k,
                names,
                patients,
                y,
                np.clip((0.3 + gain) * y + 0.7 * rng.random(y.shape), 0, 1),
                protocol.key,
                md.sha256,
                f"{tag}/seed{k}",
            )
            for k in range(args.seeds)
        ]

    a, b = group("a", 0.01), group("b", 0.0)
    r_n, seed = protocol.bootstrap, protocol.seed
    score_replicates([a[0]], 4, seed)  # compile the kernels before timing
    score_with_resamples(y[:50], a[0].p[:50], patients[:50], 2, seed)

    def baseline() -> None:
        _, ba = score_with_resamples(y, a[0].p, patients, r_n, seed)
        _, bb = score_with_resamples(y, b[0].p, patients, r_n, seed)
        compare_resampled(y, a[0].p, b[0].p, ba, bb, "weighted", r_n, seed)

    out: dict = {}

    def replicates() -> None:
        sa, sb = score_replicates(a, r_n, seed), score_replicates(b, r_n, seed)
        out["t"] = compare_replicates(sa, sb).to_dict()
        out["boot"] = compare_replicates(sa, sb, method="two-level-bootstrap").to_dict()
        out["sd"] = (sa.sd(), sb.sd())

    def one_record_new_kernel() -> None:
        score_replicates(a[:1], r_n, seed)

    def one_record_today() -> None:
        score_with_resamples(y, a[0].p, patients, r_n, seed)

    def best(f) -> float:
        times = []
        for _ in range(args.repeats):
            with Timer() as t:
                f()
            times.append(t.seconds)
        return min(times)

    t_base, t_rep = best(baseline), best(replicates)
    t_one_today, t_one_new = best(one_record_today), best(one_record_new_kernel)
    k = args.seeds
    result = {
        "benchmark": "replicates",
        "machine": {
            **machine(),
            "pinned_to_one_core": hasattr(os, "sched_setaffinity"),
            "state": args.note,
            "load_average_1_5_15_min_after": [round(x, 2) for x in os.getloadavg()],
        },
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "protocol": protocol.key,
        "inputs": "the protocol's real test split (images, labels, patients); phantom predictions",
        "test_images": len(rows),
        "patients": len(np.unique(patients)),
        "classes": y.shape[1],
        "seeds_per_entry": k,
        "resamples": r_n,
        "seconds": {
            "baseline_two_records_scored_and_compared": round(t_base, 3),
            f"two_{k}_seed_groups_scored_and_compared": round(t_rep, 3),
            "one_record_scored_today": round(t_one_today, 3),
            "one_record_scored_by_replicates": round(t_one_new, 3),
        },
        "ratio_groups_vs_baseline": round(t_rep / t_base, 2),
        "ratio_one_record_today_vs_replicates_kernel": round(t_one_today / t_one_new, 2),
        "comparison_two_level_t": out["t"],
        "comparison_two_level_bootstrap": out["boot"],
    }
    print(f"{protocol.key}: {len(rows):,} test images x {y.shape[1]} classes, {r_n} resamples, one core")
    print(f"  two records scored + compared (today)       {t_base:7.3f} s")
    print(f"  two {k}-seed groups scored + compared         {t_rep:7.3f} s  ({t_rep / t_base:.2f}x the baseline)")
    print(
        f"  one record scored: today {t_one_today:.3f} s, replicates kernel {t_one_new:.3f} s "
        f"({t_one_today / t_one_new:.1f}x faster)"
    )
    print(f"wrote {atomic_write_json(args.out, result)}")


if __name__ == "__main__":
    main()
