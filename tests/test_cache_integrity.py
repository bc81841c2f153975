"""The cache against damage and hostile input: checked reads, verify of everything a run reads, repair,
killed builds and stale locks, a full disk, pixel bombs, decoder errors, symlinks, library versions, and a
dataset that is mostly missing (docs/integrity.md, "The cache", lists each scenario with its test)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from cxrbench.cache import build as build_mod
from cxrbench.cache import store as store_mod
from cxrbench.cache import workers as workers_mod
from cxrbench.cache.build import build_cache
from cxrbench.cache.decode import available_decoders, decode_resized
from cxrbench.cache.png import MAX_PIXELS, DecodeError, describe_non_png
from cxrbench.cache.repair import repair_cache
from cxrbench.cache.store import CacheStore, chunk_file, open_cache, verify_cache, write_chunks, zopen
from cxrbench.errors import CacheError
from cxrbench.run import RunOptions, run

from .conftest import REAL_ORIGINALS
from .pngutil import _chunk, png_bytes
from .test_cache import (  # noqa: F401  (built, real_dir: the same module fixtures)
    N_ROWS,
    _files,
    _manifest_core,
    _real_dataset,
    built,
    interrupt_build,
    kill_when_a_chunk_is_recorded,
    real_dir,
)

BACKENDS = available_decoders()


class Recorder:
    """A display that keeps what a command said (info and warn lines, in order)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warn(self, message: str) -> None:
        self.lines.append(("warn", message))

    @contextmanager
    def progress(self, description, total, unit="images"):
        self.lines.append(("progress", description))

        class Bar:
            def advance(self, n=1):
                pass

            def update(self, **kw):
                pass

        yield Bar()

    def said(self, kind: str) -> list[str]:
        return [m for k, m in self.lines if k == kind]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _flip_byte(f: Path) -> None:
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))


def _rewrite_pixels(cache: Path, k: int) -> None:
    """Replace chunk k by a well-formed chunk file whose pixels differ in one value: only a checksum sees it."""
    m = json.loads((cache / "manifest.json").read_text())
    store = CacheStore(cache, m, check_reads=False)
    block = store.read_chunk(k).copy()
    block[0, 10, 10] ^= 1
    shapes = zopen(cache / "original_shape")[k * 64 : k * 64 + len(block)]
    write_chunks(cache, k, block, shapes)


def _opts(cache: Path, out: Path) -> RunOptions:
    return RunOptions(model="tiny", protocol="smoke", cache=str(cache), out=str(out), device="cpu")


def _no_record(out: Path) -> bool:
    return not list(out.rglob("record.json")) if out.exists() else True


# ---------------------------------------------------------------- 8: a run never reads pixels the build did not write


@pytest.mark.parametrize("damage", ["deleted", "flipped byte", "other pixels"])
def test_run_refuses_a_damaged_chunk(synth_cache, tmp_path, damage):
    cache = _copy(synth_cache, tmp_path / "cache")
    f = chunk_file(cache, "images", 0)
    {"deleted": f.unlink, "flipped byte": lambda: _flip_byte(f), "other pixels": lambda: _rewrite_pixels(cache, 0)}[
        damage
    ]()
    out = tmp_path / "runs"
    with pytest.raises(CacheError) as e:
        run(_opts(cache, out))
    msg = str(e.value)
    assert str(f) in msg and "chunk 0" in msg and ("missing" in msg if damage == "deleted" else "damaged" in msg)
    assert f"cxrbench cache verify {cache}" in msg and f"cxrbench cache repair {cache}" in msg
    assert _no_record(out)


def test_a_chunk_changed_after_its_first_read_is_checked_again(synth_cache, tmp_path):
    cache = _copy(synth_cache, tmp_path / "cache")
    store = open_cache(cache)
    first = store.read(np.arange(store.n_images))
    assert np.array_equal(store.read(np.arange(5)), first[:5])  # the second read trusts the unchanged file
    _rewrite_pixels(cache, 0)
    with pytest.raises(CacheError, match=r"chunk 0 .* is damaged: checksum"):
        store.read(np.arange(5))


