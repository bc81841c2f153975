"""The cache store on disk: a zarr v3 group with `images` (N, S, S) uint8, `names` (N,) and
`original_shape` (N, 2), copies of the metadata tables, and `manifest.json`.

Any zarr reader can use it without cxrbench (`zarr.open_group(path)["images"]`; the delta filter is
numcodecs', which zarr-python ships with). cxrbench's readers refuse a store that is incomplete, of an
unknown format version, or damaged: `open_cache` checks the stored tables against the sha256 recorded at
build time, `CacheStore.names` checks the names, and `CacheStore.read` decodes each chunk file itself and
checks its pixels against the chunk's recorded blake2b (a missing chunk file is an error, never zarr's
fill value of zeros).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbench.cache.constants import (  # noqa: F401  (re-exported: the store's readers name them here)
    CHUNK_IMAGES,
    CODECS,
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    MAX_CHUNK_BYTES,
    TABLES,
)
from cxrbench.cache.manifest import Manifest, check_layout
from cxrbench.errors import CacheError
from cxrbench.files import TMP_PATTERN, atomic_write, make_dirs, read_json, read_regular_stat
from cxrbench.hashing import content_sha256


def chunk_checksum(block: np.ndarray) -> str:
    """blake2b-128 of a chunk's pixels (uint8) or original shapes (little-endian uint16), without padding."""
    if block.dtype != np.uint8:
        block = block.astype("<u2")
    return hashlib.blake2b(np.ascontiguousarray(block).data, digest_size=16).hexdigest()


def names_sha256(names) -> str:
    """sha256 of the image names joined by newlines (the manifest's `names_sha256`)."""
    return hashlib.sha256("\n".join(str(n) for n in names).encode()).hexdigest()


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
        make_dirs(f.parent, root=path)
        atomic_write(f, bytes(data))


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
            "images",
            shape=(n, size, size),
            chunks=(CHUNK_IMAGES, size, size),
            dtype="uint8",
            fill_value=0,
            filters=[Delta(dtype="uint8")],
            compressors=[ZstdCodec(level=1)],
            config={"write_empty_chunks": True},
            overwrite=True,
        )
    g.create_array(
        "original_shape",
        shape=(n, 2),
        chunks=(CHUNK_IMAGES, 2),
        dtype="uint16",
        fill_value=0,
        compressors=[ZstdCodec(level=1)],
        config={"write_empty_chunks": True},
        overwrite=True,
    )
    write_names(path, names)


def write_names(path: Path, names: list[str]) -> None:
    """(Re)write the `names` array of an existing group (a build, or a repair of damaged names)."""
    import zarr

    g = zarr.open_group(str(path), mode="a", zarr_format=3)
    arr = g.create_array("names", shape=(len(names),), chunks=(max(len(names), 1),), dtype=str, overwrite=True)
    arr[:] = np.array(names, dtype=object)


# ------------------------------------------------------------------ checked reads


def fix_hint(path: Path | str) -> str:
    """What to do about a damaged store (every damage message ends with it)."""
    return (
        f"run `cxrbench cache verify {path}` to list the damage and `cxrbench cache repair {path} "
        "--data-dir DATA_DIR` to re-decode it from the PNGs"
    )


class ChunkDamage(CacheError):
    """One chunk file that is missing, cannot be decoded, or does not match its recorded checksum."""

    def __init__(self, array: str, k: int, file: Path, what: str) -> None:
        self.array, self.k, self.file = array, k, file
        label = "chunk" if array == "images" else f"{array} chunk"
        super().__init__(f"{label} {k} ({file}) {what}")


def _chunk_rows(m: dict, k: int) -> int:
    c, n = int(m["params"]["chunk_images"]), int(m["n_images"])
    return min(c, n - k * c)


def _read_chunk_file(f: Path, array: str, k: int) -> tuple[bytes, tuple]:
    """The bytes of a chunk file and its identity (device, inode, size, mtime, ctime)."""
    try:
        raw, st = read_regular_stat(f, MAX_CHUNK_BYTES, "the chunk file", CacheError, follow=True)
    except CacheError:
        if not f.exists() and not f.is_symlink():
            raise ChunkDamage(array, k, f, "is missing (its file was deleted or never written)") from None
        raise ChunkDamage(array, k, f, "cannot be read (not a regular file, or too large)") from None
    return raw, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _decode_chunk(raw: bytes, array: str, k: int, f: Path, rows: int, size: int) -> np.ndarray:
    """Undo the codecs of one chunk file (delta + zstd for images, zstd for shapes), padding removed."""
    from numcodecs import Delta, Zstd

    try:
        plain = Zstd().decode(raw)
        if array == "images":
            flat = Delta(dtype="u1").decode(plain)
            shape: tuple[int, ...] = (CHUNK_IMAGES, size, size)
        else:
            flat = np.frombuffer(plain, "<u2")
            shape = (CHUNK_IMAGES, 2)
        if flat.size != int(np.prod(shape)):
            raise ValueError(f"{flat.size} values, expected {int(np.prod(shape))}")
    except Exception as e:  # zstd's RuntimeError on damaged data, a wrong size
        raise ChunkDamage(array, k, f, f"is damaged: cannot be decompressed ({type(e).__name__}: {e})") from None
    return flat.reshape(shape)[:rows]


