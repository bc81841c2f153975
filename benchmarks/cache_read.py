"""The cost of checking every chunk a run reads against its checksum, measured in one run on one cache.

  unchecked      `CacheStore.read` with the check off: read each chunk file, zstd, undo the delta filter
  checked, cold  the same with the check on, each chunk read for the first time in the process: blake2b-128
                 of its 4 MiB of pixels, compared with the manifest (what a run loading its split pays)
  checked, warm  the same chunks read again in the same process: a file that has not changed since its hash
                 was checked (same inode, size, mtime, ctime) is not hashed again (a streaming epoch)
  zarr           `zarr.open_array(...)[:]`, the unchecked read that `CacheStore.read` did before
Rounds alternate the four so that noise from other processes spreads over all of them; the median of each
is reported, with the ratios to the unchecked read and the hash's cost in ms per chunk.
Writes benchmarks/results/cache_read-<machine>.json.

    python benchmarks/cache_read.py --n 2048 --rounds 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402
from benchmarks.paper_size import default_sources, lay_out  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(cache: Path, rounds: int) -> dict:
    """Median seconds of each way of reading the whole cache, and what follows from them."""
    from cxrbench.cache import store as store_mod
    from cxrbench.cache.store import CacheStore, open_cache, zopen

    checked = open_cache(cache)
    unchecked = CacheStore(checked.path, checked.manifest, check_reads=False)
    everything = np.arange(checked.n_images)
    ref = unchecked.read(everything)
    assert np.array_equal(checked.read(everything), ref), "the checked read gives other pixels"
    assert np.array_equal(zopen(cache / "images")[:], ref), "zarr gives other pixels"
    times: dict[str, list[float]] = {"unchecked": [], "checked_cold": [], "checked_warm": [], "zarr": []}
    for _ in range(rounds):
        times["unchecked"].append(timed(lambda: unchecked.read(everything)))
        store_mod._VERIFIED.clear()  # every chunk is hashed, as on a run's first read
        times["checked_cold"].append(timed(lambda: checked.read(everything)))
        times["checked_warm"].append(timed(lambda: checked.read(everything)))
        times["zarr"].append(timed(lambda: zopen(cache / "images")[:]))
    med = {k: statistics.median(v) for k, v in times.items()}
    chunks = int(checked.manifest["chunks"]["count"])
    n = checked.n_images
    return {
        "images": n,
        "chunks": chunks,
        "rounds": rounds,
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "images_per_s": {k: round(n / v, 1) for k, v in med.items()},
        "ms_per_chunk": {k: round(1000 * v / chunks, 3) for k, v in med.items()},
        "checked_cold_vs_unchecked": round(med["checked_cold"] / med["unchecked"], 3),
        "checked_warm_vs_unchecked": round(med["checked_warm"] / med["unchecked"], 3),
        "unchecked_vs_zarr": round(med["unchecked"] / med["zarr"], 3),
        "checksum_ms_per_chunk": round(1000 * (med["checked_cold"] - med["unchecked"]) / chunks, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2048, help="images in the cache (first N metadata rows)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds of each read")
    ap.add_argument("--work", type=Path, default=None, help="folder for the dataset and cache (kept if given)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    from cxrbench.cache.build import build_cache

    work = args.work or Path(tempfile.mkdtemp(prefix="cxr-cache-read-"))
    data, cache = work / "data", work / "cache"
    sources = default_sources()
    if not data.exists():
        lay_out(data, sources, args.n)
    if not cache.exists():
        build_cache(data, cache)
    res = measure(cache, args.rounds)
    res["png_sources"] = len(sources)
    ms, x = res["ms_per_chunk"], res
    print(f"{res['images']:,} images in {res['chunks']} chunks of 64, median of {res['rounds']} rounds:")
    for key, label in (
        ("unchecked", "unchecked read"),
        ("checked_cold", "checked, first read"),
        ("checked_warm", "checked, read again"),
        ("zarr", "zarr's own read"),
    ):
        print(f"  {label:<22} {ms[key]:8.2f} ms/chunk  {res['images_per_s'][key]:>10,.0f} images/s")
    print(
        f"checked first read / unchecked: {x['checked_cold_vs_unchecked']:.3f}x "
        f"(the checksum costs {x['checksum_ms_per_chunk']:.2f} ms per chunk of 64 images); "
        f"read again: {x['checked_warm_vs_unchecked']:.3f}x; unchecked / zarr: {x['unchecked_vs_zarr']:.3f}x"
    )
    print(f"wrote {write_result('cache_read', res, args.out)}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
