"""`cache build`: decode every selected PNG once, resize it, write it into the zarr store - resumably.

Work is split by chunk (64 images); each worker process decodes a whole chunk and writes it, so no two
processes ever touch the same chunk file. Completion is recorded per image in the manifest after each
chunk is written (flushed at least every two seconds, atomically), so an interrupted build (Ctrl-C, kill)
resumes by decoding only the chunks not recorded as done, and ends bitwise identical to an uninterrupted
build. A lock (flock) keeps a second build off the same store.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrbench.cache.decode import available_decoders, decode_resized, default_decoder, warm_up
from cxrbench.cache.png import DecodeError
from cxrbench.cache.resample import DEFAULT_RESAMPLE, RESAMPLES, manifest_resample
from cxrbench.cache.store import (
    CHUNK_IMAGES,
    CODECS,
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    TABLES,
    atomic_write_bytes,
    atomic_write_json,
    chunk_checksum,
    create_arrays,
    pack_bits,
    read_manifest,
    unpack_bits,
    write_chunks,
)
from cxrbench.errors import CacheError
from cxrbench.hashing import content_sha256

RULES = "gray-rules-v1: 16-bit >> 8; RGB(A) -> Pillow L luma, alpha ignored; area resize, exact 4x4 box for 4x"
FLUSH_SECONDS = 2.0


@dataclass
class BuildReport:
    """What a build did."""

    path: Path
    n_images: int
    decoded: int
    seconds: float
    bad: dict[str, str] = field(default_factory=dict)
    up_to_date: bool = False

    @property
    def images_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0


def _library_versions(decoder: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for dist in ("numpy", "zarr", "numcodecs", "numba", "imagecodecs", "pillow", "pyspng", "opencv-python-headless"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _table_files(layout) -> dict[str, Path]:
    """The metadata files that travel with the cache (name in tables/ -> source path)."""
    files = {layout.metadata_csv.name: layout.metadata_csv}
    for p in (layout.train_val_list, layout.test_list, layout.bbox_csv):
        if p is not None:
            files[p.name] = p
    splits = layout.root / "splits"
    if splits.is_dir():
        for p in sorted(splits.iterdir()):
            if p.is_file() and (p.name.endswith(".txt") or p.name.endswith(".txt.gz")):
                files[f"splits/{p.name}"] = p
    return files


def select_images(metadata, subset: str) -> np.ndarray:
    """Metadata rows the cache holds: every image, or the paper's subset as every published protocol draws it
    (the union over their subset rules and seeds, so that one cache serves paper-15c@v1 and @v2)."""
    if subset == "all":
        return np.arange(len(metadata))
    if subset == "paper":
        from cxrbench.data.subset import select_subset
        from cxrbench.protocols import PROTOCOLS

        y = metadata.labels(15)
        draws = sorted({(p.subset_rule, p.subset_seed) for p in PROTOCOLS.values() if p.subset == "paper"})
        rows = np.zeros(0, np.int64)
        for rule, seed in draws:
            rows = np.union1d(rows, select_subset(y, seed=seed, rule=rule))
        return rows
    raise CacheError(f"unknown --subset {subset!r} (all or paper)")


# ---------------------------------------------------------------- worker side

def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts the pool down


def process_chunk(task: tuple) -> dict:
    """Decode one chunk's images, write them, and report checksums, bad files and odd formats."""
    store, k, lo, names, paths, size, decoder, resample = task
    block = np.zeros((len(names), size, size), np.uint8)
    shapes = np.zeros((len(names), 2), np.uint16)
    bad: dict[str, str] = {}
    odd: dict[str, dict] = {}
    for i, (name, path) in enumerate(zip(names, paths)):
        if path is None:
            bad[name] = "missing file (not found under the dataset folder)"
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            dec = decode_resized(decoder, data, size, resample)
        except FileNotFoundError:
            bad[name] = f"missing file ({path})"
            continue
        except DecodeError as e:
            bad[name] = e.reason
            continue
        except OSError as e:
            bad[name] = f"unreadable: {e.strerror or e}"
            continue
        block[i] = dec.pixels
        shapes[i] = dec.original_shape
        if dec.mode != "gray 8-bit" or dec.original_shape != (4 * size, 4 * size):
            odd[name] = {"mode": dec.mode, "original_shape": list(dec.original_shape)}
    write_chunks(Path(store), k, block, shapes)
    return {"chunk": k, "n": len(names), "checksum": chunk_checksum(block), "bad": bad, "odd": odd}


