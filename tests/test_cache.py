import fcntl
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrbench.cache import build as build_mod
from cxrbench.cache.build import build_cache
from cxrbench.cache.decode import resize
from cxrbench.cache.store import cache_info, open_cache, verify_cache
from cxrbench.errors import CacheError

from .conftest import REAL_CSV, REAL_PNGS

N_ROWS = 150  # three chunks of 64, 64 and 22 images


def _real_dataset(root: Path, n: int = N_ROWS) -> list[str]:
    """The first `n` rows of the real metadata, each image a copy of one of the three real PNGs, plus odd
    formats made from the real pixels: RGBA, 16-bit, RGB and a 1000x900 image."""
    with gzip.open(REAL_CSV, "rt") as fh:
        lines = [next(fh) for _ in range(n + 1)]
    (root / "images_001" / "images").mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("".join(lines))
    names = [ln.split(",")[0] for ln in lines[1:]]
    real = [p.read_bytes() for p in REAL_PNGS]
    gray = np.asarray(Image.open(REAL_PNGS[0]))
    for i, name in enumerate(names):
        out = root / "images_001" / "images" / name
        if i == 5:
            Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)]), "RGBA").save(out)
        elif i == 6:
            Image.fromarray(gray.astype(np.uint16) * 257).save(out)
        elif i == 7:
            Image.fromarray(np.dstack([gray] * 3), "RGB").save(out)
        elif i == 8:
            Image.fromarray(gray[:1000, :900]).save(out)
        else:
            out.write_bytes(real[i % 3])
    (root / "train_val_list.txt").write_text("".join(nm + "\n" for nm in names[: n - 30]))
    (root / "test_list.txt").write_text("".join(nm + "\n" for nm in names[n - 30 :]))
    return names


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    _real_dataset(root)
    return root


@pytest.fixture(scope="module")
def built(real_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c"
    build_cache(real_dir, out, workers=2)
    return out


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", ".lock")
    }


def _manifest_core(path: Path) -> dict:
    m = json.loads((path / "manifest.json").read_text())
    m.pop("build", None)
    return m


@pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr version 3")  # plain zarr, as a user sees it
def test_real_pngs_and_odd_formats(built, real_dir):
    store = open_cache(built)
    names = list(store.names())
    csv_order = [ln.split(",")[0] for ln in (real_dir / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:]]
    assert names == csv_order  # the real CSV's own order (it is not sorted by name everywhere)
    imgs = store.read(np.arange(N_ROWS))
    reduced = [np.asarray(Image.open(p).reduce(4)) for p in REAL_PNGS]
    for i in (0, 1, 2, 10, 149):
        assert np.array_equal(imgs[i], reduced[i % 3])
    for i in (5, 6, 7):  # RGBA, 16-bit and RGB of image 0's pixels give image 0's result
        assert np.array_equal(imgs[i], reduced[0])
    assert np.array_equal(imgs[8], resize(np.asarray(Image.open(REAL_PNGS[0]))[:1000, :900], 256))
    odd = store.manifest["odd_images"]
    assert odd[names[5]]["mode"] == "RGBA 8-bit" and odd[names[6]]["mode"] == "gray 16-bit"
    assert odd[names[8]]["original_shape"] == [1000, 900] and len(odd) == 4
    import zarr  # any zarr reader: no cxrbench needed

    g = zarr.open_group(str(built), mode="r")
    assert g["images"].shape == (N_ROWS, 256, 256) and g["names"][3] == names[3]
    assert tuple(g["original_shape"][8]) == (1000, 900)
    info = cache_info(built)
    assert info["complete"] and info["images_done"] == N_ROWS and 0 < info["bytes_per_image"] < 65536
    assert store.manifest["inputs"]["Data_Entry_2017_v2020.csv"]["sha256"]
    assert verify_cache(built) == []


def test_rebuild_is_a_no_op_and_stale_store_refused(built, real_dir, tmp_path):
    r = build_cache(real_dir, built)
    assert r.up_to_date and r.decoded == 0
    with pytest.raises(CacheError, match=r"size 256 -> 128"):
        build_cache(real_dir, built, size=128)
    with pytest.raises(CacheError, match=r"decoder 'cxr' -> 'pillow'"):
        build_cache(real_dir, built, decoder="pillow")
    changed = tmp_path / "changed"
    changed.mkdir()
    for p in real_dir.iterdir():
        (changed / p.name).symlink_to(p)
    (changed / "Data_Entry_2017_v2020.csv").unlink()
    text = (real_dir / "Data_Entry_2017_v2020.csv").read_text().replace("Cardiomegaly|Emphysema", "Emphysema", 1)
    (changed / "Data_Entry_2017_v2020.csv").write_text(text)
    with pytest.raises(CacheError, match=r"Data_Entry_2017_v2020.csv changed.*not reused"):
        build_cache(changed, built)


