"""One whole `cxrbench run`, stage by stage: training images/s over the whole run against the per-epoch rate
(the baseline, from the same run's epoch logs), wall time against training time, and where the rest went.

The input is a ChestX-ray14 folder laid out by benchmarks/paper_size.py (the real metadata rows and official
lists, PNGs hard-linked from the real originals), built into a cache once per --work folder. A protocol can be
shortened for the measurement (--epochs, --folds, --no-final: a derived protocol `<id>-bench`, never
recorded anywhere else); the full protocol's wall time is then projected from the measured stage times.

    python benchmarks/whole_run.py                                    # CPU: tiny under smoke, 1,200 rows
    python benchmarks/whole_run.py --model densenet121 --protocol paper-15c --rows all --epochs 2 --folds 1 \\
        --no-final --work /tmp/wr                                     # one GPU, paper-size layout
    python benchmarks/whole_run.py ... --tag compile --compile        # variants: --no-cuda-graphs, --deterministic
    python benchmarks/whole_run.py --summarize DIR                    # compile vs graphs, determinism's cost

Writes whole_run-<tag>-<machine>.json (benchmarks/results, or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_tag, write_result  # noqa: E402

FIXED = ("bind", "load", "score.predict", "score.bootstrap", "score.write", "explain")


def prepare(work: Path, rows: int | None, subset: str) -> Path:
    """The laid-out folder and its cache under `work` (made once, reused by later calls)."""
    from benchmarks.paper_size import lay_out
    from cxrbench.cache.build import build_cache

    data, cache = work / "nih", work / "cache"
    if not (data / "Data_Entry_2017_v2020.csv").exists():
        shutil.rmtree(data, ignore_errors=True)
        made = lay_out(data, n=rows)
        print(f"laid out {made['images']:,} images in {made['seconds']} s", flush=True)
    t = time.perf_counter()
    r = build_cache(data, cache, subset=subset)
    print(f"cache {'up to date' if r.up_to_date else 'built'} in {time.perf_counter() - t:.1f} s", flush=True)
    return cache


def bench_protocol(key: str, epochs: int | None, folds: int | None, final: bool | None):
    """The protocol to run: `key` itself, or a shortened copy registered for this process only."""
    from cxrbench.protocols import PROTOCOLS, get_protocol

    p = get_protocol(key)
    changes = {k: v for k, v in (("epochs", epochs), ("n_folds", folds), ("final_run", final)) if v is not None}
    if not changes:
        return p, p
    q = replace(p, id=f"{p.id}-bench", description=f"{p.key} shortened for benchmarks/whole_run.py", **changes)
    PROTOCOLS[q.key] = q
    return p, q


def project(rec: dict, full) -> dict:
    """The full protocol's wall time from this run's stages: fixed stages once, the per-training set-up per
    training, training/validation/checkpoints per image, epoch and fold as measured."""
    st = rec["timing"]["stages"]
    ran = rec["protocol"]["settings"]
    fold_images = rec["validation"]["folds"][0]["train_images"] / ran["epochs"]  # one fold's epoch
    final_images = rec["data"]["n_trainval"] if full.final_run else 0  # the final run trains on train+val
    trainings = ran["n_folds"] + int(ran["final_run"])

    def total(part: str) -> float:
        return sum(v for k, v in st.items() if k.endswith("." + part) and not k.startswith("score."))

    per_image = total("train") / rec["timing"]["train_images"]
    per_val_epoch = total("validate") / (ran["n_folds"] * ran["epochs"])
    per_ckpt_epoch = total("checkpoint") / (trainings * ran["epochs"])
    images = full.epochs * (full.n_folds * fold_images + final_images)
    parts = {
        "fixed": sum(st.get(k, 0.0) for k in FIXED),
        "setup": (total("build") + total("compile") + total("results")) / trainings * (full.n_folds + full.final_run),
        "train": per_image * images,
        "validate": per_val_epoch * full.n_folds * full.epochs,
        "checkpoint": per_ckpt_epoch * (full.n_folds + full.final_run) * full.epochs,
    }
    wall = sum(parts.values())
    return {
        "protocol": full.key,
        "train_images": round(images),
        "wall_seconds": round(wall, 1),
        "parts_seconds": {k: round(v, 1) for k, v in parts.items()},
        "whole_run_images_per_s": round(images / wall, 1),
        "wall_over_train": round(wall / parts["train"], 3),
    }


def measure(args) -> dict:
    from cxrbench.run import RunOptions, run
    from cxrbench.run.timing import _GROUPS, group_seconds

    full, proto = bench_protocol(args.protocol, args.epochs, args.folds, False if args.no_final else None)
    cache = prepare(args.work, None if args.rows == "all" else int(args.rows), proto.subset)
    runs = args.work / "runs"
    shutil.rmtree(runs / args.tag, ignore_errors=True)
    t = time.perf_counter()
    path = run(
        RunOptions(
            model=args.model,
            protocol=proto.key,
            cache=str(cache),
            out=str(runs),
            device=args.device,
            run_id=args.tag,
            pretrained=False,
            compile=args.compile,
            cuda_graphs=args.cuda_graphs,
            deterministic=args.deterministic,
        )
    )
    outer_wall = time.perf_counter() - t
    rec = json.loads(path.read_text())
    tm = rec["timing"]
    histories = [h for f in rec["validation"]["folds"] for h in f["history"]]
    epoch_rate = statistics.median(h["images_per_s"] for h in histories)
    whole_rate = tm["train_images"] / tm["wall_seconds"]
    groups = {label: round(group_seconds(tm["stages"], key), 3) for label, key in _GROUPS}
    res = {
        "model": args.model,
        "protocol": proto.key,
        "device": rec["environment"]["device"],
        "device_name": rec["environment"]["device_name"],
        "settings": {
            k: rec["environment"][k]
            for k in ("compile", "cuda_graphs", "deterministic", "bitwise_reproducible", "loader")
        },
        "images": {
            "trainval": rec["data"]["n_trainval"],
            "test": rec["data"]["n_test"],
            "train_per_epoch": rec["validation"]["folds"][0]["train_images"] // proto.epochs,
        },
        "per_epoch_images_per_s": round(epoch_rate, 1),  # median of the epoch logs: the baseline
        "train_images_per_s": tm["train_images_per_s"],  # over every training step (mean)
        "whole_run_images_per_s": round(whole_rate, 1),
        "whole_over_epoch_rate": round(whole_rate / epoch_rate, 3),
        "epochs": proto.epochs,
        "wall_seconds": tm["wall_seconds"],
        "wall_with_startup_seconds": round(outer_wall, 2),
        "train_seconds": tm["train_seconds"],
        "wall_over_train": round(tm["wall_seconds"] / tm["train_seconds"], 3),
        "stages_seconds": tm["stages"],
        "breakdown_seconds": groups,
        "predictions_sha256": rec["predictions"]["sha256"],
        "test_weighted_auroc": rec["test"]["weighted_mean"]["auroc"],
    }
    if proto is not full:
        res["projected_full_protocol"] = project(rec, full)
    print(
        f"{args.tag}: {res['whole_run_images_per_s']:,.1f} training images/s over the whole run vs "
        f"{res['per_epoch_images_per_s']:,.1f} per epoch (median; ratio {res['whole_over_epoch_rate']:.2f}) and "
        f"{res['train_images_per_s']:,.1f} over all training steps; wall "
        f"{tm['wall_seconds']:,.1f} s = {res['wall_over_train']:.2f} x training {tm['train_seconds']:,.1f} s",
        flush=True,
    )
    print("  " + ", ".join(f"{k} {v:,.2f} s" for k, v in groups.items() if v), flush=True)
    if "projected_full_protocol" in res:
        pr = res["projected_full_protocol"]
        print(
            f"  projected {pr['protocol']}: {pr['wall_seconds']:,.0f} s wall, {pr['whole_run_images_per_s']:,.0f} "
            f"training images/s over the whole run, wall/train {pr['wall_over_train']:.2f}",
            flush=True,
        )
    return res


def summarize(folder: Path) -> dict:
    """Compile against CUDA graphs and the deterministic mode's cost, from the variants' files in `folder`."""
    tag = machine_tag()
    runs = {}
    for p in sorted(folder.glob(f"whole_run-*-{tag}.json")):
        d = json.loads(p.read_text())
        runs[d["tag"]] = d
    out: dict = {
        "runs": {
            k: {
                f: v[f]
                for f in (
                    "epochs",
                    "per_epoch_images_per_s",
                    "whole_run_images_per_s",
                    "wall_seconds",
                    "train_seconds",
                    "settings",
                )
            }
            for k, v in runs.items()
        }
    }
    base = runs.get("graphs") or runs.get("default")
    if base and "compile" in runs:
        c = runs["compile"]
        out["compile_vs_graphs"] = {
            "compile_seconds": round(sum(v for k, v in c["stages_seconds"].items() if k.endswith(".compile")), 2),
            "per_epoch_rate_ratio": round(c["per_epoch_images_per_s"] / base["per_epoch_images_per_s"], 3),
            "wall_ratio_with_compile": round(c["wall_seconds"] / base["wall_seconds"], 3),
        }
    det = [runs[k] for k in ("deterministic-a", "deterministic-b") if k in runs]
    if base and det:
        out["deterministic"] = {
            "per_epoch_rate_ratio": round(det[0]["per_epoch_images_per_s"] / base["per_epoch_images_per_s"], 3),
            "train_seconds_per_epoch_ratio": round(
                (det[0]["train_seconds"] / det[0]["epochs"]) / (base["train_seconds"] / base["epochs"]), 3
            ),
            "bitwise_identical_repeat": (
                det[0]["predictions_sha256"] == det[1]["predictions_sha256"] if len(det) == 2 else None
            ),
        }
    dg = [runs[k] for k in ("deterministic-graphs-a", "deterministic-graphs-b") if k in runs]
    if len(dg) == 2:
        out["deterministic_with_graphs_bitwise_identical"] = dg[0]["predictions_sha256"] == dg[1]["predictions_sha256"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--protocol", default="smoke")
    ap.add_argument("--rows", default="1200", help="metadata rows to lay out, or 'all' (112,120)")
    ap.add_argument("--epochs", type=int, default=None, help="shorten the protocol to this many epochs")
    ap.add_argument("--folds", type=int, default=None, help="shorten the protocol to this many folds")
    ap.add_argument("--no-final", action="store_true", help="leave out the protocol's final run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true", default=None)
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--tag", default="default", help="name of this variant (result file and run folder)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the layout, cache and runs (kept)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the result JSON (default benchmarks/results)")
    ap.add_argument("--summarize", type=Path, default=None, help="summarise the variants' JSON files in DIR")
    args = ap.parse_args()
    if args.summarize:
        print(f"wrote {write_result('whole_run_summary', summarize(args.summarize), args.out or args.summarize)}")
        return
    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="cxr-whole-run-")
        args.work = Path(tmp)
    try:
        res = measure(args)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    res["tag"] = args.tag
    print(f"wrote {write_result(f'whole_run-{args.tag}', res, args.out)}")


if __name__ == "__main__":
    main()
