"""Cache build throughput on real ChestX-ray14 originals against a Pillow baseline, the decoder and inflate
floors, per stage, in one run.

Input: a dataset folder laid out by benchmarks/paper_size.py: the first N rows of the real metadata (real names,
lists and boxes), each PNG a hard link to one of the real originals (default $CXRBENCH_REAL_DATA/images, e.g.
the 200 originals; else the four in tests/data), so every file is an original NIH file (tIME chunk, 8 KB IDAT
chunks, ~410 KB). The same files are processed, round after round alternating the methods (so that a busy
machine slows them alike), with 1 worker and with all cores:
  baseline   Pillow decode + Pillow resize to 256 (BOX), what a reference pipeline does per image
  bilinear   Pillow decode + Pillow BILINEAR resize (the paper's preprocessing)
  floor      decode only, with the fastest decoder present (full 1024x1024 pixels, no resize, no write)
  inflate    the inflate step alone (zlib stream -> filtered bytes): no decoder can go below it
  cache      `cache build` (decode + resize + compress + write + bookkeeping) into a fresh store
  cache-bl   `cache build --resample bilinear` (its cost against `cache`)
Ratios are taken within each round and the median round is reported. A per-stage profile (one worker) splits
`cache build`'s per-image time into read, parse/CRC + IDAT join, inflate, unfilter + resize, compress, write.
The full release (112,120 images) on a 16-core machine is projected from the measured rates. Writes
benchmarks/results/cache_build-<machine>.json.

    python benchmarks/cache_build.py --n 2520 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import Timer, write_result  # noqa: E402
from benchmarks.paper_size import default_sources, lay_out  # noqa: E402

FULL_RELEASE = 112_120


def _baseline_one(path: str, resample: str = "box") -> int:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L")
        small = im.resize((256, 256), Image.Resampling.BOX if resample == "box" else Image.Resampling.BILINEAR)
    return int(np.asarray(small)[0, 0])


def _bilinear_one(path: str) -> int:
    return _baseline_one(path, "bilinear")


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


def fastest_decoder(paths: list[str]) -> tuple[str, dict[str, float]]:
    """Decode-only speed of every backend on a sample (1 worker); the fastest is the floor."""
    from cxrbench.cache.decode import available_decoders, warm_up

    warm_up()
    sample = paths[:: max(1, len(paths) // 150)]
    rates = {}
    for b in available_decoders():
        _floor_one((b, sample[0]))
        rates[b] = len(sample) / run_pool(_floor_one, [(b, p) for p in sample], 1)
    return max(rates, key=rates.get), rates


def cache_build(data_dir: Path, workers: int, out: Path, resample: str = "box") -> float:
    """Seconds of a fresh `cache build` (the real code path, start-up in-process excluded)."""
    from cxrbench.cache.build import build_cache

    shutil.rmtree(out, ignore_errors=True)
    with Timer() as t:
        build_cache(data_dir, out, workers=workers, resample=resample)
    shutil.rmtree(out, ignore_errors=True)
    return t.seconds


def stage_profile(paths: list[str], n: int = 192, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per image of each stage of `cache build` on one core, on the first n files (a chunk is 64).

    The stages of one image run one after the other, image after image, so that a busy machine slows them alike;
    the totals (`decode_*_total`: what `cache build` calls per image) are timed the same way beside them."""
    from numcodecs import Delta, Zstd

    from cxrbench.cache import kernels
    from cxrbench.cache.decode import decode_resized, warm_up
    from cxrbench.cache.png import inflate, parse
    from cxrbench.cache.store import CHUNK_IMAGES
    from cxrbench.files import atomic_write

    warm_up()
    files = paths[:n]
    names = ("read", "parse_crc_join", "inflate", "unfilter_box", "decode_box_total", "decode_bilinear_total")
    total = dict.fromkeys(names, 0.0)
    box = np.empty((256, 256), np.uint8)
    count = 0
    for _ in range(rounds):
        for p in files:
            t = [time.perf_counter()]
            with open(p, "rb") as fh:
                data = fh.read()
            t.append(time.perf_counter())
            info = parse(data)
            t.append(time.perf_counter())
            raw = np.frombuffer(inflate(info), np.uint8)
            t.append(time.perf_counter())
            if info.color_type == 0 and info.bit_depth == 8:
                kernels.gray8_box4(raw, info.width, info.height, box)
            t.append(time.perf_counter())
            decode_resized("cxr", data, 256)
            t.append(time.perf_counter())
            decode_resized("cxr", data, 256, "bilinear")
            t.append(time.perf_counter())
            for name, a, b in zip(names, t, t[1:]):
                total[name] += b - a
            count += 1
    ms = {k: round(v / count * 1e3, 3) for k, v in total.items()}
    datas = [Path(p).read_bytes() for p in files[: (len(files) // CHUNK_IMAGES) * CHUNK_IMAGES]]
    tmp = Path(tempfile.mkdtemp(prefix="cxr-write-"))
    comp = write = 0.0
    for k in range(0, len(datas), CHUNK_IMAGES):
        block = np.stack([decode_resized("cxr", d, 256).pixels for d in datas[k : k + CHUNK_IMAGES]])
        t0 = time.perf_counter()
        enc = bytes(Zstd(level=1).encode(Delta(dtype="u1").encode(block)))
        t1 = time.perf_counter()
        atomic_write(tmp / "chunk", enc)
        comp, write = comp + t1 - t0, write + time.perf_counter() - t1
    shutil.rmtree(tmp, ignore_errors=True)
    ms["compress"] = round(comp / max(len(datas), 1) * 1e3, 3)
    ms["write"] = round(write / max(len(datas), 1) * 1e3, 3)
    return ms


def startup_seconds(data_dir: Path, tmp: Path) -> float:
    """Wall time of `cxrbench cache build` on an up-to-date store (imports, cached JIT, checks: no decoding)."""
    out = tmp / "startup"
    cmd = [sys.executable, "-m", "cxrbench", "cache", "build", "--data-dir", str(data_dir), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def measure(data: Path, work: Path, paths: list[str], floor: str, workers: int, rounds: int) -> dict:
    """`rounds` rounds, each running every method once in turn on the same files; rates per round, ratios within
    a round, and the round with the median cache/baseline ratio."""
    n = len(paths)
    per_round = []
    for _ in range(rounds):
        r = {
            "baseline_pillow": n / run_pool(_baseline_one, paths, workers),
            "cache_build": n / cache_build(data, workers, work / "store"),
            "inflate_only": n / run_pool(_inflate_one, paths, workers),
            "floor_decode": n / run_pool(_floor_one, [(floor, p) for p in paths], workers),
            "pillow_bilinear": n / run_pool(_bilinear_one, paths, workers),
            "cache_build_bilinear": n / cache_build(data, workers, work / "store", "bilinear"),
        }
        r = {f"{k}_images_per_s": round(v, 1) for k, v in r.items()}
        r["cache_vs_baseline"] = round(r["cache_build_images_per_s"] / r["baseline_pillow_images_per_s"], 2)
        r["bilinear_cache_vs_box_cache"] = round(
            r["cache_build_bilinear_images_per_s"] / r["cache_build_images_per_s"], 2
        )
        r["bilinear_cache_vs_pillow_bilinear"] = round(
            r["cache_build_bilinear_images_per_s"] / r["pillow_bilinear_images_per_s"], 2
        )
        r["inflate_vs_cache"] = round(r["inflate_only_images_per_s"] / r["cache_build_images_per_s"], 2)
        per_round.append(r)
        print(
            f"  workers={workers}: baseline {r['baseline_pillow_images_per_s']:.0f}/s, cache build "
            f"{r['cache_build_images_per_s']:.0f}/s ({r['cache_vs_baseline']:.2f}x), inflate-only "
            f"{r['inflate_only_images_per_s']:.0f}/s, floor({floor}) {r['floor_decode_images_per_s']:.0f}/s, "
            f"bilinear: Pillow {r['pillow_bilinear_images_per_s']:.0f}/s, cache build "
            f"{r['cache_build_bilinear_images_per_s']:.0f}/s ({r['bilinear_cache_vs_box_cache']:.2f}x box)",
            flush=True,
        )
    ratios = [r["cache_vs_baseline"] for r in per_round]
    median = per_round[ratios.index(statistics.median_low(ratios))]
    return {"median_round": median, "rounds": per_round, "cache_vs_baseline_range": [min(ratios), max(ratios)]}


def project(one: float, scaling2: float | None, cores: int = 16) -> dict:
    """Minutes for the full release on `cores` cores from the one-worker rate: ideal linear scaling, and with
    the efficiency measured from one to two workers carried to every core (a guess, stated as such)."""
    ideal = FULL_RELEASE / (one * cores) / 60
    out = {"cores": cores, "one_worker_images_per_s": one, "minutes_linear": round(ideal, 2)}
    if scaling2:
        eff = scaling2 / 2
        out["two_worker_efficiency"] = round(eff, 2)
        out["minutes_at_that_efficiency"] = round(ideal / eff, 2)
    return out


def parser() -> argparse.ArgumentParser:
    """The command line (default input: 2,520 hard links to the real originals)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2520, help="images (metadata rows), hard links to the originals")
    ap.add_argument(
        "--sources",
        type=Path,
        default=None,
        help="folder of original PNGs (default: $CXRBENCH_REAL_DATA/images, else tests/data's four)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds per worker count, the methods alternating")
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default: 1 and all cores)")
    ap.add_argument("--work", type=Path, default=None, help="keep the dataset folder here (reused when present)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    return ap


def main() -> None:
    args = parser().parse_args()
    sources = sorted(args.sources.glob("*.png")) if args.sources else default_sources()
    work = args.work or Path(tempfile.mkdtemp(prefix="cxr-bench-"))
    data = work / "data"
    if not (data / "Data_Entry_2017_v2020.csv").exists():
        made = lay_out(data, sources, args.n)
        print(
            f"{made['images']:,} images hard-linked from {made['sources']} originals in {made['seconds']} s", flush=True
        )
    from cxrbench.data.layout import scan_images

    paths = sorted(str(p) for p in scan_images(data).values())
    n = len(paths)
    sizes = [os.path.getsize(p) for p in paths]
    floor, rates = fastest_decoder(paths)
    print(
        f"{n} PNGs ({len(sources)} distinct originals), mean {np.mean(sizes) / 1024:.0f} KiB; decode-only "
        "images/s per backend (1 worker): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()),
        flush=True,
    )
    profile = stage_profile(paths)
    print("per-stage ms/image (1 core): " + ", ".join(f"{k} {v:.2f}" for k, v in profile.items()), flush=True)
    results: dict = {
        "images": n,
        "distinct_originals": len(sources),
        "mean_png_kib": round(float(np.mean(sizes)) / 1024, 1),
        "decode_only_images_per_s_1worker": {k: round(v, 1) for k, v in rates.items()},
        "floor_decoder": floor,
        "stage_ms_per_image_1core": profile,
        "runs": {},
    }
    counts = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, os.cpu_count() or 1})
    for workers in counts:
        results["runs"][str(workers)] = measure(data, work, paths, floor, workers, args.rounds)
    one = results["runs"].get("1", {}).get("median_round", {}).get("cache_build_images_per_s")
    two = results["runs"].get("2", {}).get("median_round", {}).get("cache_build_images_per_s")
    if one and two:
        results["cache_scaling_1_to_2"] = round(two / one, 2)
    if one:
        results["projection_full_release"] = project(one, results.get("cache_scaling_1_to_2"))
    results["startup_seconds"] = round(startup_seconds(data, work), 3)
    for w, r in results["runs"].items():
        m = r["median_round"]
        print(
            f"workers={w} (median of {args.rounds} rounds): cache/baseline {m['cache_vs_baseline']:.2f}x "
            f"(range {r['cache_vs_baseline_range'][0]:.2f}-{r['cache_vs_baseline_range'][1]:.2f}), "
            f"inflate-only/cache {m['inflate_vs_cache']:.2f}, bilinear cache/box cache "
            f"{m['bilinear_cache_vs_box_cache']:.2f}"
        )
    if "cache_scaling_1_to_2" in results:
        print(f"cache build scaling 1 -> 2 workers: {results['cache_scaling_1_to_2']:.2f}x")
    if "projection_full_release" in results:
        p = results["projection_full_release"]
        print(
            f"projected full release ({FULL_RELEASE:,} images) on {p['cores']} cores: {p['minutes_linear']:.1f} min "
            "with linear scaling"
            + (
                f", {p['minutes_at_that_efficiency']:.1f} min at the 1 -> 2 worker efficiency"
                if "minutes_at_that_efficiency" in p
                else ""
            )
        )
    print(f"start-up of an up-to-date `cache build`: {results['startup_seconds']:.2f} s")
    print(f"wrote {write_result('cache_build', results, args.out)}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
