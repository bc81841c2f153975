"""Does the cache's resampling (box vs the paper's bilinear) change test AUROC? A paired comparison on a
phantom set, on the CPU.

One phantom set (`cxrbench synth`) is built into two caches, `--resample box` and `--resample bilinear`; the
same model is trained under the same 64-pixel protocol (`smoke`'s settings, with the cache's resampling) on
each, and the two runs' test predictions are compared with the paired patient-level bootstrap of the weighted
mean AUROC (cxrbench.metrics.auroc.compare): same images, same seeds, only the 1024 -> 256 resampling differs.
What it can show: whether the resampling moves AUROC on these images. The paired bootstrap covers the sampling of
test images only: different inputs send SGD down different paths, so with one training seed per arm a
difference can still be training noise; several seeds (`--seeds 0,1,2`) separate the two. What it cannot:
phantom findings are drawn shapes, and at 64 pixels both filters blur the 256-pixel
difference further, so it says nothing about real findings at the paper's 224 pixels. The two protocols exist
only inside this script (they are not published). Writes benchmarks/results/resample_auroc-<machine>.json.

    python benchmarks/resample_auroc.py --n 1000 --models tiny,tiny_attn
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="phantom images")
    ap.add_argument("--models", default="tiny,tiny_attn")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the paired test")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import numpy as np

    from cxrbench.cache.build import build_cache
    from cxrbench.data.synth import generate
    from cxrbench.metrics.auroc import compare
    from cxrbench.protocols import PROTOCOLS, get_protocol
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import read_record
    from cxrbench.run import RunOptions, run

    work = args.work or Path(tempfile.mkdtemp(prefix="cxr-resample-"))
    t0 = time.perf_counter()
    if not (work / "synth").exists():
        generate(work / "synth", args.n, seed=1, compress_level=1)
    caches = {r: build_cache(work / "synth", work / f"cache-{r}", resample=r).path for r in ("box", "bilinear")}
    base = get_protocol("smoke")
    results: dict = {"images": args.n, "protocol_base": base.key, "comparisons": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        protos = {r: replace(base, id=f"resample-study-{r}", seed=seed, resample=r) for r in caches}
        for p in protos.values():
            PROTOCOLS[p.key] = p
        for model in args.models.split(","):
            preds, recs = {}, {}
            for r, p in protos.items():
                opts = RunOptions(
                    model=model,
                    protocol=p.key,
                    cache=str(caches[r]),
                    out=str(work / "runs"),
                    device="cpu",
                    run_id=f"{model}-{r}-seed{seed}",
                )
                rec_path = (
                    run(opts)
                    if not (work / "runs" / opts.run_id / "record.json").exists()
                    else work / "runs" / opts.run_id / "record.json"
                )
                recs[r] = read_record(rec_path.parent)
                preds[r] = Predictions.read(rec_path.parent / recs[r]["predictions"]["path"])
            box, bil = preds["box"], preds["bilinear"]
            nb, pb, yb, prb = box.images, box.patients, box.labels, box.probabilities
            nl, yl, prl = bil.images, bil.labels, bil.probabilities
            assert list(nb) == list(nl) and np.array_equal(yb, yl), "the two runs must score the same test images"
            c = compare(yb, prl, prb, pb, resamples=args.resamples)
            row = {
                "model": model,
                "seed": seed,
                "test_images": int(len(nb)),
                "weighted_auroc_box": recs["box"]["test"]["weighted_mean"]["auroc"],
                "weighted_auroc_bilinear": recs["bilinear"]["test"]["weighted_mean"]["auroc"],
                "bilinear_minus_box": c.to_dict(),
            }
            results["comparisons"].append(row)
            d = c.to_dict()
            print(
                f"{model} seed {seed}: weighted AUROC box {row['weighted_auroc_box']:.4f}, bilinear "
                f"{row['weighted_auroc_bilinear']:.4f}; bilinear - box {d['diff']:+.4f} "
                f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}], p {d['p_value']:.3f}",
                flush=True,
            )
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"wrote {write_result('resample_auroc', results, args.out)}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