@pytest.mark.slow
def test_read_benchmark_on_a_hard_linked_dataset(tmp_path):
    """benchmarks/cache_read.py measures on a dataset laid out with hard links (which the build accepts)."""
    from benchmarks.cache_read import measure
    from benchmarks.paper_size import lay_out

    lay_out(tmp_path / "nih", REAL_ORIGINALS, n=130)
    build_cache(tmp_path / "nih", tmp_path / "c", workers=1)
    r = measure(tmp_path / "c", rounds=1)
    assert r["images"] == 130 and r["chunks"] == 3
    assert set(r["ms_per_chunk"]) == {"unchecked", "checked_cold", "checked_warm", "zarr"}
    assert r["checked_cold_vs_unchecked"] > 0 and r["checksum_ms_per_chunk"] is not None


def test_unchecked_baseline_reads_the_same_pixels(built):
    store = open_cache(built)
    fast = CacheStore(built, store.manifest, check_reads=False)
    pos = np.array([149, 3, 70, 64, 0])
    assert np.array_equal(store.read(pos), fast.read(pos))
    assert np.array_equal(store.read(pos), zopen(built / "images")[:][pos])


# ---------------------------------------------------------------- 9: verify checks everything a run reads


def _edit_names(cache: Path) -> None:
    arr = zopen(cache / "names", "r+")
    names = arr[:]
    names[[0, 1]] = names[[1, 0]]
    arr[:] = names


def _edit_table(cache: Path) -> None:
    f = cache / "tables" / "test_list.txt"
    f.write_text(f.read_text() + "00000001_000.png\n")


def test_verify_names_every_damaged_array_and_table(built, tmp_path):
    cache = _copy(built, tmp_path / "c")
    chunk_file(cache, "images", 0).unlink()
    _flip_byte(chunk_file(cache, "original_shape", 2))
    _edit_names(cache)
    _edit_table(cache)
    (cache / "tables" / "Data_Entry_2017.csv").write_text("Image Index\n")  # would shadow nothing, still refused
    problems = verify_cache(cache)
    text = "\n".join(problems)
    assert "chunk 0 (" in text and "is missing" in text
    assert "original_shape chunk 2 (" in text
    assert f"{cache / 'names'}: the image names differ" in text
    assert "test_list.txt: content differs" in text and "Data_Entry_2017.csv: not written by the cache build" in text
    assert len(problems) == 5


def test_original_shape_checksums_are_recorded(built):
    m = json.loads((built / "manifest.json").read_text())
    assert set(m["chunks"]["shape_checksums"]) == {"0", "1", "2"}


@pytest.mark.parametrize("edit", ["names", "table", "extra table"])
def test_run_refuses_edited_names_or_tables(synth_cache, tmp_path, edit):
    cache = _copy(synth_cache, tmp_path / "cache")
    if edit == "names":
        _edit_names(cache)
    elif edit == "table":
        f = next((cache / "tables").glob("Data_Entry*"))
        f.write_bytes(f.read_bytes().replace(b"No Finding", b"Hernia", 1))
    else:
        (cache / "tables" / "splits" / "mine_test.txt").write_text("x.png\n")
    out = tmp_path / "runs"
    with pytest.raises(
        CacheError,
        match={
            "names": r"names: the image names differ",
            "table": r"content differs",
            "extra table": r"mine_test.txt: not written by the cache build",
        }[edit],
    ):
        run(_opts(cache, out))
    assert _no_record(out)


# ---------------------------------------------------------------- 10: repair


