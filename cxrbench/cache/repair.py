"""`cache repair`: decode again, from the PNGs, exactly what `cache verify` reports as damaged - chunks of
`images` and `original_shape`, the names, the stored tables - and end bitwise identical to a clean build.

A re-decoded chunk is written only if it matches the checksums recorded at build time; if the PNGs or the
decoder changed since the build, the chunk is left as it is and the repair says to rebuild instead.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from cxrbench.cache import build
from cxrbench.cache.build import BuildPlan, check_sources, chunk_tasks, compare_manifests, plan_build, write_or_fail
from cxrbench.cache.decode import warm_up
from cxrbench.cache.resample import manifest_resample
from cxrbench.cache.store import (
    CHUNK_IMAGES,
    FORMAT,
    MANIFEST,
    TABLES,
    inspect_cache,
    read_manifest,
    write_names,
)
from cxrbench.cache.workers import StoreLock, execute
from cxrbench.errors import CacheError
from cxrbench.files import atomic_write, make_dirs, remove_temp_files


@dataclass
class RepairReport:
    """What a repair did: the chunks re-decoded, and whether names or tables were rewritten."""

    path: Path
    chunks: list[int]
    decoded: int
    names: bool
    tables: list[str]
    seconds: float

    @property
    def nothing_to_do(self) -> bool:
        return not (self.chunks or self.names or self.tables)


def repair_cache(
    path: str | Path, data_dir: str | Path, *, workers: int | None = None, follow_links: bool = False, display=None
) -> RepairReport:
    """Re-decode, from the PNGs in `data_dir`, exactly what `cache verify` reports as damaged (chunks, names,
    tables), and end bitwise identical to a clean build: a re-decoded chunk is written only if it matches
    the checksum recorded at build time."""
    t0 = time.perf_counter()
    out = Path(path)
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None or manifest.get("format") != FORMAT:
        raise CacheError(f"{out}: not a cxrbench cache (no {MANIFEST}); nothing to repair")
    if not manifest.get("complete"):
        raise CacheError(
            f"{out}: the cache is not complete; finish it with `cxrbench cache build` and the options "
            "it was started with (unfinished and missing chunks are decoded then)"
        )
    p = manifest["params"]
    plan = plan_build(data_dir, p["subset"], int(p["size"]), p["decoder"], manifest_resample(p))
    with StoreLock(out, display) as lock:
        remove_temp_files(out)
        manifest = read_manifest(out)
        if manifest is None:  # removed since it was read above
            raise CacheError(f"{out}: the cache's {MANIFEST} went away; nothing to repair")
        compare_manifests(manifest, plan.manifest, out)
        ctx = display.progress("verify", total=int(manifest["n_images"])) if display is not None else None
        if ctx is None:
            damage = inspect_cache(out)
        else:
            with ctx as bar:
                damage = inspect_cache(out, progress=bar)
            for note in damage.notes:
                display.info(note)
        write_or_fail(out, lambda: _repair_tables_and_names(out, plan, damage))
        decoded = 0
        if damage.chunks:
            chunk_names = [nm for k in damage.chunks for nm in plan.names[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES]]
            check_sources(plan, chunk_names, follow_links, None)
            decoded = write_or_fail(out, lambda: _redecode(out, manifest, plan, damage.chunks, workers, display, lock))
        left = inspect_cache(out).problems
        if left:
            raise CacheError(f"{out}: {len(left)} problem(s) remain after the repair (first: {left[0]})")
    return RepairReport(out, damage.chunks, decoded, damage.names, damage.tables, time.perf_counter() - t0)


def _repair_tables_and_names(out: Path, plan: BuildPlan, damage) -> None:
    """Rewrite the damaged tables from the dataset folder (the same sha256: `compare_manifests` checked it),
    remove files the build never wrote, and rewrite the names (their sha256 is checked the same way)."""
    tables = out / TABLES
    if damage.tables:
        for f in sorted(tables.rglob("*")):
            rel = f.relative_to(tables).as_posix()
            if f.is_file() and rel not in plan.tables:
                f.unlink()
        for name, src in plan.tables.items():
            dst = tables / name
            make_dirs(dst.parent, root=out)
            atomic_write(dst, src.read_bytes())
    if damage.names:
        write_names(out, plan.names)


def _redecode(
    out: Path, manifest: dict, plan: BuildPlan, chunks: list[int], workers: int | None, display, lock: StoreLock
) -> int:
    c = manifest["chunks"]
    expect = {k: (c["checksums"][str(k)], c.get("shape_checksums", {}).get(str(k))) for k in chunks}
    tasks = chunk_tasks(
        out,
        plan,
        chunks,
        int(manifest["params"]["size"]),
        manifest["params"]["decoder"],
        expect,
        manifest_resample(manifest["params"]),
    )
    mismatched: list[int] = []
    decoded = 0

    def record(res: dict) -> None:
        nonlocal decoded
        decoded += res["n"]
        if not res["written"]:
            mismatched.append(res["chunk"])

    n = sum(len(t.names) for t in tasks)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    warm_up()
    execute(build.process_chunk, tasks, workers, record, display, n, 0, lock.identity(), description="repair")
    if mismatched:
        raise CacheError(
            f"{out}: chunk(s) {', '.join(map(str, sorted(mismatched)))} decoded again from {plan.root} do not match "
            "the checksums recorded at build time (their PNGs or the decoder library changed since the build), so "
            "they were not written; rebuild the cache into a new folder instead"
        )
    return decoded