def _checksums(m: dict, array: str) -> dict | None:
    """The per-chunk checksums recorded for `array` (None for original_shape in stores from before them)."""
    return m["chunks"]["checksums"] if array == "images" else m["chunks"].get("shape_checksums")


# chunk file -> (recorded checksum, file identity) of chunks whose pixels this process has checked: a chunk is
# hashed on its first read, and again only if its file changed (another inode, size, mtime or ctime)
_VERIFIED: dict[str, tuple[str, tuple]] = {}


def load_chunk(path: Path, m: dict, array: str, k: int, *, trust_checked: bool = True) -> np.ndarray:
    """Chunk k of `images` or `original_shape`, decoded and checked against its recorded checksum.

    Raises ChunkDamage when the file is missing, undecodable or does not match; `trust_checked` skips the
    hash for a file this process already checked and that has not changed since.
    """
    f = chunk_file(path, array, k)
    sums = _checksums(m, array)
    want = None if sums is None else sums.get(str(k))
    if sums is not None and want is None:
        raise ChunkDamage(array, k, f, "has no checksum recorded in the manifest")
    raw, ident = _read_chunk_file(f, array, k)
    block = _decode_chunk(raw, array, k, f, _chunk_rows(m, k), int(m["params"]["size"]))
    key = str(f)
    if want is not None and not (trust_checked and _VERIFIED.get(key) == (want, ident)):
        got = chunk_checksum(block)
        if got != want:
            raise ChunkDamage(array, k, f, f"is damaged: checksum {got} != recorded {want}")
        _VERIFIED[key] = (want, ident)
    return block


def check_tables(path: Path, m: dict) -> list[str]:
    """Problems with the stored tables: a file missing, edited (sha256 differs from the manifest's inputs)
    or not written by the build (a run must read exactly the tables the cache was built with)."""
    problems = []
    tables = path / TABLES
    inputs = m.get("inputs", {})
    for name, info in sorted(inputs.items()):
        f = tables / name
        if not f.is_file():
            problems.append(f"{f}: missing")
            continue
        try:
            same = content_sha256(f) == info["sha256"]
        except Exception as e:  # an unreadable or damaged gzip file
            problems.append(f"{f}: cannot be read ({type(e).__name__}: {e})")
            continue
        if not same:
            problems.append(f"{f}: content differs from the sha256 recorded at build time (edited or damaged)")
    if tables.is_dir():
        for f in sorted(tables.rglob("*")):
            rel = f.relative_to(tables).as_posix()
            if f.is_file() and rel not in inputs and not TMP_PATTERN.match(f.name):
                problems.append(f"{f}: not written by the cache build (a run could read it as a table)")
    return problems


def check_names(path: Path, m: dict) -> tuple[np.ndarray | None, str | None]:
    """The stored names and a problem (or None): unreadable, or not matching the manifest's names_sha256."""
    f = path / "names"
    try:
        names = np.asarray(zopen(f)[:], dtype=object)
    except Exception as e:
        return None, f"{f}: the image names cannot be read ({type(e).__name__}: {e})"
    if len(names) != int(m["n_images"]) or names_sha256(names) != m.get("names_sha256"):
        return names, f"{f}: the image names differ from the sha256 recorded at build time (edited or damaged)"
    return names, None


# Library versions that can change decoded pixels, per decoder backend; the fingerprint holds these and no
# others. numba compiles cxrbench's unfilter and resize kernels (every backend resizes with them; the area
# resize computes in float64). The backend's own library decodes (imagecodecs, pyspng, OpenCV, Pillow), and
# Pillow also decodes what `cxr` and `pyspng` leave to it (palette, sub-byte, interlaced; gray+alpha for
# pyspng). cxrbench's own rules and kernels are versioned by params["rules"], already in the fingerprint.
# Left out on purpose: zstd, numcodecs and zarr store the pixels losslessly (a bug there fails the checksum
# instead of changing pixels); inflate (libdeflate via imagecodecs for `cxr`, or zlib) is lossless and
# size-checked; numpy only applies the integer rules (16-bit shift, luma), exact on every version.
PIXEL_LIBRARIES: dict[str, tuple[str, ...]] = {
    "cxr": ("numba", "pillow"),
    "imagecodecs": ("imagecodecs", "numba"),
    "pyspng": ("pyspng", "pillow", "numba"),
    "opencv": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
        "numba",
    ),
    "pillow": ("pillow", "numba"),
}