def test_repair_redecodes_only_the_damaged_chunks_bitwise(built, real_dir, tmp_path, monkeypatch):
    cache = _copy(built, tmp_path / "c")
    chunk_file(cache, "images", 0).unlink()
    _flip_byte(chunk_file(cache, "images", 2))
    with pytest.raises(CacheError, match=r"chunk files are missing .*cxrbench cache repair"):
        build_cache(real_dir, cache)  # not "complete and up to date"
    seen = []
    orig = build_mod.process_chunk

    def spy(task):
        seen.append(task.k)
        return orig(task)

    monkeypatch.setattr(build_mod, "process_chunk", spy)
    r = repair_cache(cache, real_dir, workers=1)
    assert sorted(seen) == [0, 2] and r.chunks == [0, 2] and r.decoded == 64 + (N_ROWS - 128)
    assert _files(cache) == _files(built)
    assert (cache / "manifest.json").read_bytes() == (built / "manifest.json").read_bytes()
    assert verify_cache(cache) == []
    seen.clear()
    assert repair_cache(cache, real_dir, workers=1).nothing_to_do and seen == []


def test_repair_rewrites_names_and_tables(built, real_dir, tmp_path):
    cache = _copy(built, tmp_path / "c")
    _edit_names(cache)
    _edit_table(cache)
    (cache / "tables" / "splits" / "extra_test.txt").write_text("x\n")
    r = repair_cache(cache, real_dir, workers=1)
    assert r.names and len(r.tables) == 2 and r.chunks == []
    assert _files(cache) == _files(built)


