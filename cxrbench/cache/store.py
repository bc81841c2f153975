"""The cache store on disk: a zarr v3 group with `images` (N, S, S) uint8, `names` (N,) and
`original_shape` (N, 2), copies of the metadata tables, and `manifest.json`.

Any zarr reader can use it without cxrbench (`zarr.open_group(path)["images"]`; the delta filter is
numcodecs', which zarr-python ships with). cxrbench's readers refuse a store that is incomplete, of an
unknown format version, or damaged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.errors import CacheError

FORMAT = "cxrbench-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES = "tables"
LOCK = ".lock"
# chosen by measurement (benchmarks/results/cache_layout-*.json): 64 images (4 MiB raw) per chunk, a
# byte-delta filter (pixel minus its left neighbour) and zstd level 1 - 45% smaller than zstd alone on
# the real PNGs at the same encode cost
CHUNK_IMAGES = 64
CODECS = "delta+zstd1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, rename: a reader sees the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def chunk_checksum(block: np.ndarray) -> str:
    """blake2b-128 of a chunk's uint8 pixels (what verify recomputes)."""
    return hashlib.blake2b(np.ascontiguousarray(block).tobytes(), digest_size=16).hexdigest()


def pack_bits(flags: np.ndarray) -> str:
    return base64.b64encode(np.packbits(flags.astype(bool)).tobytes()).decode()


def unpack_bits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


_DELTA_NOTE = ".*Numcodecs codecs are not in the Zarr version 3.*"


