"""What `cxrbench evaluate`'s figures cost on a real-size test set, against the AUROC scoring of the same
predictions in the same run, on one CPU core.

Test set: nih-official-14c@v1's real test split (tests/data/nih: 25,596 images of 2,797 patients, with the real
metadata's sex, ages (including the ages over 120) and views), labelled with the 15 classes ("No Finding"
included); validation: the protocol's fold-0 validation split. Predictions are phantom (labels plus noise).
- baseline: `score_with_resamples` (per-class AUROCs, the means and their patient bootstrap), what a run and
  the board compute for a record;
- evaluate: `cxrbench.metrics.evaluation.evaluate` (three operating points with CIs of five rates each,
  calibration, AUROC/TPR/FPR by sex, five age bands, view and a two-valued user attribute with CIs, and
  underdiagnosis by every group), without the pictures;
both with the protocol's 1,000 resamples and its bootstrap seed. The process is pinned to one core.

    python benchmarks/evaluate.py --note "2-core VM loaded by other agents"
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

from benchmarks._common import RESULTS, Timer, git_commit, machine, machine_tag  # noqa: E402

TABLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "nih"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="nih-official-14c@v1", help="whose test and fold-0 validation splits")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (the fastest is kept)")
    ap.add_argument("--note", default="", help="machine state to record, e.g. 'loaded by other agents'")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from cxrbench.data.dataset import splits_for
    from cxrbench.files import atomic_write_json
    from cxrbench.metrics import evaluation as ev
    from cxrbench.metrics.auroc import score_with_resamples
    from cxrbench.protocols import get_protocol
    from cxrbench.results.verify import open_tables

    protocol = get_protocol(args.protocol)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(TABLES / "Data_Entry_2017_v2020.csv.gz", folder)
        for f in (TABLES / "lists").iterdir():
            shutil.copy(f, folder)
        tables = open_tables(folder)
        md = tables.dataset.metadata
        s = splits_for(md, tables.dataset.layout, protocol)
    labels = md.labels(15)
    rows, vrows = s.test, s.folds[0].val
    y, vy = labels[rows], labels[vrows]
    patients = md.patients[rows]
    rng = np.random.default_rng(0)
    p = np.clip(0.3 * y + 0.7 * rng.random(y.shape), 0, 1)
    vp = np.clip(0.3 * vy + 0.7 * rng.random(vy.shape), 0, 1)
    t = md.table
    ages = t["age"].to_numpy()[rows]
    attrs = [
        ev.Attribute("sex", t["sex"].to_numpy(dtype=object)[rows], ("F", "M")),
        ev.Attribute("age", ev.age_bands(ages), (*(b[2] for b in ev.AGE_BANDS), ev.OLDEST_BAND)),
        ev.Attribute("view", t["view"].to_numpy(dtype=object)[rows], ("PA", "AP")),
        ev.Attribute("drain", np.array(["no", "yes"], dtype=object)[rng.integers(0, 2, len(rows))], ("no", "yes")),
    ]
    classes = [f"c{i}" for i in range(14)] + ["No Finding"]
    r_n, seed = protocol.bootstrap, protocol.seed
    # compile the kernels before timing
    score_with_resamples(y[:50], p[:50], patients[:50], 2, seed)
    ev.evaluate(y[:300], p[:300], patients[:300], vy[:300], vp[:300], classes, [], 2, seed)

    def best(f) -> float:
        times = []
        for _ in range(args.repeats):
            with Timer() as tm:
                f()
            times.append(tm.seconds)
        return min(times)

    out: dict = {}

    def evaluate() -> None:
        out["r"] = ev.evaluate(y, p, patients, vy, vp, classes, attrs, r_n, seed)

    t_base = best(lambda: score_with_resamples(y, p, patients, r_n, seed))
    t_eval = best(evaluate)
    result = {
        "benchmark": "evaluate",
        "machine": {
            **machine(),
            "pinned_to_one_core": hasattr(os, "sched_setaffinity"),
            "state": args.note,
            "load_average_1_5_15_min_after": [round(x, 2) for x in os.getloadavg()],
        },
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "protocol": protocol.key,
        "inputs": "the protocol's real test and fold-0 validation splits (images, 15-class labels, patients, sex, "
        "age, view); phantom predictions; a random two-valued user attribute",
        "test_images": len(rows),
        "validation_images": len(vrows),
        "patients": len(np.unique(patients)),
        "classes": y.shape[1],
        "resamples": r_n,
        "groups": {a.name: list(a.groups) for a in attrs},
        "ages_over_120_left_out": int((ages > ev.MAX_AGE).sum()),
        "seconds": {"auroc_scoring_baseline": round(t_base, 3), "evaluate": round(t_eval, 3)},
        "ratio_evaluate_vs_auroc_scoring": round(t_eval / t_base, 2),
    }
    path = args.out or RESULTS / f"evaluate-{machine_tag()}.json"
    atomic_write_json(path, result)
    print(
        f"{len(rows):,} test images x {y.shape[1]} classes, {r_n:,} resamples, {sum(len(a.groups) for a in attrs)} "
        f"groups: AUROC scoring {t_base:.2f} s, evaluate {t_eval:.2f} s, ratio {t_eval / t_base:.2f} (one core; "
        f"load average {os.getloadavg()[0]:.1f}); wrote {path}"
    )


if __name__ == "__main__":
    main()
