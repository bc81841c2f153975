"""Shared fixtures: the real NIH material kept in tests/data/nih (see its README), the optional full set of
real originals named by CXRBENCH_REAL_DATA, and small phantom sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NIH = REPO / "tests" / "data" / "nih"
REAL_CSV = NIH / "Data_Entry_2017_v2020.csv.gz"
REAL_BBOX = NIH / "BBox_List_2017.csv.gz"
OFFICIAL_LISTS = NIH / "lists"
# original PNGs as NIH distributes them: three 8-bit grayscale images and one RGBA image
REAL_ORIGINALS = sorted((NIH / "real" / "images").glob("*.png"))
REAL_PNGS = [p for p in REAL_ORIGINALS if p.name != "00000100_000.png"]  # the grayscale ones
REAL_RGBA = NIH / "real" / "images" / "00000100_000.png"
# a folder laid out like tests/data/nih/real (MANIFEST.tsv, images/*.png) with more originals, e.g. all 200
REAL_DATA_ENV = "CXRBENCH_REAL_DATA"


def real_data_dir() -> Path | None:
    """The folder named by CXRBENCH_REAL_DATA, or None when the variable is unset."""
    value = os.environ.get(REAL_DATA_ENV)
    if not value:
        return None
    path = Path(value)
    if not (path / "MANIFEST.tsv").is_file() or not (path / "images").is_dir():
        raise pytest.UsageError(f"{REAL_DATA_ENV}={value}: expected a folder with MANIFEST.tsv and images/*.png")
    return path


def real_data_or_skip() -> Path:
    """The CXRBENCH_REAL_DATA folder, or skip the test with the reason."""
    path = real_data_dir()
    if path is None:
        pytest.skip(
            f"set {REAL_DATA_ENV} to a folder of real ChestX-ray14 originals (MANIFEST.tsv, images/) to run this test"
        )
    return path


def pytest_configure(config):
    """Under pytest-xdist, each worker and every process it starts computes on its share of the cores: with
    torch's default of one thread per core, two workers on two cores run four threads and train at a fraction
    of the speed."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        share = str(max(1, (os.cpu_count() or 1) // int(workers)))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, share)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def slow_fixture(func):
    """Mark a fixture as slow to set up (it trains runs): every test that uses it, directly or through another
    fixture, is marked slow. Put it under `@pytest.fixture`."""
    func._cxrbench_slow = True
    return func


def _uses_slow_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        getattr(d.func, "_cxrbench_slow", False)
        for name in item.fixturenames
        for d in info.name2fixturedefs.get(name, ())
    )


@pytest.hookimpl(tryfirst=True)  # before -m selects: the marks added here count
def pytest_collection_modifyitems(config, items):
    """Every long test, and every test that uses a slow fixture, is also slow (so that `-m "not slow"` is the fast
    loop); GPU tests skip cleanly where no CUDA device is present."""
    for item in items:
        if "long" in item.keywords or _uses_slow_fixture(item):
            item.add_marker(pytest.mark.slow)
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def real_metadata():
    from cxrbench.data.metadata import read_metadata

    return read_metadata(REAL_CSV)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A 48-image phantom set (with the RGBA, 16-bit and RGB odd cases), written once per session."""
    from cxrbench.data.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, 48, seed=3, workers=2, compress_level=1)  # level 1: the same pixels, written in half the time
    return out


@pytest.fixture(autouse=True)
def _restore_model_registry():
    """Models registered by one test's plugins do not leak into the next test."""
    from cxrbench.models import plugins, registry

    registry._ensure_builtins()  # modules register once, at import: snapshot after that
    saved = dict(registry._REGISTRY)
    state = dict(registry._state)
    files = dict(plugins._loaded_files)
    yield
    registry._state.update(state)
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    plugins._loaded_files.clear()
    plugins._loaded_files.update(files)


@pytest.fixture(scope="session")
def synth_cache(synth_dir, tmp_path_factory) -> Path:
    """The 48-image phantom set built into a cache."""
    from cxrbench.cache.build import build_cache

    out = tmp_path_factory.mktemp("synth_cache") / "cache"
    build_cache(synth_dir, out, workers=1)
    return out


def _synth_cache(tmp_path_factory, n: int, seed: int) -> Path:
    from cxrbench.cache.build import build_cache
    from cxrbench.data.synth import generate

    data = tmp_path_factory.mktemp(f"synth{n}")
    generate(data, n, seed=seed, compress_level=1)
    build_cache(data, data / "cache")
    return data / "cache"


@pytest.fixture(scope="session")
def synth300_cache(tmp_path_factory) -> Path:
    """A 300-image phantom set in a cache: big enough for a model to learn the planted findings."""
    return _synth_cache(tmp_path_factory, 300, 11)


@pytest.fixture(scope="session")
def synth1000_cache(tmp_path_factory) -> Path:
    """A 1000-image phantom set in a cache: enough for stable comparisons between runs."""
    return _synth_cache(tmp_path_factory, 1000, 1)


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(run folder, image name -> original PNG): 24 images laid out as NIH does, each a hard link to one of the
    four real originals in tests/data (three 8-bit grey, one RGBA), cached and trained on under smoke."""
    from benchmarks.paper_size import lay_out
    from cxrbench.cache.build import build_cache
    from cxrbench.run import RunOptions, run

    root = tmp_path_factory.mktemp("api_real")
    lay_out(root / "nih", REAL_ORIGINALS, n=24)
    build_cache(root / "nih", root / "cache", workers=1)
    rec = run(
        RunOptions(model="tiny", protocol="smoke", cache=str(root / "cache"), out=str(root / "runs"), device="cpu")
    )
    files = {p.name: p for p in (root / "nih").glob("images_*/images/*.png")}
    return rec.parent, files
