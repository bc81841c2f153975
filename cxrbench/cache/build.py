"""`cache build`: decode every selected PNG once, resize it, write it into the zarr store - resumably.

Work is split by chunk (64 images); each worker process decodes a whole chunk and writes it, so no two
processes ever touch the same chunk file. Completion is recorded per image in the manifest after each
chunk is written (flushed at least every two seconds, atomically, and whenever the build stops: Ctrl-C, a
kill, a full disk), so an interrupted build resumes by decoding only the chunks not recorded as done, and
ends bitwise identical to an uninterrupted build. A lock (flock) keeps a second build off the same store;
workers exit when the build process dies, so a killed build never leaves them holding the lock.
"""

from __future__ import annotations

import errno
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
    chunk_checksum,
    create_arrays,
    missing_chunk_files,
    names_sha256,
    pack_bits,
    pixel_libraries,
    read_manifest,
    unpack_bits,
    write_chunks,
)
from cxrbench.cache.workers import StoreLock, execute
from cxrbench.console import rate
from cxrbench.errors import CacheError
from cxrbench.files import atomic_write, atomic_write_json, make_dirs, remove_temp_files
from cxrbench.hashing import content_sha256

RULES = "gray-rules-v1: 16-bit >> 8; RGB(A) -> Pillow L luma, alpha ignored; area resize, exact 4x4 box for 4x"
FLUSH_SECONDS = 2.0
WARN_LINES = 20  # bad files listed one per line at the end of a build; the rest are in bad_images.txt


@dataclass
class BuildReport:
    """What a build did."""

    path: Path
    n_images: int
    decoded: int
    seconds: float
    bad: dict[str, str] = field(default_factory=dict)
    up_to_date: bool = False
    decode_seconds: float = 0.0  # the part of `seconds` spent decoding: what the progress bar's rate is over

    @property
    def images_per_s(self) -> float:
        """Images decoded per second of decoding: the rate the progress bar shows (`console.rate`)."""
        return rate(self.decoded, self.decode_seconds) or 0.0


def _library_versions(decoder: str) -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for dist in (
        "numpy",
        "zarr",
        "numcodecs",
        "numba",
        "imagecodecs",
        "pillow",
        "pyspng",
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ):
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


@dataclass(frozen=True)
class ChunkTask:
    """One chunk for a worker: its images and, for a repair, the checksums the result must have."""

    store: str
    k: int
    names: list[str]
    paths: list[str | None]
    size: int
    decoder: str
    expect: tuple[str, str | None] | None = None  # (images, original_shape) checksums recorded at build time
    resample: str = DEFAULT_RESAMPLE


def _decode_one(path: str | None, decoder: str, size: int, resample: str = DEFAULT_RESAMPLE):
    """(Decoded, None) or (None, the reason it could not be decoded); never raises for a bad file."""
    if path is None:
        return None, "missing file (not found under the dataset folder)"
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return decode_resized(decoder, data, size, resample), None
    except FileNotFoundError:
        return None, f"missing file ({path})"
    except DecodeError as e:
        return None, e.reason
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    except MemoryError:
        return None, "not enough memory to decode it"
    except Exception as e:  # a decoder library's own error type (each is reported per file, never fatal)
        return None, f"could not be decoded ({type(e).__name__}: {e})"


def process_chunk(task: ChunkTask) -> dict:
    """Decode one chunk's images, write them, and report checksums, bad files and odd formats.

    For a repair (`task.expect`), the chunk is written only if it matches the checksums recorded at build
    time, so a repaired store is bitwise what the build wrote or is left as it was.
    """
    n = len(task.names)
    block = np.zeros((n, task.size, task.size), np.uint8)
    shapes = np.zeros((n, 2), np.uint16)
    bad: dict[str, str] = {}
    odd: dict[str, dict] = {}
    for i, (name, path) in enumerate(zip(task.names, task.paths)):
        dec, reason = _decode_one(path, task.decoder, task.size, task.resample)
        if dec is None:
            bad[name] = reason
            continue
        block[i] = dec.pixels
        shapes[i] = dec.original_shape
        if dec.mode != "gray 8-bit" or dec.original_shape != (4 * task.size, 4 * task.size):
            odd[name] = {"mode": dec.mode, "original_shape": list(dec.original_shape)}
    sums = chunk_checksum(block), chunk_checksum(shapes)
    res = {
        "chunk": task.k,
        "n": n,
        "checksum": sums[0],
        "shape_checksum": sums[1],
        "bad": bad,
        "odd": odd,
        "written": False,
    }
    if task.expect is not None and (sums[0] != task.expect[0] or task.expect[1] not in (None, sums[1])):
        return res
    write_chunks(Path(task.store), task.k, block, shapes)
    res["written"] = True
    return res


