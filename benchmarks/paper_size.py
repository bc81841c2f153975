"""A ChestX-ray14 folder at full (or any) size in seconds: the real metadata, the official lists and the BBox
CSV, and one PNG per metadata row hard-linked from a few source PNGs (real originals or synth output).

Subset selection, splits and protocols see exactly the release's rows and lists; only the pixels repeat.
Used by the benchmarks (real-file cache build, whole-run study) and their tests.

    python benchmarks/paper_size.py --out /tmp/nih-full                 # all 112,120 rows, 4 originals
    python benchmarks/paper_size.py --out /tmp/nih-2520 --n 2520 --sources /data/nih/real/images
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "tests" / "data" / "nih"  # the real tables, kept in the repository
PER_FOLDER = 10_000  # the release's images_0NN folders hold 10,000 images each (images_001: 4,999)


def default_sources() -> list[Path]:
    """Real originals: CXRBENCH_REAL_DATA/images when set (e.g. all 200), else the four in tests/data."""
    env = os.environ.get("CXRBENCH_REAL_DATA")
    folder = Path(env) / "images" if env else TABLES / "real" / "images"
    found = sorted(folder.glob("*.png"))
    if not found:
        raise SystemExit(f"no PNGs in {folder}")
    return found


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return fh.read().splitlines()


def lay_out(root: str | Path, sources: list[Path] | None = None, n: int | None = None, tables: Path = TABLES) -> dict:
    """Write the dataset folder `root` (which must not exist or be empty) with the first `n` metadata rows
    (all when None); image k is a hard link to source k mod len(sources). Returns what it made."""
    t0 = time.perf_counter()
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} exists and is not empty")
    sources = list(sources or default_sources())
    csv = _lines(tables / "Data_Entry_2017_v2020.csv.gz")
    header, rows = csv[0], csv[1:] if n is None else csv[1 : n + 1]
    names = [r.split(",", 1)[0] for r in rows]
    keep = set(names)
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([header, *rows]) + "\n")
    for name in ("train_val_list.txt", "test_list.txt"):
        listed = [x for x in _lines(tables / "lists" / f"{name}.gz") if x in keep]
        (root / name).write_text("".join(x + "\n" for x in listed))
    bbox = _lines(tables / "BBox_List_2017.csv.gz")
    (root / "BBox_List_2017.csv").write_text(
        "\n".join([bbox[0], *(b for b in bbox[1:] if b.split(",", 1)[0] in keep)]) + "\n"
    )
    # the sources are copied once into the folder, so that every link stays on one filesystem
    src_dir = root / "_sources"
    src_dir.mkdir()
    local = []
    for i, s in enumerate(sources):
        dst = src_dir / f"{i:04d}.png"
        shutil.copyfile(s, dst)
        local.append(dst)
    folder = None
    for k, name in enumerate(names):
        if k % PER_FOLDER == 0:
            folder = root / f"images_{k // PER_FOLDER + 1:03d}" / "images"
            folder.mkdir(parents=True)
        os.link(local[k % len(local)], folder / name)  # type: ignore[operator]
    return {
        "root": str(root),
        "images": len(names),
        "sources": len(sources),
        "source_bytes": sum(p.stat().st_size for p in local),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    ap.add_argument("--n", type=int, default=None, help="first N metadata rows (default: all 112,120)")
    ap.add_argument("--sources", type=Path, default=None, help="folder of source PNGs (default: real originals)")
    args = ap.parse_args()
    sources = sorted(args.sources.glob("*.png")) if args.sources else None
    made = lay_out(args.out, sources, args.n)
    print(
        f"{made['images']:,} images hard-linked from {made['sources']} PNGs in {made['seconds']} s: {made['root']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