# ---------------------------------------------------------------- parent side


class _Lock:
    """An exclusive flock on PATH/.lock, released by the OS if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path / LOCK
        self.fh = None

    def __enter__(self) -> "_Lock":
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            who = self.fh.read().strip() or "another process"
            self.fh.close()
            raise CacheError(f"{self.path.parent}: another cache build ({who}) is writing this store; wait for it "
                             "to finish or choose another --out") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} on {os.uname().nodename}")
        self.fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()


def _compare(old: dict, new: dict, path: Path) -> None:
    """Refuse to reuse a store built from other inputs or with other parameters."""
    changes = []
    for key in ("size", "decoder", "subset", "chunk_images", "codecs", "rules"):
        if old["params"].get(key) != new["params"].get(key):
            changes.append(f"{key} {old['params'].get(key)!r} -> {new['params'].get(key)!r}")
    if manifest_resample(old["params"]) != manifest_resample(new["params"]):
        changes.append(f"resample {manifest_resample(old['params'])!r} -> {manifest_resample(new['params'])!r}")
    oi, ni = old.get("inputs", {}), new["inputs"]
    for name in sorted(set(oi) | set(ni)):
        if oi.get(name) != ni.get(name):
            what = "added" if name not in oi else "removed" if name not in ni else "changed"
            changes.append(f"{name} {what}")
    if old.get("names_sha256") != new["names_sha256"]:
        changes.append("the list of images changed")
    if changes:
        raise CacheError(f"{path}: this store was built from other inputs or settings ({'; '.join(changes)}); "
                         "it is not reused - remove it or choose another --out")


def build_cache(data_dir: str | Path, out: str | Path, *, subset: str = "all", workers: int | None = None,
                size: int = 256, decoder: str | None = None, skip_bad: bool = False, display=None,
                resample: str = DEFAULT_RESAMPLE) -> BuildReport:
    """Build (or resume) the cache of `data_dir` at `out`; see the module docstring. `resample`: box (the exact
    area mean) or bilinear (the paper's, Pillow's); a box store's params leave it out, as before the option."""
    from cxrbench.data.dataset import open_dataset

    t0 = time.perf_counter()
    decoder = decoder or default_decoder()
    if decoder not in available_decoders():
        raise CacheError(f"decoder {decoder!r} is not available here (available: {', '.join(available_decoders())})")
    if size < 8 or size > 4096:
        raise CacheError(f"--size {size} is out of range (8..4096)")
    if resample not in RESAMPLES:
        raise CacheError(f"unknown --resample {resample!r} (known: {', '.join(RESAMPLES)})")
    ds = open_dataset(data_dir)
    meta = ds.metadata
    rows = select_images(meta, subset)
    names = [str(n) for n in meta.names[rows]]
    paths = ds.layout.image_paths()
    tables = _table_files(ds.layout)
    inputs = {name: {"sha256": content_sha256(p)} for name, p in tables.items()}
    manifest_new = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "params": {"size": size, "decoder": decoder, "subset": subset, "chunk_images": CHUNK_IMAGES,
                   "codecs": CODECS, "rules": RULES,
                   **({} if resample == DEFAULT_RESAMPLE else {"resample": resample})},
        "inputs": inputs,
        "metadata_csv": ds.layout.metadata_csv.name,
        "n_images": len(names),
        "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "libraries": _library_versions(decoder),
    }
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and read_manifest(out) is None:
        raise CacheError(f"{out}: exists, is not empty and is not a cxrbench cache; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    with _Lock(out):
        manifest = read_manifest(out)
        if manifest is not None:
            _compare(manifest, manifest_new, out)
            if manifest.get("complete"):
                return BuildReport(out, len(names), 0, time.perf_counter() - t0, up_to_date=True)
        else:
            manifest = _initialise(out, manifest_new, names, tables, size)
        return _run(out, manifest, names, paths, size, decoder, workers, skip_bad, display, t0, resample)


def _initialise(out: Path, manifest: dict, names: list[str], tables: dict[str, Path], size: int) -> dict:
    (out / TABLES / "splits").mkdir(parents=True, exist_ok=True)
    for name, src in tables.items():
        atomic_write_bytes(out / TABLES / name, src.read_bytes())
    create_arrays(out, names, size)
    n_chunks = (len(names) + CHUNK_IMAGES - 1) // CHUNK_IMAGES
    manifest["chunks"] = {"count": n_chunks, "checksums": {}}
    manifest["images_done"] = pack_bits(np.zeros(len(names), bool))
    manifest["bad_images"] = []
    manifest["odd_images"] = {}
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _run(out: Path, manifest: dict, names: list[str], paths: dict[str, Path], size: int, decoder: str,
         workers: int | None, skip_bad: bool, display, t0: float, resample: str = DEFAULT_RESAMPLE) -> BuildReport:
    n = len(names)
    done = unpack_bits(manifest["images_done"], n)
    n_chunks = manifest["chunks"]["count"]
    todo = [k for k in range(n_chunks) if not done[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES].all()]
    bad_all: dict[str, str] = {}
    tasks = []
    for k in todo:
        lo = k * CHUNK_IMAGES
        chunk_names = names[lo : lo + CHUNK_IMAGES]
        tasks.append((str(out), k, lo, chunk_names, [str(paths[nm]) if nm in paths else None for nm in chunk_names],
                      size, decoder, resample))
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    warm_up()  # compile once in the parent; forked workers inherit the kernels
    state = {"last_flush": time.perf_counter()}
    decoded = 0

    def record(res: dict) -> None:
        nonlocal decoded
        k, lo = res["chunk"], res["chunk"] * CHUNK_IMAGES
        decoded += res["n"]
        manifest["odd_images"].update(res["odd"])
        if res["bad"]:
            bad_all.update(res["bad"])
            if not skip_bad:
                return  # the chunk stays not done: fixing the files and re-running redoes it
            known = {b["name"] for b in manifest["bad_images"]}
            manifest["bad_images"] += [{"name": nm, "reason": r} for nm, r in sorted(res["bad"].items())
                                       if nm not in known]
        manifest["chunks"]["checksums"][str(k)] = res["checksum"]
        done[lo : lo + res["n"]] = True
        if time.perf_counter() - state["last_flush"] > FLUSH_SECONDS:
            _flush(out, manifest, done)
            state["last_flush"] = time.perf_counter()

    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        _execute(tasks, workers, record, display, n, int(done.sum()))
    except KeyboardInterrupt:
        _flush(out, manifest, done)
        if display is not None:
            display.info(f"interrupted: {int(done.sum())} of {n} images are in the cache; run the same command "
                         "again to resume")
        raise
    finally:
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seconds = time.perf_counter() - t0
    if bad_all and not skip_bad:
        _flush(out, manifest, done)
        listing = out / "bad_images.txt"
        atomic_write_bytes(listing, "".join(f"{k}\t{v}\n" for k, v in sorted(bad_all.items())).encode())
        if display is not None:
            for name, reason in sorted(bad_all.items()):
                display.warn(f"{paths.get(name, name)}: {reason}")
        raise CacheError(
            f"{len(bad_all)} image(s) could not be decoded (listed above and in {listing}); fix or replace them "
            "and run the build again (only their chunks are redone), or pass --skip-bad to record and exclude them"
        )
    manifest["complete"] = True
    manifest["build"] = {"seconds": round(seconds, 3), "decoded": decoded,
                         "images_per_s": round(decoded / seconds, 1) if seconds else None, "workers": workers}
    _flush(out, manifest, done)
    return BuildReport(out, n, decoded, seconds, bad=bad_all)


def _sigterm(signum, frame) -> None:  # a kill is handled like Ctrl-C: progress is saved
    raise KeyboardInterrupt


def _flush(out: Path, manifest: dict, done: np.ndarray) -> None:
    manifest["images_done"] = pack_bits(done)
    atomic_write_json(out / MANIFEST, manifest)


def _execute(tasks: list[tuple], workers: int, record, display, total: int, already: int) -> None:
    from contextlib import nullcontext

    ctx = display.progress("cache build", total=total) if display is not None else nullcontext(None)
    with ctx as bar:
        if bar is not None and already:
            bar.update(completed=already)
        if workers == 1:
            for t in tasks:
                res = process_chunk(t)
                record(res)
                if bar is not None:
                    bar.advance(res["n"])
            return
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from cxrbench._mp import context

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context(), initializer=_worker_init)
        try:
            pending = {pool.submit(process_chunk, t) for t in tasks}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    res = f.result()
                    record(res)
                    if bar is not None:
                        bar.advance(res["n"])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