# ---------------------------------------------------------------- parent side


def compare_manifests(old: dict, new: dict, path: Path, libraries: bool = False) -> None:
    """Refuse to reuse a store built from other inputs or with other parameters (or, to resume an unfinished
    one, other versions of the libraries that can change pixels)."""
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
    if libraries:
        was, now = pixel_libraries(old), pixel_libraries(new)
        changes += [
            f"{d} {was.get(d)} -> {now.get(d)}" for d in sorted(set(was) | set(now)) if was.get(d) != now.get(d)
        ]
    if changes:
        raise CacheError(
            f"{path}: this store was built from other inputs or settings ({'; '.join(changes)}); "
            "it is not reused - remove it or choose another --out"
        )


@dataclass
class BuildPlan:
    """What a build of `data_dir` would write: its images, where their PNGs are, and the manifest."""

    root: Path
    names: list[str]
    paths: dict[str, Path]
    tables: dict[str, Path]
    manifest: dict
    metadata_csv: Path


def plan_build(
    data_dir: str | Path, subset: str, size: int, decoder: str, resample: str = DEFAULT_RESAMPLE
) -> BuildPlan:
    """Read the dataset folder's tables and find its PNGs: what a build with these settings would write.
    A box store's params leave `resample` out, as before the option existed."""
    from cxrbench.data.dataset import open_dataset

    if decoder not in available_decoders():
        raise CacheError(f"decoder {decoder!r} is not available here (available: {', '.join(available_decoders())})")
    if size < 8 or size > 4096:
        raise CacheError(f"--size {size} is out of range (8..4096)")
    if resample not in RESAMPLES:
        raise CacheError(f"unknown --resample {resample!r} (known: {', '.join(RESAMPLES)})")
    ds = open_dataset(data_dir)
    rows = select_images(ds.metadata, subset)
    names = [str(n) for n in ds.metadata.names[rows]]
    tables = _table_files(ds.layout)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": False,
        "params": {
            "size": size,
            "decoder": decoder,
            "subset": subset,
            "chunk_images": CHUNK_IMAGES,
            "codecs": CODECS,
            "rules": RULES,
            **({} if resample == DEFAULT_RESAMPLE else {"resample": resample}),
        },
        "inputs": {name: {"sha256": content_sha256(p)} for name, p in tables.items()},
        "metadata_csv": ds.layout.metadata_csv.name,
        "n_images": len(names),
        "names_sha256": names_sha256(names),
        "libraries": _library_versions(decoder),
    }
    return BuildPlan(ds.layout.root, names, ds.layout.image_paths(), tables, manifest, ds.layout.metadata_csv)


def check_sources(plan: BuildPlan, names: list[str], follow_links: bool, display, skip_bad: bool = False) -> None:
    """Before decoding anything: summarise missing PNGs in one line, stop when most are missing (a wrong
    --data-dir, not a few lost files), and refuse PNGs that are symlinks to outside the dataset folder."""
    from cxrbench.data.layout import links_outside

    missing = [nm for nm in names if nm not in plan.paths]
    first = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    if missing and 2 * len(missing) > len(names):
        raise CacheError(
            f"{len(missing):,} of the {len(names):,} images listed in {plan.metadata_csv.name} are not under "
            f"{plan.root} (first: {first}); nothing was decoded. Is --data-dir the ChestX-ray14 folder that holds "
            "the PNGs? They are looked for in images_NNN/images/, images_NNN/, images/ and the folder itself"
        )
    if missing and display is not None:
        then = "recorded as bad and excluded (--skip-bad)" if skip_bad else "listed again when the build ends"
        display.warn(
            f"{len(missing):,} of the {len(names):,} images listed in {plan.metadata_csv.name} are not "
            f"under {plan.root} (first: {first}); the others are decoded, the missing ones {then}"
        )
    if follow_links:
        return
    outside = links_outside(plan.root, {nm: plan.paths[nm] for nm in names if nm in plan.paths})
    if outside:
        name, target = next(iter(outside.items()))
        raise CacheError(
            f"{len(outside):,} image(s) are symbolic links that resolve outside the dataset folder {plan.root} "
            f"(first: {plan.paths[name]} -> {target}); cxrbench reads only files inside it - pass --follow-links "
            "to read them anyway"
        )


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CacheError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and read_manifest(out) is None:
        raise CacheError(f"{out}: exists, is not empty and is not a cxrbench cache; choose another --out")
    make_dirs(out)


