"""How the cache stores pixels: chunk size and codecs, measured on the same images in one run.

For each layout: bytes on disk per image, files per 10,000 images, encode time, and read speed for a
whole split (sequential) and for scattered images. The images: the three real PNGs area-resized to 256
and replicated with jitter (shift, brightness) so that no two are identical, plus synth output.
Writes benchmarks/results/cache_layout-<machine>.json; the choice is recorded in cxrbench/cache/store.py.

    python benchmarks/cache_layout.py --n 1024
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import Timer, write_result  # noqa: E402

# the real ChestX-ray14 files (CXRBENCH_NIH points elsewhere, e.g. on a machine without ../shared)
NIH = Path(os.environ.get("CXRBENCH_NIH", Path(__file__).resolve().parents[2] / "shared" / "data" / "nih"))


def images(n: int, seed: int = 0) -> np.ndarray:
    from PIL import Image

    from cxrbench.data.synth import plan, render

    rng = np.random.default_rng(seed)
    real = [np.asarray(Image.open(p).reduce(4)).astype(np.int16) for p in sorted((NIH / "images").glob("*.png"))]
    out = np.empty((n, 256, 256), np.uint8)
    synth_every = 4  # one image in four from the phantom generator
    ims = plan(max(1, n // synth_every + 1), seed)
    for i in range(n):
        if i % synth_every == 3:
            px = render(ims[i // synth_every], seed, i // synth_every)
            out[i] = (px.reshape(256, 4, 256, 4).mean((1, 3)) * 255 + 0.5).astype(np.uint8)
        else:
            a = np.roll(real[i % 3], (int(rng.integers(-12, 13)), int(rng.integers(-12, 13))), (0, 1))
            out[i] = np.clip(a + int(rng.integers(-10, 11)), 0, 255)
    return out


def layouts():
    from zarr.codecs import BloscCodec, ZstdCodec
    from zarr.codecs.numcodecs import Delta

    for chunk in (1, 16, 64, 256):
        yield chunk, "zstd1", [], [ZstdCodec(level=1)]
    for chunk in (1, 16, 64, 256):
        yield chunk, "delta+zstd1", [Delta(dtype="uint8")], [ZstdCodec(level=1)]
    yield 64, "none", [], []
    yield 64, "zstd3", [], [ZstdCodec(level=3)]
    yield 64, "blosc-zstd5-bitshuffle", [], [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]
    yield 64, "delta+zstd3", [Delta(dtype="uint8")], [ZstdCodec(level=3)]


def main() -> None:
    import zarr

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    data = images(args.n)
    rng = np.random.default_rng(1)
    scattered = np.sort(rng.choice(args.n, size=args.n // 8, replace=False))
    tmp = Path(tempfile.mkdtemp(prefix="cxr-layout-"))
    rows = []
    warnings.filterwarnings("ignore", message=".*Numcodecs codecs are not in the Zarr version 3.*")
    for chunk, name, filters, compressors in layouts():
        path = tmp / f"{name}-{chunk}"
        a = zarr.create_array(
            str(path),
            shape=data.shape,
            chunks=(chunk, 256, 256),
            dtype="uint8",
            filters=filters,
            compressors=compressors,
            fill_value=0,
        )
        with Timer() as tw:
            a[:] = data
        files = [f for f in path.rglob("*") if f.is_file() and f.name != "zarr.json"]
        size = sum(f.stat().st_size for f in files)
        a = zarr.open_array(str(path), mode="r")
        a[:chunk]
        with Timer() as tr:
            full = a[:]
        assert np.array_equal(full, data)
        with Timer() as ts:
            got = a.get_orthogonal_selection((scattered,))
        assert np.array_equal(got, data[scattered])
        row = {
            "chunk_images": chunk,
            "codecs": name,
            "bytes_per_image": round(size / args.n),
            "files_per_10k_images": round(len(files) * 10000 / args.n),
            "write_ms_per_image": round(tw.seconds * 1000 / args.n, 3),
            "read_all_images_per_s": round(args.n / tr.seconds),
            "read_scattered_images_per_s": round(len(scattered) / ts.seconds),
        }
        rows.append(row)
        print(
            f"{name:24s} chunk {chunk:4d}: {row['bytes_per_image']:6d} B/image, "
            f"{row['files_per_10k_images']:6d} files/10k, write {row['write_ms_per_image']:.3f} ms/image, "
            f"read all {row['read_all_images_per_s']:6d}/s, scattered 1/8 {row['read_scattered_images_per_s']:6d}/s",
            flush=True,
        )
        shutil.rmtree(path)
    shutil.rmtree(tmp, ignore_errors=True)
    from cxrbench.cache.store import CHUNK_IMAGES, CODECS

    chosen = {"chunk_images": CHUNK_IMAGES, "codecs": CODECS}
    print(f"wrote {write_result('cache_layout', {'images': args.n, 'layouts': rows, 'chosen': chosen}, args.out)}")


if __name__ == "__main__":
    main()
