"""Find the parts of a ChestX-ray14 folder: metadata CSV, split lists, BBox CSV and the PNGs.

The official release extracts to `images_001/images/*.png` ... `images_012/images/*.png`; a flat
`images/*.png` folder (or PNGs beside the CSV) works too. Every file may also be gzipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cxrbench.errors import InputError

METADATA_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_NAME = "train_val_list.txt"
TEST_NAME = "test_list.txt"
BBOX_NAME = "BBox_List_2017.csv"


def _find(root: Path, name: str) -> Path | None:
    for cand in (root / name, root / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


@dataclass(frozen=True)
class DatasetLayout:
    """Where each part of one dataset folder lies (`None` for an optional part that is absent)."""

    root: Path
    metadata_csv: Path
    train_val_list: Path | None
    test_list: Path | None
    bbox_csv: Path | None

    @property
    def has_official_lists(self) -> bool:
        return self.train_val_list is not None and self.test_list is not None

    def image_paths(self) -> dict[str, Path]:
        """Map image name -> path for every PNG under the recognised image folders."""
        return scan_images(self.root)

    def named_split(self, name: str) -> dict[str, Path]:
        """Files of a named split list `<name>_{train,val,test}.txt[.gz]` in the folder or its `splits/`."""
        found: dict[str, Path] = {}
        for part in ("train", "val", "test"):
            for folder in (self.root / "splits", self.root):
                p = _find(folder, f"{name}_{part}.txt")
                if p is not None:
                    found[part] = p
                    break
        if set(found) != {"train", "val", "test"}:
            missing = sorted({"train", "val", "test"} - set(found))
            raise InputError(
                self.root / "splits",
                f"named split {name!r} needs {name}_train.txt, {name}_val.txt and {name}_test.txt "
                f"(optionally .gz); missing: {', '.join(missing)}",
            )
        return found


def discover(data_dir: str | Path) -> DatasetLayout:
    """Locate the metadata CSV, split lists and BBox CSV in `data_dir`; the CSV is required."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, "not a directory")
    csv = next((p for n in METADATA_NAMES if (p := _find(root, n)) is not None), None)
    if csv is None:
        raise InputError(root, f"no metadata CSV found (expected {' or '.join(METADATA_NAMES)}, optionally .gz)")
    return DatasetLayout(
        root=root,
        metadata_csv=csv,
        train_val_list=_find(root, TRAIN_VAL_NAME),
        test_list=_find(root, TEST_NAME),
        bbox_csv=_find(root, BBOX_NAME),
    )


def scan_images(root: Path) -> dict[str, Path]:
    """PNG files in `images_NNN/images/`, `images_NNN/`, `images/` or `root` itself, by name."""
    folders: list[Path] = []
    with os.scandir(root) as it:
        subdirs = sorted(e.name for e in it if e.is_dir())
    for d in subdirs:
        if d.startswith("images_"):
            inner = root / d / "images"
            folders.append(inner if inner.is_dir() else root / d)
    if (root / "images").is_dir():
        folders.append(root / "images")
    folders.append(root)
    out: dict[str, Path] = {}
    for folder in folders:
        with os.scandir(folder) as it:
            for e in it:
                if not e.name.endswith(".png"):
                    continue
                first = out.get(e.name)
                if first is None:
                    out[e.name] = Path(e.path)
                elif not _same_bytes(first, Path(e.path)):
                    raise InputError(
                        root,
                        f"image {e.name} is in two folders with different content: {first} and {e.path}; "
                        "keep the right one and remove the other",
                    )
    return out


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (a copy of one image in two folders is harmless)."""
    import filecmp

    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def links_outside(root: Path, paths: dict[str, Path]) -> dict[str, Path]:
    """Images whose real path (every symlink resolved) lies outside `root`: name -> real path.

    Hard links are ordinary files and stay inside. One stat per file; folders are resolved once each.
    """
    top = Path(os.path.realpath(root))
    folders: dict[Path, Path] = {}
    out: dict[str, Path] = {}
    for name, p in paths.items():
        real_folder = folders.get(p.parent)
        if real_folder is None:
            real_folder = folders[p.parent] = Path(os.path.realpath(p.parent))
        real = Path(os.path.realpath(p)) if os.path.islink(p) else real_folder / p.name
        if not real.is_relative_to(top):
            out[name] = real
    return out
