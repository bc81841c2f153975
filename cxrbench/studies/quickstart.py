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
    from cxrbench.explain.gallery import build_gallery
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
    from cxrbench.files import atomic_write_text, make_dirs

    make_dirs(board / "plots", root=board)
    atomic_write_text(board / "LEADERBOARD.md", render.to_markdown(groups, render.WRITTEN), root=board)
    figs = render.plots(groups, board / "plots")
    atomic_write_text(board / "index.html", render.to_html(groups, figs, board / "index.html"), root=board)
    best = groups[0].entries[0].record["run_id"] if groups else run_dirs[0].name
    d.info(f"[6/6] Grad-CAM gallery of the best run ({best})")
    page = build_gallery(runs / best, out / "gallery", n=12, display=d)
    d.info(f"done: leaderboard {board / 'index.html'}, gallery {page}")
    return {"data": data, "cache": cache, "runs": run_dirs, "leaderboard": board, "gallery": page}
