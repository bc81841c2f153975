"""Cache build throughput against a Pillow baseline and the decoder floor, in one run.

The same PNGs are processed three ways, with 1 worker and with all cores:
  baseline   Pillow decode + Pillow resize to 256 (BOX), what a reference pipeline does per image
  floor      decode only, with the fastest decoder present (full 1024x1024 pixels, no resize, no write)
  cache      `cache build` (decode + resize + compress + write + bookkeeping), into a fresh store
The PNGs: the three real ChestX-ray14 images replicated with jitter (shift, brightness) and re-encoded
by Pillow, plus `cxrbench synth` output. Prints images/s and the ratios; writes
benchmarks/results/cache_build-<machine>.json. Also times `cache build` start-up (imports + cached JIT).

    python benchmarks/cache_build.py --real 2000 --synth 500
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import Timer, write_result  # noqa: E402

# the real ChestX-ray14 files (CXRBENCH_NIH points elsewhere, e.g. on a machine without ../shared)
NIH = Path(os.environ.get("CXRBENCH_NIH", Path(__file__).resolve().parents[2] / "shared" / "data" / "nih"))


def make_dataset(root: Path, n_real: int, n_synth: int, seed: int = 0) -> list[Path]:
    """Jittered replicas of the real PNGs (with real metadata rows) + a synth set; returns every PNG."""
    from PIL import Image

    from cxrbench.data.synth import generate, image_dir

    root.mkdir(parents=True, exist_ok=True)
    real = root / "real"
    (real / "images").mkdir(parents=True, exist_ok=True)
    with gzip.open(NIH / "Data_Entry_2017_v2020.csv.gz", "rt") as fh:
        lines = [next(fh) for _ in range(n_real + 1)]
    (real / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    srcs = [np.asarray(Image.open(p)) for p in sorted((NIH / "images").glob("*.png"))]
    rng = np.random.default_rng(seed)
    todo = []
    for ln in lines[1:]:
        name = ln.split(",")[0]
        if not (real / "images" / name).exists():
            todo.append((str(real / "images" / name), int(rng.integers(3)), int(rng.integers(-12, 13)),
                         int(rng.integers(-12, 13)), int(rng.integers(-8, 9))))
    with get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(_jitter, [(t, srcs) for t in todo], chunksize=16)
    out = sorted((real / "images").glob("*.png"))
    if n_synth:
        synth = root / "synth"
        generate(synth, n_synth, seed=seed)
        out += sorted(image_dir(synth).glob("*.png"))
    return out


def _jitter(args) -> None:
    (path, k, dy, dx, db), srcs = args
    from PIL import Image

    a = np.roll(srcs[k].astype(np.int16), (dy, dx), (0, 1)) + db
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, format="PNG")


def _baseline_one(path: str) -> int:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        small = im.resize((256, 256), Image.Resampling.BOX)
    return int(np.asarray(small)[0, 0])


def _floor_one(args) -> int:
    backend, path = args
    from cxrbench.cache.decode import decode_full

    with open(path, "rb") as fh:
        return int(decode_full(backend, fh.read())[0, 0])


def _inflate_one(path: str) -> int:
    from cxrbench.cache.png import inflate, parse

    with open(path, "rb") as fh:
        return len(inflate(parse(fh.read())))


def run_pool(fn, items, workers: int) -> float:
    with Timer() as t:
        if workers == 1:
            for it in items:
                fn(it)
        else:
            with get_context("fork").Pool(workers) as pool:
                pool.map(fn, items, chunksize=32)
    return t.seconds


def fastest_decoder(paths: list[Path]) -> tuple[str, dict[str, float]]:
    """Decode-only speed of every backend on a sample (1 worker); the fastest is the floor."""
    from cxrbench.cache.decode import available_decoders, warm_up

    warm_up()
    sample = [str(p) for p in paths[:: max(1, len(paths) // 150)]]
    rates = {}
    for b in available_decoders():
        _floor_one((b, sample[0]))
        s = run_pool(_floor_one, [(b, p) for p in sample], 1)
        rates[b] = len(sample) / s
    return max(rates, key=rates.get), rates


def cache_build(data_dirs: list[Path], workers: int, tmp: Path) -> float:
    """Build a fresh store for each data dir; returns total seconds (the real code path)."""
    from cxrbench.cache.build import build_cache

    total = 0.0
    for d in data_dirs:
        out = tmp / f"store-{d.name}-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        with Timer() as t:
            build_cache(d, out, workers=workers)
        total += t.seconds
    return total


def startup_seconds(data_dir: Path, tmp: Path) -> float:
    """Wall time of `cxrbench cache build` on an up-to-date store (imports, cached JIT, checks: no decoding)."""
    out = tmp / "startup"
    subprocess.run([sys.executable, "-m", "cxrbench", "cache", "build", "--data-dir", str(data_dir), "--out",
                    str(out)], check=True, capture_output=True)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cxrbench", "cache", "build", "--data-dir", str(data_dir), "--out",
                        str(out)], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=int, default=2000, help="jittered replicas of the real PNGs")
    ap.add_argument("--synth", type=int, default=500, help="synth PNGs")
    ap.add_argument("--work", type=Path, default=None, help="keep generated PNGs here (reused when present)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    print(f"generating PNGs in {work} ...", flush=True)
    paths = make_dataset(work, args.real, args.synth)
    n = len(paths)
    sizes = [p.stat().st_size for p in paths]
    best, rates = fastest_decoder(paths)
    print(f"{n} PNGs, mean {np.mean(sizes) / 1024:.0f} KiB; decode-only images/s per backend (1 worker): "
          + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()), flush=True)
    strs = [str(p) for p in paths]
    results: dict = {"images": n, "mean_png_kib": round(float(np.mean(sizes)) / 1024, 1),
                     "decode_only_images_per_s_1worker": {k: round(v, 1) for k, v in rates.items()},
                     "floor_decoder": best, "runs": {}}
    for workers in sorted({1, os.cpu_count() or 1}):
        base = n / run_pool(_baseline_one, strs, workers)
        floor = n / run_pool(_floor_one, [(best, p) for p in strs], workers)
        inflate = n / run_pool(_inflate_one, strs, workers)
        cache = n / cache_build([work / "real", work / "synth"], workers, work)
        run = {"baseline_pillow_images_per_s": round(base, 1), "floor_decode_images_per_s": round(floor, 1),
               "inflate_only_images_per_s": round(inflate, 1), "cache_build_images_per_s": round(cache, 1),
               "cache_vs_baseline": round(cache / base, 2), "floor_vs_cache": round(floor / cache, 2)}
        results["runs"][str(workers)] = run
        print(f"workers={workers}: baseline {base:.0f}/s  floor({best}) {floor:.0f}/s  inflate-only {inflate:.0f}/s  "
              f"cache build {cache:.0f}/s  ->  cache/baseline {cache / base:.2f}x, floor/cache {floor / cache:.2f}x",
              flush=True)
    if len(results["runs"]) > 1:
        r1, rn = results["runs"]["1"], results["runs"][str(os.cpu_count())]
        results["cache_scaling"] = round(rn["cache_build_images_per_s"] / r1["cache_build_images_per_s"], 2)
        print(f"cache build scaling 1 -> {os.cpu_count()} workers: {results['cache_scaling']:.2f}x")
    from cxrbench.cache.store import cache_info

    info = cache_info(work / f"store-real-{os.cpu_count() or 1}")
    results["bytes_per_image_real"] = info["bytes_per_image"]
    results["bytes_per_image_synth"] = cache_info(work / f"store-synth-{os.cpu_count() or 1}")["bytes_per_image"]
    results["startup_seconds"] = round(startup_seconds(work / "synth", work), 3)
    print(f"bytes on disk per image: real replicas {results['bytes_per_image_real']:.0f}, synth "
          f"{results['bytes_per_image_synth']:.0f}; start-up of an up-to-date `cache build`: "
          f"{results['startup_seconds']:.2f} s")
    print(f"wrote {write_result('cache_build', results, args.out)}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
