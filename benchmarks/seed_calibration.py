"""Type-I error and power of the seed-aware comparison (cxrbench.metrics.replicates), by simulation.

Simulated inputs only (cxrbench.metrics.seedsim): per trial, one test set of ~1,200 images of 600 patients x 4
classes and two entries of K seeds; per-seed shifts of a recipe's skill drawn around one mean, patient- and
image-level noise shared by every model, and each seed's own noise on top. Under the null both entries come
from one distribution; the power rows give entry a more separation (its observed AUROC gain is reported).
For each row: the rejection rate at 5% of two-level-t@v1 (the default), two-level-bootstrap@v1, and today's
paired patient bootstrap fed the first seed of each entry. Writes benchmarks/results/seed_calibration.json.

    python benchmarks/seed_calibration.py                  # 500 null trials per regime, 300 per power row
    python benchmarks/seed_calibration.py --trials 100 --power-trials 50
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, git_commit, machine  # noqa: E402

REGIMES = {
    # name: seed sd of the separation (the patient and own noise stay the defaults); with no shift, seeds still
    # differ in which images they get wrong (their own noise)
    "no skill shift": 0.0,
    "seed sd ~ patient sd": 0.05,
    "seed sd ~ 2x patient sd": 0.1,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=500, help="null trials per regime and seed count")
    ap.add_argument("--power-trials", type=int, default=300, help="trials per power row")
    ap.add_argument("--resamples", type=int, default=200, help="patient resamples per trial")
    ap.add_argument("--out", type=Path, default=RESULTS / "seed_calibration.json")
    args = ap.parse_args()

    from rich.progress import Progress

    from cxrbench.files import atomic_write_json
    from cxrbench.metrics.seedsim import SimSettings, rejection_rates

    base = SimSettings()
    rows = []
    plan = [("null", name, sd, k, 0.0, args.trials) for name, sd in REGIMES.items() for k in (3, 5)]
    plan += [("power", "seed sd ~ 2x patient sd", 0.1, k, e, args.power_trials) for e in (0.075, 0.15) for k in (3, 5)]
    t0 = time.perf_counter()
    with Progress() as bar:
        for kind, name, sd, k, effect, trials in plan:
            task = bar.add_task(f"{kind} {name}, {k}+{k} seeds, effect {effect}", total=trials)
            r = rejection_rates(
                replace(base, seed_sd=sd, effect=effect),
                trials,
                seeds=k,
                resamples=args.resamples,
                seed=len(rows),
                progress=lambda i, task=task: bar.update(task, completed=i + 1),
            )
            rows.append({"kind": kind, "regime": name, "seed_sd_separation": sd, "effect_separation": effect, **r})
    print(
        f"{'':6} {'regime':26} {'seeds':>5} {'AUROC diff':>10} {'seed sd':>8} {'pat. sd':>8}   t-test  2L-boot  1-seed"
    )
    for r in rows:
        rej = r["reject"]
        print(
            f"{r['kind']:6} {r['regime']:26} {r['seeds_per_entry']:>5} {r['mean_diff']:>+10.4f} "
            f"{r['mean_seed_sd']:>8.4f} {r['mean_patient_sd']:>8.4f}   {rej['two-level-t']:6.3f} "
            f"{rej['two-level-bootstrap']:7.3f} {rej['single-seed']:7.3f}   {r['sd_diff']:.4f} "
            f"{r['rms_se_two_level_t']:.4f} {r['mean_df_two_level_t']:5.1f}"
        )
    out = {
        "benchmark": "seed_calibration",
        "inputs": "simulated (cxrbench.metrics.seedsim)",
        "settings": asdict(base),
        "machine": machine(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    print(f"wrote {atomic_write_json(args.out, out)}")


if __name__ == "__main__":
    main()
