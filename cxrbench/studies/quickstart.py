"""`cxrbench quickstart`: the whole pipeline on a phantom set, for a first look - synth, cache, two models
under the `smoke` protocol, submit, leaderboard, gallery. Re-running reuses every step already done."""

from __future__ import annotations

from pathlib import Path

QUICK_N = 800
QUICK_SEED = 0
QUICK_MODELS = ("tiny", "tiny_attn")


def quickstart(out: str | Path = "cxrbench-quickstart", device: str = "auto", n: int = QUICK_N, display=None) -> dict:
    """Run (or finish) the quickstart in `out`; returns the paths it made."""
    from cxrbench.cache.build import build_cache
    from cxrbench.console import get_display
    from cxrbench.data.synth import generate
    from cxrbench.errors import RecordError
    from cxrbench.protocols import get_protocol
    from cxrbench.results import render
    from cxrbench.results.leaderboard import load, rank, submit
    from cxrbench.run import RunOptions, default_run_id, run_or_reuse

    d = display or get_display()
    out = Path(out)
    data, cache, runs, board = out / "phantom", out / "cache", out / "runs", out / "leaderboard"
    d.info(f"[1/6] phantom ChestX-ray14 set ({n} images, NIH layout) in {data}")
    with d.progress("synth", total=n) as bar:
        # zlib level 1: the same pixels (PNG is lossless), each image written about 2x faster than at level 6
        generate(data, n, seed=QUICK_SEED, compress_level=1, progress=bar)
    d.info(f"[2/6] cache: decode every PNG once into {cache}")
    r = build_cache(data, cache, display=d)
    if r.up_to_date:
        d.info("      already built")
    p = get_protocol("smoke")
    run_dirs = []
    for i, model in enumerate(QUICK_MODELS):
        d.info(f"[{3 + i}/6] train and score {model} under the `smoke` protocol")
        run_or_reuse(RunOptions(model=model, protocol="smoke", cache=str(cache), out=str(runs), device=device), d)
        run_dirs.append(runs / default_run_id(model, p, p.lrs[0]))
    d.info(f"[5/6] submit both runs to the local leaderboard {board} and rank them")
    for rd in run_dirs:
        try:
            submit(rd, board, allow_dirty=True)
        except RecordError as e:
            if "already on the leaderboard" not in str(e):
                raise
    groups = rank(load(board, d), "smoke")
    render.to_table(groups, d)
    best = groups[0].entries[0].record["run_id"] if groups else run_dirs[0].name
    page = write_pages(groups, board, runs / best, cache, out / "gallery", d)
    d.info(f"done: leaderboard {board / 'index.html'}, gallery {page}")
    return {"data": data, "cache": cache, "runs": run_dirs, "leaderboard": board, "gallery": page}


STAMP = ".quickstart-pages.json"  # in OUT: what the board pages and the gallery were last made from
BOARD_PAGES = ("LEADERBOARD.md", "index.html", "plots")


def write_pages(groups, board: Path, best: Path, cache: Path, gallery: Path, display, n: int = 12) -> Path:
    """The board's Markdown and HTML (with plots) and the gallery of the best run, each written only when what it
    is made from changed since the last time (the board's filed entries, the run folder and its cache, the code
    that draws them) or a page is missing: a second quickstart leaves them untouched. Returns the gallery page."""
    from cxrbench.cache.constants import MANIFEST
    from cxrbench.explain.gallery import build_gallery
    from cxrbench.files import atomic_write_json, atomic_write_text, make_dirs
    from cxrbench.results import render

    stamp_file = gallery.parent / STAMP
    old = _read_stamp(stamp_file)
    code = _code_fingerprint()
    made_of = {
        "board": _fingerprint([board], skip={board / name for name in (*BOARD_PAGES, ".submit.lock")}, extra=code),
        "gallery": _fingerprint([best, cache / MANIFEST], skip={best / "gallery"}, extra=f"{code} n={n}"),
    }
    if old.get("board") != made_of["board"] or not all((board / name).exists() for name in BOARD_PAGES):
        make_dirs(board / "plots", root=board)
        atomic_write_text(board / "LEADERBOARD.md", render.to_markdown(groups, render.WRITTEN), root=board)
        figs = render.plots(groups, board / "plots")
        atomic_write_text(board / "index.html", render.to_html(groups, figs, board / "index.html"), root=board)
    else:
        display.info("      leaderboard pages unchanged")
    page = gallery / "index.html"
    display.info(f"[6/6] Grad-CAM gallery of the best run ({best.name})")
    if old.get("gallery") != made_of["gallery"] or not page.exists():
        page = build_gallery(best, gallery, n=n, display=display)
    else:
        display.info("      already made")
    atomic_write_json(stamp_file, made_of)
    return page


def _read_stamp(path: Path) -> dict:
    """The last stamp, or {} (none yet, or unreadable: everything is made again)."""
    from cxrbench.errors import CxrbenchError
    from cxrbench.files import read_json

    try:
        got = read_json(path, 1 << 16, "quickstart stamp") if path.exists() else {}
    except (CxrbenchError, OSError):
        return {}
    return got if isinstance(got, dict) else {}


def _fingerprint(folders: list[Path], skip: set[Path], extra: str) -> str:
    """sha256 over every regular file under `folders` (its path and bytes), leaving out `skip`."""
    import hashlib

    from cxrbench.hashing import file_sha256

    h = hashlib.sha256(extra.encode())
    for folder in folders:
        for f in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
            if any(f == s or s in f.parents for s in skip) or f.is_symlink() or not f.is_file():
                continue
            h.update(f"{f.relative_to(folder.parent)}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _code_fingerprint() -> str:
    """The cxrbench version and the sources of what draws the pages (a changed renderer makes them again)."""
    import hashlib

    import cxrbench

    h = hashlib.sha256(cxrbench.__version__.encode())
    root = Path(cxrbench.__file__).parent
    for f in sorted([*(root / "results").glob("*.py"), *(root / "explain").glob("*.py")]):
        h.update(f.read_bytes())
    return h.hexdigest()