@pytest.mark.slow
def test_bad_files_fail_at_the_end_then_skip_bad(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    names = _real_dataset(root, 70)
    imgdir = root / "images_001" / "images"
    (imgdir / names[1]).write_bytes(b"")
    data = REAL_PNGS[0].read_bytes()
    (imgdir / names[2]).write_bytes(data[: len(data) // 3])
    buf = io.BytesIO()
    Image.open(REAL_PNGS[0]).save(buf, format="JPEG")
    (imgdir / names[66]).write_bytes(buf.getvalue())
    (imgdir / names[67]).unlink()
    out = tmp_path / "c"
    with pytest.raises(CacheError, match=r"4 image\(s\) could not be decoded .*--skip-bad"):
        build_cache(root, out, workers=1)
    listing = (out / "bad_images.txt").read_text()
    for nm, why in (
        (names[1], "empty file"),
        (names[2], "truncated"),
        (names[66], "JPEG data"),
        (names[67], "missing file"),
    ):
        assert f"{nm}\t" in listing and why in listing.split(nm)[1].split("\n")[0]
    with pytest.raises(CacheError, match="not complete"):
        open_cache(out)
    r = build_cache(root, out, workers=1, skip_bad=True)
    assert r.decoded == 70 and len(r.bad) == 4  # both chunks held a bad file, so both were redone
    store = open_cache(out)
    assert store.bad() == {names[1], names[2], names[66], names[67]}
    assert open_cache(out).manifest["bad_images"][0]["reason"]


@pytest.mark.slow
def test_fixed_files_redo_only_their_chunks(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    names = _real_dataset(root, 130)
    imgdir = root / "images_001" / "images"
    good = (imgdir / names[70]).read_bytes()
    (imgdir / names[70]).write_bytes(b"")
    out = tmp_path / "c"
    with pytest.raises(CacheError):
        build_cache(root, out, workers=1)
    (imgdir / names[70]).write_bytes(good)
    r = build_cache(root, out, workers=1)
    assert r.decoded == 64  # only chunk 1 was decoded again
    assert open_cache(out).bad() == set()


def interrupt_build(data: Path, out: Path, monkeypatch, at: int) -> None:
    """Build `out` from `data` with one worker and stop it (Ctrl-C) as its `at`-th chunk starts."""
    calls = {"n": 0}
    orig = build_mod.process_chunk

    def interrupted(task):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return orig(task)

    monkeypatch.setattr(build_mod, "process_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(data, out, workers=1)
    monkeypatch.setattr(build_mod, "process_chunk", orig)


@pytest.mark.slow
def test_interrupt_and_resume_is_bitwise_identical(built, real_dir, tmp_path, monkeypatch):
    out = tmp_path / "c"
    interrupt_build(real_dir, out, monkeypatch, at=2)
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and len(m["chunks"]["checksums"]) == 1
    with pytest.raises(CacheError, match="not complete"):
        open_cache(out)
    r = build_cache(real_dir, out, workers=2)
    assert r.decoded == N_ROWS - 64
    assert _files(out) == _files(built)
    assert _manifest_core(out) == _manifest_core(built)


def kill_when_a_chunk_is_recorded(proc: subprocess.Popen, out: Path, ready=lambda: True) -> None:
    """SIGKILL the build process `proc` once the manifest of `out` records a chunk and `ready()` holds."""
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            mp = out / "manifest.json"
            if ready() and mp.exists() and json.loads(mp.read_text()).get("chunks", {}).get("checksums"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the build recorded no chunk")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_killed_build_resumes_bitwise_identical(built, real_dir, tmp_path):
    out = tmp_path / "c"
    # chunk 0 is decoded and recorded; the next one is held until the test kills the build, so the kill always
    # lands mid-build, however slow or fast the machine
    slow = (
        "import time, cxrbench.cache.build as b\n"
        "orig = b.process_chunk\n"
        "def slow(t):\n"
        "    while t.k != 0:\n"
        "        time.sleep(60)\n"
        "    return orig(t)\n"
        "b.process_chunk = slow\n"
        "b.FLUSH_SECONDS = 0\n"
        f"b.build_cache({str(real_dir)!r}, {str(out)!r}, workers=1)\n"
    )
    kill_when_a_chunk_is_recorded(subprocess.Popen([sys.executable, "-c", slow]), out)
    with pytest.raises(CacheError, match="not complete"):
        open_cache(out)
    r = build_cache(real_dir, out, workers=2)
    assert r.decoded == N_ROWS - 64  # chunk 0 was kept; the others are decoded now
    assert _files(out) == _files(built)
    assert _manifest_core(out) == _manifest_core(built)


def test_concurrent_build_fails_fast(real_dir, tmp_path, monkeypatch):
    import types

    import cxrbench.cache.workers as workers_mod

    waited: list[float] = []  # the lock is tried without blocking; the only wait is this sleep, for stale locks
    monkeypatch.setattr(workers_mod, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=waited.append))
    out = tmp_path / "c"
    out.mkdir()
    with open(out / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.write("pid 12345 on elsewhere")
        fh.flush()
        with pytest.raises(CacheError, match=r"another cache build \(pid 12345 on elsewhere\) is writing"):
            build_cache(real_dir, out)  # at once: a lock held by a live build (another host) is never waited for
    assert waited == []
    assert not (out / "manifest.json").exists()


def test_verify_names_the_damaged_chunk(built, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(built, copy)
    chunk = copy / "images" / "c" / "1" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    problems = verify_cache(copy)
    assert len(problems) == 1 and problems[0].startswith("chunk 1 (") and "damaged" in problems[0]
    r = subprocess.run([sys.executable, "-m", "cxrbench", "cache", "verify", str(copy)], capture_output=True, text=True)
    assert r.returncode == 2 and "chunk 1" in r.stderr and "Traceback" not in r.stderr


def test_readers_refuse_foreign_and_newer(tmp_path, built, real_dir):
    with pytest.raises(CacheError, match="no cache here"):
        open_cache(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    with pytest.raises(CacheError, match="not a cxrbench cache"):
        open_cache(tmp_path / "x")
    import shutil

    copy = tmp_path / "newer"
    shutil.copytree(built, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match="format version 99 is not supported"):
        open_cache(copy)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("mine")
    with pytest.raises(CacheError, match="not a cxrbench cache; choose another --out"):
        build_cache(real_dir, tmp_path / "other")


@pytest.mark.slow
def test_synth_odd_images_and_no_torch(synth_dir, tmp_path):
    out = tmp_path / "c"
    code = (
        "import sys\n"
        "from cxrbench.cli import main\n"
        f"sys.argv = ['cxrbench', 'cache', 'build', '--data-dir', {str(synth_dir)!r}, '--out', {str(out)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'cache build imported torch'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    store = open_cache(out)
    kinds = json.loads((synth_dir / "synth_manifest.json").read_text())["odd_images"]
    assert {k: v["mode"] for k, v in store.manifest["odd_images"].items()} == {
        n: {"RGBA": "RGBA 8-bit", "I16": "gray 16-bit", "RGB": "RGB 8-bit"}[k] for n, k in kinds.items()
    }
    names = list(store.names())
    for name in kinds:
        with Image.open(synth_dir / "images_001" / "images" / name) as im:
            a = np.asarray(im)
        gray = (a >> 8).astype(np.uint8) if a.dtype == np.uint16 else a[..., 0]  # synth odd images hold gray
        expect = ((gray.reshape(256, 4, 256, 4).astype(np.int64).sum((1, 3)) + 8) // 16).astype(np.uint8)
        assert np.array_equal(store.read(np.array([names.index(name)]))[0], expect)


def test_direct_chunk_writes_equal_zarrs_own(built, tmp_path):
    """cxrbench writes chunk files itself; they must be byte-for-byte what zarr writes for the same data."""
    from cxrbench.cache.store import chunk_file, create_arrays, zopen

    store = open_cache(built)
    names = list(store.names())
    create_arrays(tmp_path, names, 256)
    data = zopen(built / "images")[:]
    shapes = zopen(built / "original_shape")[:]
    zopen(tmp_path / "images", "r+")[:] = data
    zopen(tmp_path / "original_shape", "r+")[:] = shapes
    for k in range(3):  # the last chunk is a partial edge chunk
        for array in ("images", "original_shape"):
            assert chunk_file(built, array, k).read_bytes() == chunk_file(tmp_path, array, k).read_bytes()