def zopen(path: Path | str, mode: str = "r"):
    """zarr.open_array without zarr's note that numcodecs' delta is outside the v3 core spec (zarr-python
    reads it everywhere; the README says what other readers need)."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DELTA_NOTE)
        return zarr.open_array(str(path), mode=mode)


def chunk_file(path: Path, array: str, k: int) -> Path:
    """The file of chunk k of `images` or `original_shape` (zarr v3 default chunk-key encoding)."""
    parts = ("c", str(k), "0", "0") if array == "images" else ("c", str(k), "0")
    return path.joinpath(array, *parts)


def write_chunks(path: Path, k: int, block: np.ndarray, shapes: np.ndarray) -> None:
    """Write chunk k of `images` and `original_shape` directly, atomically (temp file, fsync, rename).

    The bytes are exactly what zarr writes for these arrays' codec pipelines (tests compare them): an edge
    chunk is padded to full size with the fill value, then byte-delta + zstd(1) for images, zstd(1) for shapes.
    Writing the files ourselves skips zarr's per-call overhead and makes each chunk appear whole or not at all.
    """
    from numcodecs import Delta, Zstd

    n = block.shape[0]
    if n < CHUNK_IMAGES:
        block = np.concatenate([block, np.zeros((CHUNK_IMAGES - n, *block.shape[1:]), np.uint8)])
        shapes = np.concatenate([shapes, np.zeros((CHUNK_IMAGES - n, 2), np.uint16)])
    img = Zstd(level=1).encode(Delta(dtype="u1").encode(np.ascontiguousarray(block)))
    shp = Zstd(level=1).encode(np.ascontiguousarray(shapes, dtype="<u2").tobytes())
    for array, data in (("images", img), ("original_shape", shp)):
        f = chunk_file(path, array, k)
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(f, bytes(data))


def create_arrays(path: Path, names: list[str], size: int) -> None:
    """Create the zarr group and its arrays (images are written chunk by chunk later)."""
    import zarr
    from zarr.codecs import ZstdCodec
    from zarr.codecs.numcodecs import Delta

    n = len(names)
    g = zarr.open_group(str(path), mode="a", zarr_format=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DELTA_NOTE)
        g.create_array(
            "images", shape=(n, size, size), chunks=(CHUNK_IMAGES, size, size), dtype="uint8", fill_value=0,
            filters=[Delta(dtype="uint8")], compressors=[ZstdCodec(level=1)],
            config={"write_empty_chunks": True}, overwrite=True,
        )
    g.create_array("original_shape", shape=(n, 2), chunks=(CHUNK_IMAGES, 2), dtype="uint16", fill_value=0,
                   compressors=[ZstdCodec(level=1)], config={"write_empty_chunks": True}, overwrite=True)
    arr = g.create_array("names", shape=(n,), chunks=(max(n, 1),), dtype=str, overwrite=True)
    arr[:] = np.array(names, dtype=object)


@dataclass
class CacheStore:
    """A complete cache opened for reading."""

    path: Path
    manifest: dict

    @property
    def size(self) -> int:
        return int(self.manifest["params"]["size"])

    @property
    def n_images(self) -> int:
        return int(self.manifest["n_images"])

    @property
    def chunk_images(self) -> int:
        return int(self.manifest["params"]["chunk_images"])

    def images(self):
        return zopen(self.path / "images")

    def names(self) -> np.ndarray:
        return np.asarray(zopen(self.path / "names")[:], dtype=object)

    def bad(self) -> set[str]:
        """Images recorded as undecodable (built with --skip-bad); excluded from every split."""
        return {b["name"] for b in self.manifest.get("bad_images", [])}

    def tables_dir(self) -> Path:
        return self.path / TABLES

    def metadata(self):
        from cxrbench.data.dataset import open_dataset

        return open_dataset(self.tables_dir())

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of what determines the pixels: format, parameters, inputs and chunk checksums."""
        m = self.manifest
        core = {k: m[k] for k in ("format", "format_version", "params", "inputs", "n_images")}
        core["checksums"] = m["chunks"]["checksums"]
        core["bad_images"] = sorted(self.bad())
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Images at cache positions (any order), reading each needed chunk once."""
        positions = np.asarray(positions, dtype=np.int64)
        arr = self.images()
        out = np.empty((len(positions), self.size, self.size), np.uint8)
        if len(positions) == 0:
            return out
        order = np.argsort(positions, kind="stable")
        sp = positions[order]
        c = self.chunk_images
        chunk_of = sp // c
        for ch in np.unique(chunk_of):
            sel = np.flatnonzero(chunk_of == ch)
            lo = int(ch) * c
            block = arr[lo : min(lo + c, self.n_images)]
            out[order[sel]] = block[sp[sel] - lo]
        return out


def read_manifest(path: Path) -> dict | None:
    mp = path / MANIFEST
    if not mp.exists():
        return None
    try:
        return json.loads(mp.read_text())
    except json.JSONDecodeError as e:
        raise CacheError(f"{mp}: damaged manifest ({e})") from None


def open_cache(path: str | Path) -> CacheStore:
    """Open a complete cache; incomplete, foreign or newer stores are refused with the reason."""
    p = Path(path)
    if not p.is_dir():
        raise CacheError(f"{p}: no cache here (build one with `cxrbench cache build`)")
    m = read_manifest(p)
    if m is None or m.get("format") != FORMAT:
        raise CacheError(f"{p}: not a cxrbench cache (no {MANIFEST})")
    if m.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{p}: cache format version {m.get('format_version')} is not supported by this "
                         f"cxrbench (reads version {FORMAT_VERSION}); rebuild it")
    if not m.get("complete"):
        raise CacheError(f"{p}: the cache is not complete (its build was interrupted or failed); run "
                         "`cxrbench cache build` again with the same options to finish it")
    return CacheStore(p, m)


def _manifest_or_fail(path: Path) -> dict:
    m = read_manifest(path)
    if m is None or m.get("format") != FORMAT:
        raise CacheError(f"{path}: not a cxrbench cache (no {MANIFEST})")
    return m


def verify_cache(path: str | Path, progress=None) -> list[str]:
    """Re-read every recorded chunk and compare it with its checksum; also the stored tables.

    Returns one line per problem (empty when the store is sound).
    """
    p = Path(path)
    m = _manifest_or_fail(p)
    problems: list[str] = []
    if not m.get("complete"):
        problems.append(f"{p}: the build is not complete")
    arr = zopen(p / "images")
    c = int(m["params"]["chunk_images"])
    n = int(m["n_images"])
    sums = m["chunks"]["checksums"]
    for k in range(int(m["chunks"]["count"])):
        lo = k * c
        where = chunk_file(p, "images", k)
        want = sums.get(str(k))
        if want is None:
            if m.get("complete"):
                problems.append(f"chunk {k} ({where}): no checksum recorded")
        else:
            try:
                got = chunk_checksum(arr[lo : min(lo + c, n)])
            except Exception as e:  # a damaged file fails to decompress
                problems.append(f"chunk {k} ({where}) is damaged: cannot be read ({type(e).__name__}: {e})")
            else:
                if got != want:
                    problems.append(f"chunk {k} ({where}) is damaged: checksum {got} != recorded {want}")
        if progress is not None:
            progress.advance(min(c, n - lo))
    for name, info in m.get("inputs", {}).items():
        f = p / TABLES / name
        if not f.exists():
            problems.append(f"{f}: missing")
            continue
        from cxrbench.hashing import content_sha256

        if content_sha256(f) != info["sha256"]:
            problems.append(f"{f}: content differs from the sha256 recorded at build time")
    return problems


def cache_info(path: str | Path) -> dict:
    """Counts, size on disk, parameters and provenance of a store."""
    p = Path(path)
    m = _manifest_or_fail(p)
    n = int(m["n_images"])
    done = int(unpack_bits(m["images_done"], n).sum()) if "images_done" in m else 0
    total = sum(f.stat().st_size for f in (p / "images").rglob("*") if f.is_file())
    return {
        "path": str(p),
        "complete": bool(m.get("complete")),
        "format_version": m["format_version"],
        "images": n,
        "images_done": done,
        "bad_images": len(m.get("bad_images", [])),
        "odd_images": len(m.get("odd_images", {})),
        "images_bytes_on_disk": total,
        "bytes_per_image": round(total / max(done, 1), 1),
        "params": m["params"],
        "inputs": m["inputs"],
        "libraries": m.get("libraries", {}),
        "build": m.get("build", {}),
        "fingerprint": CacheStore(p, m).fingerprint if m.get("complete") else None,
    }