def pixel_libraries(m: dict) -> dict[str, str | None]:
    """The recorded versions of the libraries that can change this cache's pixels (see PIXEL_LIBRARIES)."""
    libs = m.get("libraries", {})
    wanted = PIXEL_LIBRARIES.get(m["params"]["decoder"], ())
    return {d: libs[d] for d in wanted if d in libs}


@dataclass
class CacheStore:
    """A complete cache opened for reading; every read is checked against the manifest's checksums."""

    path: Path
    manifest: dict
    check_reads: bool = True  # False only for the benchmark's baseline (benchmarks/cache_read.py)

    @property
    def size(self) -> int:
        return int(self.manifest["params"]["size"])

    @property
    def n_images(self) -> int:
        return int(self.manifest["n_images"])

    @property
    def chunk_images(self) -> int:
        return int(self.manifest["params"]["chunk_images"])

    def names(self) -> np.ndarray:
        """The image names, refused when they differ from what the build recorded."""
        names, problem = check_names(self.path, self.manifest)
        if problem is not None or names is None:
            raise CacheError(f"{problem}; {fix_hint(self.path)}")
        return names

    def bad(self) -> set[str]:
        """Images recorded as undecodable (built with --skip-bad); excluded from every split."""
        return {b["name"] for b in self.manifest.get("bad_images", [])}

    def tables_dir(self) -> Path:
        """The metadata tables the cache was built with (checked by `open_cache`)."""
        return self.path / TABLES

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of what determines the pixels: format, parameters, inputs, chunk checksums and the
        versions of the libraries that can change decoded pixels (PIXEL_LIBRARIES)."""
        m = self.manifest
        core = {k: m[k] for k in ("format", "format_version", "params", "inputs", "n_images")}
        core["checksums"] = m["chunks"]["checksums"]
        core["bad_images"] = sorted(self.bad())
        core["pixel_libraries"] = pixel_libraries(m)
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def read_chunk(self, k: int) -> np.ndarray:
        """Chunk k of the images (its real rows), checked; CacheError naming the chunk file and the fix."""
        if not self.check_reads:
            f = chunk_file(self.path, "images", k)
            raw, _ = _read_chunk_file(f, "images", k)
            return _decode_chunk(raw, "images", k, f, _chunk_rows(self.manifest, k), self.size)
        try:
            return load_chunk(self.path, self.manifest, "images", k)
        except ChunkDamage as e:
            raise CacheError(
                f"{self.path}: {e}; the cache is damaged, no pixels are read from it - {fix_hint(self.path)}"
            ) from None

    def read(self, positions: np.ndarray, threads: int | None = None) -> np.ndarray:
        """Images at cache positions (any order), reading and checking each needed chunk once.

        Chunks are read, decompressed and hashed by `threads` threads (default: one per core, at most 8; zstd,
        numpy and hashlib release the GIL), a bounded window at a time, so memory stays a few chunks deep."""
        from concurrent.futures import ThreadPoolExecutor

        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.size, self.size), np.uint8)
        if len(positions) == 0:
            return out
        order = np.argsort(positions, kind="stable")
        sp = positions[order]
        if sp[0] < 0 or sp[-1] >= self.n_images:
            raise IndexError(f"cache positions must lie in 0..{self.n_images - 1}")
        c = self.chunk_images
        chunk_of = sp // c
        chunks = [int(ch) for ch in np.unique(chunk_of)]

        def put(ch: int, block: np.ndarray) -> None:
            sel = np.flatnonzero(chunk_of == ch)
            out[order[sel]] = block[sp[sel] - ch * c]

        threads = max(1, min(threads or min(os.cpu_count() or 1, 8), len(chunks)))
        if threads == 1:
            for ch in chunks:
                put(ch, self.read_chunk(ch))
            return out
        window = 2 * threads
        with ThreadPoolExecutor(threads, thread_name_prefix="cxrbench-read") as pool:
            for i in range(0, len(chunks), window):
                part = chunks[i : i + window]
                for ch, block in zip(part, pool.map(self.read_chunk, part)):
                    put(ch, block)
        return out


MAX_MANIFEST_BYTES = 256 << 20  # 112,120 images: a few MB of checksums and done-bits


def read_manifest(path: Path) -> dict | None:
    """The store's manifest (None when there is none yet), read as untrusted input: a regular file within a
    size limit, strict JSON (no NaN, bounded nesting), and the fields every reader indexes present with
    their types; anything else is one CacheError line naming the file."""
    mp = path / MANIFEST
    if not mp.exists() and not mp.is_symlink():
        return None
    m = read_json(mp, MAX_MANIFEST_BYTES, "the cache manifest", lambda msg: CacheError(f"damaged manifest: {msg}"))
    if not isinstance(m, dict):
        raise CacheError(f"{mp}: damaged manifest (not a JSON object)")
    chunks = m.get("chunks")
    ok = (
        isinstance(chunks, dict)
        and isinstance(chunks.get("count"), int)
        and isinstance(chunks.get("checksums"), dict)
        and isinstance(m.get("n_images"), int)
        and isinstance(m.get("params"), dict)
        and isinstance(m.get("images_done", ""), str)
        and isinstance(m.get("complete", False), bool)
    )
    if not ok:
        raise CacheError(
            f"{mp}: damaged manifest (chunks, n_images, params, images_done or complete missing or of the "
            "wrong type); delete the folder and build the cache again"
        )
    return m


def open_cache(path: str | Path) -> CacheStore:
    """Open a complete cache; incomplete, foreign, newer or edited stores are refused with the reason.

    The stored tables are checked here against the sha256 the build recorded (cheap: small files), the names
    on first read (`CacheStore.names`), and each chunk as it is read (`CacheStore.read`).
    """
    p = Path(path)
    if not p.is_dir():
        raise CacheError(f"{p}: no cache here (build one with `cxrbench cache build`)")
    m = read_manifest(p)

    Manifest.from_dict(m, p)  # the one parser: a cxrbench cache, this format version, complete, a known layout
    assert m is not None  # from_dict refuses a missing manifest
    problems = check_tables(p, m)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CacheError(f"{problems[0]}{more}; the cache's tables are not the ones it was built with - {fix_hint(p)}")
    return CacheStore(p, m)


def _manifest_or_fail(path: Path) -> dict:
    m = read_manifest(path)
    if m is None or m.get("format") != FORMAT:
        raise CacheError(f"{path}: not a cxrbench cache (no {MANIFEST})")
    return m


@dataclass
class Damage:
    """What `inspect_cache` found: damaged chunks (by index), names, tables, and one line per problem."""

    chunks: list[int]
    names: bool
    tables: list[str]
    problems: list[str]
    notes: list[str]


def inspect_cache(path: str | Path, progress=None) -> Damage:
    """Re-read every chunk of `images` and `original_shape` against its checksum, and check the names and
    the stored tables: everything a run reads."""
    p = Path(path)
    m = _manifest_or_fail(p)
    problems: list[str] = []
    notes: list[str] = []
    if not m.get("complete"):
        problems.append(f"{p}: the build is not complete")

    check_layout(m, p)
    damaged: set[int] = set()
    sums = m["chunks"]["checksums"]
    if _checksums(m, "original_shape") is None:
        notes.append(
            f"{p}/original_shape: no checksums recorded (built by an older cxrbench); its chunks are "
            "checked for being present and readable only"
        )
    for k in range(int(m["chunks"]["count"])):
        for array in ("images", "original_shape"):
            if str(k) not in sums and not m.get("complete"):
                continue  # not built yet
            try:
                load_chunk(p, m, array, k, trust_checked=False)
            except ChunkDamage as e:
                problems.append(str(e))
                damaged.add(k)
        if progress is not None:
            progress.advance(_chunk_rows(m, k))
    _, name_problem = check_names(p, m)
    if name_problem is not None:
        problems.append(name_problem)
    tables = check_tables(p, m)
    problems += tables
    return Damage(sorted(damaged), name_problem is not None, tables, problems, notes)


def verify_cache(path: str | Path, progress=None) -> list[str]:
    """One line per problem in the store (empty when it is sound); see `inspect_cache`."""
    return inspect_cache(path, progress).problems


def missing_chunk_files(path: Path, m: dict) -> list[tuple[int, Path]]:
    """(chunk, file) for each file of a recorded chunk that does not exist (cheap: one stat per file)."""
    out = []
    for k in sorted(map(int, m["chunks"]["checksums"])):
        for array in ("images", "original_shape"):
            f = chunk_file(path, array, k)
            if not f.is_file():
                out.append((k, f))
    return out


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
