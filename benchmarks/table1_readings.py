"""Every reading of the paper's subset rule against its Table 1, over several seeds, with the official lists.

For each rule in `cxrbench.data.subset.SUBSET_RULES` and each seed, the paper protocol's splits are built on
the real metadata (112,120 rows) with the release's train_val_list.txt and test_list.txt (tests/data/nih), and
the six rows of Table 1 are compared with the paper's. A rule's distance is the sum over the six rows of
|rows - paper's|, averaged over the seeds; the closest rule is the one the v2 paper protocols use. The per-class
subset counts are kept beside the targets too. Writes benchmarks/results/table1_readings.json.

    python benchmarks/table1_readings.py --seeds 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import RESULTS, git_commit, machine  # noqa: E402

NIH = Path(__file__).resolve().parents[1] / "tests" / "data" / "nih"


def official_folder(root: Path) -> Path:
    """A dataset folder with the real metadata CSV and the official lists beside it (no images)."""
    root.mkdir(parents=True, exist_ok=True)
    for src in (
        NIH / "Data_Entry_2017_v2020.csv.gz",
        NIH / "lists" / "train_val_list.txt.gz",
        NIH / "lists" / "test_list.txt.gz",
    ):
        shutil.copyfile(src, root / src.name)
    return root


def measure(data_dir: Path, rules: list[str], seeds: list[int]) -> dict:
    """Table 1 and per-class subset counts for every (rule, seed), and each rule's summary against the paper."""
    from dataclasses import replace

    from cxrbench.data.dataset import open_dataset, per_class_counts
    from cxrbench.data.splits import PAPER_TABLE1
    from cxrbench.data.subset import SUBSET_RULES, class_target
    from cxrbench.protocols import get_protocol

    ds = open_dataset(data_dir)
    base = get_protocol("paper-15c@v1")
    out: dict = {"rules": {}}
    for rule in rules:
        proto = replace(base, subset_rule=rule)
        per_seed = []
        for seed in seeds:
            s = ds.splits(proto, seed)
            t1 = {n: c for n, c, _, _, _ in s.table1_vs_paper(len(ds.metadata))}
            counts = per_class_counts(ds.metadata, s)
            per_seed.append(
                {
                    "seed": seed,
                    "table1": t1,
                    "difference": {n: t1[n] - PAPER_TABLE1[n] for n in t1},
                    "abs_difference_sum": int(sum(abs(t1[n] - PAPER_TABLE1[n]) for n in t1)),
                    "subset_images": int(len(s.subset)),
                    "per_class_subset": {c: v["subset"] for c, v in counts.items()},
                }
            )
        rows = list(PAPER_TABLE1)
        diffs = np.array([[p["difference"][n] for n in rows] for p in per_seed])
        off_target = [
            [p["per_class_subset"][c] - min(class_target(c), counts[c]["full"]) for c in counts] for p in per_seed
        ]
        out["rules"][rule] = {
            "description": SUBSET_RULES[rule].description,
            "mean_abs_difference_sum": round(float(np.mean([p["abs_difference_sum"] for p in per_seed])), 1),
            "difference_mean": {n: round(float(diffs[:, i].mean()), 1) for i, n in enumerate(rows)},
            "difference_min": {n: int(diffs[:, i].min()) for i, n in enumerate(rows)},
            "difference_max": {n: int(diffs[:, i].max()) for i, n in enumerate(rows)},
            "mean_abs_class_difference_from_target": round(float(np.mean(np.abs(off_target))), 1),
            "seeds": per_seed,
        }
    ranked = sorted(out["rules"], key=lambda r: out["rules"][r]["mean_abs_difference_sum"])
    out["ranking"] = ranked
    out["closest"] = ranked[0]
    out["paper_table1"] = PAPER_TABLE1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per rule")
    ap.add_argument("--rules", default=None, help="comma-separated rule names (default: every rule)")
    ap.add_argument(
        "--out", type=Path, default=None, help="result file (default benchmarks/results/table1_readings.json)"
    )
    args = ap.parse_args()
    from cxrbench.data.subset import SUBSET_RULES

    rules = args.rules.split(",") if args.rules else list(SUBSET_RULES)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr-table1-") as tmp:
        res = measure(official_folder(Path(tmp)), rules, list(range(args.seeds)))
    short = ["full tv", "full test", "tv subset", "train", "val", "test"]
    print(f"{'rule':30s} {'sum|diff|':>9s}  " + "  ".join(f"{n:>10s}" for n in short))
    for rule in res["ranking"]:
        r = res["rules"][rule]
        print(
            f"{rule:30s} {r['mean_abs_difference_sum']:9.1f}  "
            + "  ".join(f"{r['difference_mean'][n]:+10.1f}" for n in res["paper_table1"])
        )
    print(f"closest reading: {res['closest']} ({args.seeds} seeds, {time.perf_counter() - t0:.0f} s)")
    path = args.out or RESULTS / "table1_readings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "table1_readings",
        "machine": machine(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "seeds": args.seeds,
        **res,
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