def build_cache(
    data_dir: str | Path,
    out: str | Path,
    *,
    subset: str = "all",
    workers: int | None = None,
    size: int = 256,
    decoder: str | None = None,
    skip_bad: bool = False,
    follow_links: bool = False,
    display=None,
    resample: str = DEFAULT_RESAMPLE,
) -> BuildReport:
    """Build (or resume) the cache of `data_dir` at `out`; see the module docstring. `resample`: box (the exact
    area mean) or bilinear (the paper's, Pillow's)."""
    t0 = time.perf_counter()
    plan = plan_build(data_dir, subset, size, decoder or default_decoder(), resample)
    out = Path(out)
    checked = not (out / MANIFEST).exists()
    if checked:  # a new store: check the PNGs before the folder is touched
        check_sources(plan, plan.names, follow_links, display, skip_bad)
    _prepare_out(out)
    with StoreLock(out, display) as lock:
        remove_temp_files(out)  # left by a killed build; nobody else writes while we hold the lock
        manifest = read_manifest(out)
        if manifest is not None:
            compare_manifests(manifest, plan.manifest, out, libraries=not manifest.get("complete"))
            if manifest.get("complete"):
                _check_chunk_files(out, manifest, data_dir)
                return BuildReport(out, len(plan.names), 0, time.perf_counter() - t0, up_to_date=True)
        if not checked:
            check_sources(plan, plan.names, follow_links, display, skip_bad)
        if manifest is None:
            manifest = write_or_fail(out, lambda: _initialise(out, plan.manifest, plan, size))
        return _Build(out, manifest, plan, workers, skip_bad, display, lock, t0).run()


def _check_chunk_files(out: Path, manifest: dict, data_dir) -> None:
    """A complete store whose chunk files are gone is not "up to date": say so and point to the repair."""
    missing = missing_chunk_files(out, manifest)
    if missing:
        raise CacheError(
            f"{out}: the cache is complete but {len(missing)} of its chunk files are missing (first: "
            f"{missing[0][1]}); run `cxrbench cache repair {out} --data-dir {data_dir}` to decode them "
            f"again (`cxrbench cache verify {out}` checks every chunk)"
        )


def write_or_fail(out: Path, write):
    """Run a write to the store; a full disk or other OSError becomes one CacheError line."""
    try:
        return write()
    except OSError as e:
        raise CacheError(
            f"{out}: {_write_reason(e)}; free some space (or fix the folder) and run the same command again"
        ) from None


def _write_reason(e: OSError) -> str:
    what = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    return what + (f" while writing {e.filename}" if e.filename else "")


def _initialise(out: Path, manifest: dict, plan: BuildPlan, size: int) -> dict:
    make_dirs(out / TABLES / "splits", root=out)
    for name, src in plan.tables.items():
        atomic_write(out / TABLES / name, src.read_bytes())
    create_arrays(out, plan.names, size)
    n_chunks = (len(plan.names) + CHUNK_IMAGES - 1) // CHUNK_IMAGES
    manifest["chunks"] = {"count": n_chunks, "checksums": {}, "shape_checksums": {}}
    manifest["images_done"] = pack_bits(np.zeros(len(plan.names), bool))
    manifest["bad_images"] = []
    manifest["odd_images"] = {}
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def chunk_tasks(
    out: Path,
    plan: BuildPlan,
    chunks: list[int],
    size: int,
    decoder: str,
    expect: dict[int, tuple[str, str | None]] | None = None,
    resample: str = DEFAULT_RESAMPLE,
) -> list[ChunkTask]:
    """One task per chunk index, with the paths of its PNGs (None where a PNG is missing)."""
    tasks = []
    for k in chunks:
        names = plan.names[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES]
        paths = [str(plan.paths[nm]) if nm in plan.paths else None for nm in names]
        tasks.append(
            ChunkTask(str(out), k, names, paths, size, decoder, None if expect is None else expect[k], resample)
        )
    return tasks