def test_repair_never_writes_pixels_that_differ_from_the_build(built, real_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(real_dir, data)
    names = list(open_cache(built).names())
    png = data / "images_001" / "images" / names[70]
    png.write_bytes((data / "images_001" / "images" / names[71]).read_bytes())  # another image's pixels
    cache = _copy(built, tmp_path / "c")
    chunk_file(cache, "images", 1).unlink()
    with pytest.raises(CacheError, match=r"chunk\(s\) 1 decoded again .* do not match the checksums"):
        repair_cache(cache, data, workers=1)
    assert not chunk_file(cache, "images", 1).exists()


@pytest.mark.slow
def test_repair_cli(built, real_dir, tmp_path):
    cache = _copy(built, tmp_path / "c")
    _flip_byte(chunk_file(cache, "images", 1))
    cli = [sys.executable, "-m", "cxrbench", "cache"]
    r = subprocess.run([*cli, "verify", str(cache)], capture_output=True, text=True)
    assert r.returncode == 2 and "chunk 1 (" in r.stderr and "cxrbench cache repair" in r.stderr
    r = subprocess.run(
        [*cli, "repair", str(cache), "--data-dir", str(real_dir), "--workers", "1"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "1 chunk(s) decoded again (1; 64 images)" in r.stderr
    assert _files(cache) == _files(built)


@pytest.mark.slow
def test_resume_redecodes_recorded_chunks_whose_files_are_gone(built, real_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    interrupt_build(real_dir, out, monkeypatch, at=3)
    chunk_file(out, "images", 0).unlink()
    r = build_cache(real_dir, out, workers=1)
    assert r.decoded == 64 + (N_ROWS - 128)
    assert _files(out) == _files(built)


# ---------------------------------------------------------------- 11: workers die with their parent; stale locks

_KILLABLE = """
import os, sys, time
import cxrbench.cache.build as b
pids, real_dir, out = sys.argv[1:4]
orig = b.process_chunk
def slow(t):  # chunk 0 is decoded; the others are held until the test kills the build (and with it, them)
    open(os.path.join(pids, str(os.getpid())), "w").close()
    while t.k != 0:
        time.sleep(60)
    return orig(t)
b.process_chunk = slow
b.FLUSH_SECONDS = 0
b.build_cache(real_dir, out, workers=2)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.mark.slow
def test_killing_the_parent_leaves_no_worker_and_the_next_build_resumes(built, real_dir, tmp_path):
    out, pids = tmp_path / "c", tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(pids), str(real_dir), str(out)])
    kill_when_a_chunk_is_recorded(proc, out, ready=lambda: len(list(pids.iterdir())) >= 2)  # both workers busy
    workers = [int(p.name) for p in pids.iterdir()]
    t = time.time()
    while time.time() - t < 60 and not all(_gone(p) for p in workers):  # a bound on a wait, not a pass mark
        time.sleep(0.05)
    alive = [p for p in workers if not _gone(p)]
    for p in alive:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their killed parent"
    r = build_cache(real_dir, out, workers=2)
    assert r.decoded == N_ROWS - 64  # chunk 0 was kept; the two held chunks are decoded now
    assert _files(out) == _files(built)
    assert _manifest_core(out) == _manifest_core(built)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_of_a_dead_build_is_taken_over(real_dir, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    pid = _dead_pid()
    (out / ".lock").write_text(f"pid {pid} on {os.uname().nodename}")
    d = Recorder()
    build_cache(real_dir, out, workers=1, display=d)
    assert any(f"stale lock (its build, pid {pid}, is no longer running)" in m for m in d.said("info"))
    assert open_cache(out).n_images == N_ROWS
    # a build that ended names no owner in its lock, so the next command says nothing about a stale lock
    assert (out / ".lock").read_text() == ""
    d = Recorder()
    build_cache(real_dir, out, workers=1, display=d)
    assert not any("stale" in m for m in d.said("info"))


def test_stale_lock_still_held_is_named_as_such(real_dir, tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(workers_mod, "LOCK_STALE_WAIT", 0.5)
    out = tmp_path / "c"
    out.mkdir()
    pid = _dead_pid()
    with open(out / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write(f"pid {pid} on {os.uname().nodename}")
        fh.flush()
        with pytest.raises(
            CacheError,
            match=rf"stale lock: the build that took it \(pid {pid} .*\) is no longer "
            r"running, but another process still holds",
        ):
            build_cache(real_dir, out)


# ---------------------------------------------------------------- 12: disk full


def _fail_fsync(monkeypatch, predicate) -> None:
    """Make fsync raise ENOSPC for files whose path satisfies `predicate` (the real write path otherwise)."""
    real = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if predicate(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(store_mod.os, "fsync", fsync)


def _temp_files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if ".tmp" in p.name]


_DISK_FULL = """
import errno, os, sys
import cxrbench.cache.store as s
from cxrbench.cache.build import build_cache
from cxrbench.errors import CacheError
real = os.fsync
def fsync(fd):
    if os.sep + "c" + os.sep + "1" + os.sep in os.readlink(f"/proc/self/fd/{fd}"):  # every file of chunk 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd)
s.os.fsync = fsync
try:
    build_cache(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]))
except CacheError as e:
    print(e)
"""


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.slow
def test_disk_full_while_writing_a_chunk(built, real_dir, tmp_path, workers):
    """In a process without torch, so that the two workers fork with the failing fsync."""
    out = tmp_path / "c"
    r = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(real_dir), str(out), str(workers)], capture_output=True, text=True
    )
    msg = r.stdout.strip()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "\n" not in msg and "the disk is full while writing" in msg and "run the same command again" in msg
    assert _temp_files(out) == []
    m = json.loads((out / "manifest.json").read_text())
    assert "0" in m["chunks"]["checksums"] and "1" not in m["chunks"]["checksums"] and not m["complete"]
    r = build_cache(real_dir, out, workers=workers)
    assert r.decoded < N_ROWS
    assert _files(out) == _files(built) and _manifest_core(out) == _manifest_core(built)


@pytest.mark.slow
def test_disk_full_while_writing_the_manifest(built, real_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    state = {"chunks": 0}

    def predicate(path: str) -> bool:
        state["chunks"] += f"{os.sep}images{os.sep}c{os.sep}" in path
        return "manifest.json" in path and state["chunks"] >= 2  # after two chunks, the manifest cannot be saved

    _fail_fsync(monkeypatch, predicate)
    with pytest.raises(CacheError, match=r"the disk is full while writing .*manifest.json"):
        build_cache(real_dir, out, workers=1)
    assert _temp_files(out) == []
    assert json.loads((out / "manifest.json").read_text())["complete"] is False  # the old manifest, intact
    monkeypatch.undo()
    build_cache(real_dir, out, workers=1)
    assert _files(out) == _files(built) and _manifest_core(out) == _manifest_core(built)


def test_a_killed_writer_leaves_no_temp_file_behind(built, real_dir, tmp_path):
    cache = _copy(built, tmp_path / "c")
    stale = chunk_file(cache, "images", 1).with_name(".0.tmp99999")
    stale.write_bytes(b"half a chunk")
    assert build_cache(real_dir, cache).up_to_date
    assert not stale.exists()


# ---------------------------------------------------------------- 13: pixel limit; OpenCV errors


def _bomb() -> bytes:
    """A real 20000 x 20000 gray PNG of 389 KB: its data inflates to 400 MB of zeros (one flushed deflate segment
    of 1000 rows, repeated, then the zlib trailer: made in a fraction of a second)."""
    import struct
    import zlib

    w = h = 20000
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = deflate.compress(bytes((w + 1) * 1000)) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = ((w + 1) * h % 65521) << 16 | 1  # adler32 of n zero bytes
    idat = b"\x78\xda" + segment * (h // 1000) + b"\x03\x00" + adler.to_bytes(4, "big")
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


_RSS = """
import resource, sys
from cxrbench.cache.decode import available_decoders, decode_resized, warm_up
from cxrbench.cache.png import DecodeError
import cv2, imagecodecs, pyspng, PIL.Image
warm_up()
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for b in available_decoders():
    try:
        decode_resized(b, data, 256)
        print(b, "decoded it")
    except DecodeError as e:
        print(b, e.reason)
print("grew_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_pixel_limit_is_enforced_by_every_backend_before_allocating(tmp_path):
    data = _bomb()
    assert len(data) < 400_000
    for b in BACKENDS:
        with pytest.raises(DecodeError, match=r"too large: 20000x20000 is 400,000,000 pixels, over the limit"):
            decode_resized(b, data, 256)
    f = tmp_path / "bomb.png"
    f.write_bytes(data)
    r = subprocess.run([sys.executable, "-c", _RSS, str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all("too large" in ln for ln in lines[:-1]) and len(lines) == len(BACKENDS) + 1
    grew_mb = int(lines[-1].split()[1]) / 1024
    assert grew_mb < 50, f"decoding the bomb grew the peak RSS by {grew_mb:.0f} MB"
    assert MAX_PIXELS >= 1024 * 1024 * 16  # room for any real chest X-ray


@pytest.mark.slow
def test_opencv_error_becomes_a_per_file_decode_error(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    data = tmp_path / "data"
    data.mkdir()
    names = _real_dataset(data, 70)
    victim = data / "images_001" / "images" / names[3]
    victim.write_bytes(victim.read_bytes() + b"\0")  # a length no other file has (bytes after IEND are ignored)
    size, real = victim.stat().st_size, cv2.imdecode

    def imdecode(buf, flags):
        if len(buf) == size:
            raise cv2.error("OpenCV(5.0.0) imgcodecs: (-215:Assertion failed) decoder in function 'imdecode'")
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    with pytest.raises(DecodeError, match=r"OpenCV could not decode it: error: .*Assertion failed"):
        decode_resized("opencv", victim.read_bytes(), 256)
    out = tmp_path / "c"
    with pytest.raises(CacheError, match=r"1 image\(s\) could not be decoded"):
        build_cache(data, out, workers=1, decoder="opencv")
    listing = (out / "bad_images.txt").read_text()
    assert listing.startswith(f"{names[3]}\tOpenCV could not decode it: error:") and listing.count("\n") == 1


# ---------------------------------------------------------------- 14: symlinks outside; no echoed bytes


def test_symlink_outside_the_dataset_is_refused_unless_allowed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    names = _real_dataset(data, 70)
    imgs = data / "images_001" / "images"
    elsewhere = tmp_path / "elsewhere.png"
    shutil.move(imgs / names[4], elsewhere)
    (imgs / names[4]).symlink_to(elsewhere)
    (data / "kept").mkdir()
    shutil.move(imgs / names[5], data / "kept" / names[5])
    (imgs / names[5]).symlink_to(Path("..") / ".." / "kept" / names[5])  # inside: fine
    os.unlink(imgs / names[6])
    os.link(imgs / names[0], imgs / names[6])  # a hard link, as benchmarks/paper_size.py lays out datasets
    out = tmp_path / "c"
    with pytest.raises(
        CacheError,
        match=rf"1 image\(s\) are symbolic links that resolve outside the dataset folder "
        rf".*{names[4]} -> {elsewhere}.*--follow-links",
    ):
        build_cache(data, out, workers=1)
    assert not out.exists()
    build_cache(data, out, workers=1, follow_links=True)
    assert open_cache(out).n_images == 70


def test_error_messages_never_echo_the_bytes_of_a_non_image(tmp_path):
    secret = b"root:SECRETHASH:19000:0:99999:7:::\n"
    reason = describe_non_png(secret)
    assert reason == f"not a PNG file ({len(secret)} bytes without the PNG signature)"
    for b in BACKENDS:
        with pytest.raises(DecodeError) as e:
            decode_resized(b, secret, 256)
        assert "SECRET" not in e.value.reason and "root" not in e.value.reason
    weird = png_bytes(np.zeros((4, 4), np.uint8), filters=[0], idat_chunks=1)
    weird = weird[:33] + _chunk(b"S\x01\x02\x03", b"x") + weird[33:]
    with pytest.raises(DecodeError, match="unknown critical chunk with an invalid type"):
        decode_resized("cxr", weird, 1)
    data = tmp_path / "data"
    data.mkdir()
    names = _real_dataset(data, 70)
    (data / "images_001" / "images" / names[2]).write_bytes(secret)
    out, d = tmp_path / "c", Recorder()
    with pytest.raises(CacheError) as e:
        build_cache(data, out, workers=1, display=d)
    said = str(e.value) + "".join(m for _, m in d.lines) + (out / "bad_images.txt").read_text()
    assert "not a PNG file (" in said and "SECRET" not in said and "root:" not in said


# ---------------------------------------------------------------- 15: the fingerprint and library versions


def test_fingerprint_holds_the_pixel_changing_libraries_only(synth_dir, synth_cache, tmp_path):
    out = tmp_path / "pillow"
    build_cache(synth_dir, out, workers=1, decoder="pillow")
    for cache, changes, keeps in (
        (out, ("pillow", "numba"), ("numcodecs", "zarr", "numpy", "imagecodecs")),
        (synth_cache, ("numba",), ("numcodecs", "zarr", "opencv-python-headless", "pyspng")),
    ):
        m = json.loads((cache / "manifest.json").read_text())
        base = CacheStore(cache, m).fingerprint
        for lib in changes + keeps:
            edited = json.loads(json.dumps(m))
            edited["libraries"][lib] = "999.0"
            same = CacheStore(cache, edited).fingerprint == base
            assert same == (lib in keeps), (cache.name, lib)
    cxr = json.loads((synth_cache / "manifest.json").read_text())
    edited = json.loads(json.dumps(cxr))
    edited["libraries"]["pillow"] = "999.0"  # cxr falls back to Pillow for palette/sub-byte/interlaced PNGs
    assert CacheStore(synth_cache, edited).fingerprint != CacheStore(synth_cache, cxr).fingerprint


def test_resume_refuses_other_pixel_library_versions(real_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    interrupt_build(real_dir, out, monkeypatch, at=2)
    m = json.loads((out / "manifest.json").read_text())
    m["libraries"]["numba"] = "0.1"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match=r"numba 0.1 -> "):
        build_cache(real_dir, out, workers=1)


# ---------------------------------------------------------------- issue 12, item 7: a dataset that is mostly missing


def test_mostly_missing_dataset_stops_before_decoding(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    names = _real_dataset(data, N_ROWS)
    for nm in names[10:]:
        (data / "images_001" / "images" / nm).unlink()
    decoded = []
    monkeypatch.setattr(build_mod, "process_chunk", lambda t: decoded.append(t) or {})
    out, d = tmp_path / "c", Recorder()
    with pytest.raises(CacheError) as e:
        build_cache(data, out, workers=1, skip_bad=True, display=d)
    msg = str(e.value)
    assert f"140 of the {N_ROWS} images listed in Data_Entry_2017_v2020.csv are not under {data}" in msg
    assert f"(first: {', '.join(names[10:15])}, ...)" in msg and "Is --data-dir the ChestX-ray14 folder" in msg
    assert "nothing was decoded" in msg and decoded == [] and d.lines == []
    assert not out.exists()  # nothing written, not even the folder


def test_a_few_missing_files_are_summarised_up_front_and_bad_files_listed_briefly(tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "WARN_LINES", 3)
    data = tmp_path / "data"
    data.mkdir()
    names = _real_dataset(data, 70)
    imgs = data / "images_001" / "images"
    for nm in names[60:62]:
        (imgs / nm).unlink()
    for nm in names[10:15]:
        (imgs / nm).write_bytes(b"")
    d = Recorder()
    with pytest.raises(CacheError, match=r"7 image\(s\) could not be decoded"):
        build_cache(data, tmp_path / "c", workers=1, display=d)
    kinds = [k for k, _ in d.lines]
    assert kinds[0] == "warn" and kinds[1] == "progress"  # the summary comes before any decoding
    assert d.lines[0][1].startswith(
        f"2 of the 70 images listed in Data_Entry_2017_v2020.csv are not under {data} (first: {names[60]}, {names[61]})"
    )
    warns = d.said("warn")[1:]
    assert len(warns) == 4 and warns[-1].startswith("... and 4 more (all in ")


def test_repair_of_a_bilinear_store_decodes_with_its_resampling(synth_dir, tmp_path):
    """A store built with --resample bilinear is repaired with bilinear too, bitwise equal to its clean build."""
    built = build_cache(synth_dir, tmp_path / "bil", workers=1, resample="bilinear").path
    cache = _copy(built, tmp_path / "c")
    chunk_file(cache, "images", 0).unlink()
    r = repair_cache(cache, synth_dir, workers=1)
    assert r.chunks == [0]
    assert _files(cache) == _files(built)
    assert verify_cache(cache) == []


def test_threaded_reads_equal_one_thread_and_name_a_damaged_chunk(built, tmp_path):
    """`CacheStore.read` reads chunks on several threads: the same pixels in the asked order (unsorted,
    repeated positions), and a damaged chunk is the same one-line error naming it."""
    store = open_cache(built)
    rng = np.random.default_rng(0)
    pos = rng.integers(0, store.n_images, 300)
    pos[:5] = pos[0]  # repeats
    one = store.read(pos, threads=1)
    assert np.array_equal(store.read(pos, threads=3), one)
    assert np.array_equal(one[7], store.read(np.array([pos[7]]))[0])
    cache = _copy(built, tmp_path / "c")
    _flip_byte(chunk_file(cache, "images", 1))
    with pytest.raises(CacheError, match=r"chunk 1 .*damaged"):
        open_cache(cache).read(np.arange(open_cache(cache).n_images), threads=3)