class _Build:
    """One build (or resumption) of an initialised store, under its lock."""

    def __init__(
        self,
        out: Path,
        manifest: dict,
        plan: BuildPlan,
        workers: int | None,
        skip_bad: bool,
        display,
        lock: StoreLock,
        t0: float,
    ) -> None:
        self.out, self.manifest, self.plan = out, manifest, plan
        self.skip_bad, self.display, self.lock, self.t0 = skip_bad, display, lock, t0
        self.n = len(plan.names)
        self.done = unpack_bits(manifest["images_done"], self.n)
        self.bad: dict[str, str] = {}
        self.decoded = 0
        self.decode_seconds = 0.0
        self.last_flush = time.perf_counter()
        self._forget_missing_chunks()
        n_chunks = manifest["chunks"]["count"]
        todo = [k for k in range(n_chunks) if not self.done[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES].all()]
        p = manifest["params"]
        self.tasks = chunk_tasks(out, plan, todo, p["size"], p["decoder"], resample=manifest_resample(p))
        self.workers = max(1, min(workers or os.cpu_count() or 1, len(self.tasks) or 1))

    def _forget_missing_chunks(self) -> None:
        """Chunks recorded as done whose files are gone are decoded again (a resumed build never trusts them)."""
        gone = sorted({k for k, _ in missing_chunk_files(self.out, self.manifest)})
        for k in gone:
            self.manifest["chunks"]["checksums"].pop(str(k), None)
            self.manifest["chunks"].get("shape_checksums", {}).pop(str(k), None)
            self.done[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES] = False
        if gone and self.display is not None:
            self.display.info(f"{self.out}: {len(gone)} chunk(s) recorded as done have no file; decoding them again")

    def record(self, res: dict) -> None:
        k, lo = res["chunk"], res["chunk"] * CHUNK_IMAGES
        self.decoded += res["n"]
        m = self.manifest
        m["odd_images"].update(res["odd"])
        if res["bad"]:
            self.bad.update(res["bad"])
            if not self.skip_bad:
                return  # the chunk stays not done: fixing the files and re-running redoes it
            known = {b["name"] for b in m["bad_images"]}
            m["bad_images"] += [{"name": nm, "reason": r} for nm, r in sorted(res["bad"].items()) if nm not in known]
        m["chunks"]["checksums"][str(k)] = res["checksum"]
        if "shape_checksums" in m["chunks"]:  # absent in stores started by an older cxrbench
            m["chunks"]["shape_checksums"][str(k)] = res["shape_checksum"]
        self.done[lo : lo + res["n"]] = True
        if time.perf_counter() - self.last_flush > FLUSH_SECONDS:
            self.flush()
            self.last_flush = time.perf_counter()

    def flush(self) -> None:
        self.manifest["images_done"] = pack_bits(self.done)
        atomic_write_json(self.out / MANIFEST, self.manifest)

    def run(self) -> BuildReport:
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _sigterm)
        warm_up()  # compile once in the parent; forked workers inherit the kernels
        try:
            self.decode_seconds = execute(
                process_chunk,
                self.tasks,
                self.workers,
                self.record,
                self.display,
                self.n,
                int(self.done.sum()),
                self.lock.identity(),
            )
        except KeyboardInterrupt:
            try:
                self.flush()
            except OSError as e:  # a full disk too: the chunks since the last save are decoded again
                raise self._write_failure(e) from None
            if self.display is not None:
                self.display.info(
                    f"interrupted: {int(self.done.sum())} of {self.n} images are in the cache; run the "
                    "same command again to resume"
                )
            raise
        except OSError as e:
            raise self._write_failure(e) from None
        finally:
            if previous in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return write_or_fail(self.out, self._finish)

    def _write_failure(self, e: OSError) -> CacheError:
        """A write failed (disk full): save what is done, and say so in one line."""
        try:
            self.flush()
            kept = f"{int(self.done.sum()):,} of {self.n:,} images are saved"
        except OSError as e2:
            kept = f"progress since the last save could not be recorded ({_write_reason(e2)})"
        return CacheError(
            f"{self.out}: {_write_reason(e)}; {kept} and no temp files are left; free some space and "
            "run the same command again to resume"
        )

    def _finish(self) -> BuildReport:
        seconds = time.perf_counter() - self.t0
        if self.bad and not self.skip_bad:
            self.flush()
            listing = self.out / "bad_images.txt"
            atomic_write(listing, "".join(f"{k}\t{v}\n" for k, v in sorted(self.bad.items())).encode())
            if self.display is not None:
                for name, reason in sorted(self.bad.items())[:WARN_LINES]:
                    self.display.warn(f"{self.plan.paths.get(name, name)}: {reason}")
                if len(self.bad) > WARN_LINES:
                    self.display.warn(f"... and {len(self.bad) - WARN_LINES:,} more (all in {listing})")
            raise CacheError(
                f"{len(self.bad)} image(s) could not be decoded (listed above and in {listing}); fix or replace them "
                "and run the build again (only their chunks are redone), or pass --skip-bad to record and exclude "
                "them"
            )
        self.manifest["complete"] = True
        self.manifest["build"] = {
            "seconds": round(seconds, 3),
            "decoded": self.decoded,
            "workers": self.workers,
            "decode_seconds": round(self.decode_seconds, 3),
            "images_per_s": round(r, 1) if (r := rate(self.decoded, self.decode_seconds)) is not None else None,
        }
        self.flush()
        return BuildReport(self.out, self.n, self.decoded, seconds, bad=self.bad, decode_seconds=self.decode_seconds)


def _sigterm(signum, frame) -> None:  # a kill is handled like Ctrl-C: progress is saved
    raise KeyboardInterrupt
