"""`cxrbench synth`: a phantom ChestX-ray14 in the exact NIH layout, with findings planted at known boxes.

Labels, label co-occurrence, ages, sexes, views and images per patient follow the real metadata's
frequencies (`resources/synth_stats.json`). Each finding is drawn as its own visible pattern inside a box
that is written to `BBox_List_2017.csv` (for all 14 findings, spelled as the real file spells them), so a
small model can learn the findings and a heatmap can be scored against the boxes. A few images take the
real release's odd formats (RGBA, RGB, 16-bit) so later stages meet them.

Every image depends only on (seed, image number): the set is identical whatever the worker count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrbench.data.labels import FINDINGS, NO_FINDING

if TYPE_CHECKING:
    import PIL.Image

GENERATOR_VERSION = 1
SIZE = 1024
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BBOX_SPELLING = {"Infiltration": "Infiltrate"}
MANIFEST = "synth_manifest.json"

# Where each finding's box centre is drawn (x range, y range) and its size range (w, h), 1024-px space.
_LUNGS = ((210, 820), (300, 720))
_BOX_RULES: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "Atelectasis": ((230, 800), (420, 700), (180, 280), (90, 140)),
    "Cardiomegaly": ((520, 600), (560, 640), (300, 380), (220, 300)),
    "Effusion": ((260, 770), (700, 760), (200, 280), (130, 180)),
    "Infiltration": (*_LUNGS, (170, 260), (170, 260)),
    "Mass": (*_LUNGS, (150, 230), (150, 230)),
    "Nodule": (*_LUNGS, (90, 140), (90, 140)),
    "Pneumonia": (*_LUNGS, (180, 260), (180, 260)),
    "Pneumothorax": ((260, 770), (260, 360), (180, 240), (150, 220)),
    "Consolidation": (*_LUNGS, (150, 230), (150, 230)),
    "Edema": (*_LUNGS, (200, 280), (200, 280)),
    "Emphysema": (*_LUNGS, (170, 240), (170, 240)),
    "Fibrosis": (*_LUNGS, (180, 260), (180, 260)),
    "Pleural_Thickening": ((200, 830), (330, 680), (110, 160), (220, 320)),
    "Hernia": ((470, 560), (740, 800), (160, 210), (140, 190)),
}


@dataclass(frozen=True)
class SynthImage:
    """One phantom image's metadata and planted boxes."""

    name: str
    labels: tuple[str, ...]
    patient: int
    follow_up: int
    age: int
    sex: str
    view: str
    boxes: tuple[tuple[str, float, float, float, float], ...]
    kind: str  # "L" (8-bit gray), "RGBA", "RGB" or "I16"


@lru_cache(maxsize=1)
def _stats() -> dict:
    text = resources.files("cxrbench.data").joinpath("resources/synth_stats.json").read_text()
    return json.loads(text)


def plan(n: int, seed: int = 0, odd: bool = True) -> list[SynthImage]:
    """The metadata of `n` phantom images (names sorted as in the real CSV)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    st = _stats()
    rng = np.random.default_rng([seed, 0x5EED])
    combos = list(st["label_combinations"])
    p = np.array(list(st["label_combinations"].values()), dtype=np.float64)
    p /= p.sum()
    hist = np.array(st["images_per_patient_hist"], dtype=np.float64)
    cap = int(min(len(hist), max(3, n // 40)))
    hist = hist[:cap] / hist[:cap].sum()
    images: list[SynthImage] = []
    patient = 0
    while len(images) < n:
        patient += 1
        k = min(int(rng.choice(cap, p=hist)) + 1, n - len(images))
        sex = "M" if rng.random() < st["p_male"] else "F"
        base_age = None
        for fu in range(k):
            combo = combos[int(rng.choice(len(combos), p=p))]
            labels = tuple(combo.split("|"))
            finding = combo != NO_FINDING
            mu, sd = st["age_finding"] if finding else st["age_no_finding"]
            if base_age is None:
                base_age = int(np.clip(round(rng.normal(mu, sd)), 1, 95))
            age = min(95, base_age + fu // 4)
            p_ap = st["p_ap_given_finding"] if finding else st["p_ap_given_no_finding"]
            view = "AP" if rng.random() < p_ap else "PA"
            boxes = tuple(_draw_box(lab, rng) for lab in labels if lab != NO_FINDING)
            images.append(SynthImage(f"{patient:08d}_{fu:03d}.png", labels, patient, fu, age, sex, view, boxes, "L"))
    if odd and n >= 6:
        for pos, kind in ((n // 3, "RGBA"), (n // 2, "I16"), ((2 * n) // 3, "RGB")):
            im = images[pos]
            images[pos] = SynthImage(
                im.name, im.labels, im.patient, im.follow_up, im.age, im.sex, im.view, im.boxes, kind
            )
    return images


def _draw_box(label: str, rng: np.random.Generator) -> tuple[str, float, float, float, float]:
    (x0, x1), (y0, y1), (w0, w1), (h0, h1) = _BOX_RULES[label]
    w, h = rng.uniform(w0, w1), rng.uniform(h0, h1)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    x = float(np.clip(cx - w / 2, 0, SIZE - w))
    y = float(np.clip(cy - h / 2, 0, SIZE - h))
    return (label, x, y, float(w), float(h))


def render(im: SynthImage, seed: int, index: int) -> np.ndarray:
    """The 1024x1024 image as float32 in [0, 1] (anatomy + planted findings + noise)."""
    img = _anatomy(np.random.default_rng([seed, index, 1]))
    lesions = np.random.default_rng([seed, index, 2])
    for lab, x, y, w, h in im.boxes:
        _plant(img, lab, x, y, w, h, lesions)
    noise = np.random.default_rng([seed, index, 3])
    img += noise.normal(0.0, 0.0015, img.shape).astype(np.float32)  # fine detector noise
    return np.clip(img, 0.0, 1.0)


def _anatomy(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    n = 256
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    sx, sy = rng.uniform(0.95, 1.05, 2)
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    x = (xx - 0.5 - dx) / sx
    y = (yy - 0.5 - dy) / sy
    a = np.full((n, n), 0.08, np.float32)
    body = (x / 0.46) ** 2 + (y / 0.62) ** 2 < 1
    a[body] = 0.55
    for side in (-1, 1):
        lung = ((x - side * 0.19) / 0.15) ** 2 + ((y + 0.03) / 0.29) ** 2
        a = np.where(lung < 1, 0.26 + 0.05 * lung, a)
    spine = np.abs(x) < 0.045
    a = np.where(spine & body, 0.78, a)
    heart = ((x - 0.06) / 0.14) ** 2 + ((y - 0.12) / 0.11) ** 2 < 1
    a = np.where(heart, 0.68, a)
    ribs = (np.cos(2 * np.pi * (y * 9 + 1.5 * x * x)) > 0.7) & (np.abs(x) < 0.36) & (np.abs(y) < 0.3)
    a = a + 0.07 * ribs
    a = a * rng.uniform(0.9, 1.1) + rng.uniform(-0.04, 0.04)
    a = (a + np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1)) / 5  # soften edges
    a = a + rng.normal(0.0, 0.006, a.shape).astype(np.float32)  # coarse tissue texture
    big = Image.fromarray(a.astype(np.float32), mode="F").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32).copy()


def _plant(img: np.ndarray, label: str, x: float, y: float, w: float, h: float, rng: np.random.Generator) -> None:
    x0, y0 = int(x), int(y)
    x1, y1 = min(SIZE, int(np.ceil(x + w))), min(SIZE, int(np.ceil(y + h)))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u = 2 * (xx + 0.5 - x) / w - 1  # [-1, 1] across the box
    v = 2 * (yy + 0.5 - y) / h - 1
    r2 = u * u + v * v
    amp = rng.uniform(0.8, 1.0)
    k = FINDINGS.index(label)
    if k == 0:  # Atelectasis: a horizontal plate
        d = 0.28 * ((np.abs(v) < 0.3) & (np.abs(u) < 0.95))
    elif k == 1:  # Cardiomegaly: an enlarged bright heart shadow
        d = 0.22 * (r2 < 1)
    elif k == 2:  # Effusion: fluid filling the base, concave meniscus
        d = 0.32 * (v > -0.4 + 0.5 * u * u)
    elif k == 3:  # Infiltration: patchy blotches
        blot = np.cos(3.1 * u + rng.uniform(0, 6)) * np.cos(2.7 * v + rng.uniform(0, 6))
        d = 0.25 * ((blot > 0.1) & (r2 < 1))
    elif k == 4:  # Mass: a large solid disc
        d = 0.38 * (r2 < 0.8)
    elif k == 5:  # Nodule: a small dense disc
        d = 0.42 * (r2 < 0.5)
    elif k == 6:  # Pneumonia: a soft, centre-weighted opacity
        d = 0.33 * np.clip(1 - r2, 0, 1)
    elif k == 7:  # Pneumothorax: lucent region with a bright pleural line
        d = -0.22 * (r2 < 1) + 0.3 * (np.abs(np.sqrt(r2) - 1) < 0.08)
    elif k == 8:  # Consolidation: a dense, sharp-edged square patch
        d = 0.3 * ((np.abs(u) < 0.85) & (np.abs(v) < 0.85))
    elif k == 9:  # Edema: vertical streaks
        d = 0.28 * ((np.cos(3 * np.pi * u) > 0.3) & (r2 < 1))
    elif k == 10:  # Emphysema: a hyperlucent disc
        d = -0.24 * (r2 < 0.9)
    elif k == 11:  # Fibrosis: a reticular grid
        d = 0.28 * ((np.cos(2.5 * np.pi * u) * np.cos(2.5 * np.pi * v) > 0.35) & (r2 < 1.2))
    elif k == 12:  # Pleural thickening: a bright band along the outer edge
        d = 0.4 * (np.abs(np.abs(u) - 0.7) < 0.22)
    else:  # Hernia: a ring with a dense centre below the heart
        d = 0.3 * ((np.abs(np.sqrt(r2) - 0.75) < 0.15) | (r2 < 0.15))
    img[y0:y1, x0:x1] += (amp * d).astype(np.float32)


def encode(im: SynthImage, pixels: np.ndarray) -> PIL.Image.Image:
    """A Pillow image of the rendered pixels in the image's planned format."""
    from PIL import Image

    g8 = np.round(pixels * 255).astype(np.uint8)
    if im.kind == "L":
        return Image.fromarray(g8, mode="L")
    if im.kind == "RGBA":
        return Image.fromarray(np.dstack([g8, g8, g8, np.full_like(g8, 255)]), mode="RGBA")
    if im.kind == "RGB":
        return Image.fromarray(np.dstack([g8, g8, g8]), mode="RGB")
    # 16-bit: v * 257 keeps v exactly under the cache's >> 8 rule
    return Image.fromarray(g8.astype(np.uint16) * np.uint16(257))


def write_image(path: Path, im: SynthImage, seed: int, index: int, compress_level: int = 6) -> None:
    """Render and write one PNG atomically (temp file + rename)."""
    from cxrbench.files import atomic_open

    with atomic_open(path) as fh:
        encode(im, render(im, seed, index)).save(fh, format="PNG", compress_level=compress_level)


def write_tables(out: Path, images: list[SynthImage], seed: int) -> None:
    """The metadata CSV, the official-style split lists and the BBox CSV, in the real formats."""
    from cxrbench.data.splits import OFFICIAL_TEST_FRACTION, patient_wise_split

    rng = np.random.default_rng([seed, 0xC5F])
    rows = [HEADER]
    for im in images:
        width, height = int(rng.choice([2500, 2048, 2992, 3056])), int(rng.choice([2048, 2500, 2991]))
        sp = float(rng.choice([0.143, 0.168, 0.139]))
        rows.append(
            f"{im.name},{'|'.join(im.labels)},{im.follow_up},{im.patient},{im.age},{im.sex},{im.view},"
            f"{width},{height},{sp},{sp}"
        )
    _atomic_text(out / "Data_Entry_2017_v2020.csv", "\n".join(rows) + "\n")
    patients = np.array([im.patient for im in images])
    tv, te = patient_wise_split(np.arange(len(images)), patients, OFFICIAL_TEST_FRACTION, seed)
    _atomic_text(out / "train_val_list.txt", "".join(images[i].name + "\n" for i in tv))
    _atomic_text(out / "test_list.txt", "".join(images[i].name + "\n" for i in te))
    boxes = [BBOX_HEADER]
    for im in images:
        for lab, x, y, w, h in im.boxes:
            boxes.append(f"{im.name},{BBOX_SPELLING.get(lab, lab)},{x!r},{y!r},{w!r},{h!r}")
    _atomic_text(out / "BBox_List_2017.csv", "\n".join(boxes) + "\n")


def _atomic_text(path: Path, text: str) -> None:
    from cxrbench.files import atomic_write_text

    atomic_write_text(path, text)


def image_dir(out: Path) -> Path:
    return out / "images_001" / "images"


def _work(args: tuple[str, SynthImage, int, int, int]) -> str:
    path, im, seed, index, level = args
    write_image(Path(path), im, seed, index, level)
    return im.name


def generate(
    out: str | Path,
    n: int,
    seed: int = 0,
    workers: int | None = None,
    odd: bool = True,
    compress_level: int = 6,
    progress=None,
) -> list[SynthImage]:
    """Write a phantom dataset of `n` images to `out`; images already written for the same plan are kept."""
    from cxrbench.errors import CxrbenchError
    from cxrbench.files import make_dirs, read_json

    out = Path(out)
    images = plan(n, seed, odd)
    imgdir = image_dir(out)
    make_dirs(imgdir, root=out)  # below --out nothing may be a link
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "odd": odd,
        "odd_images": {im.name: im.kind for im in images if im.kind != "L"},
    }
    mpath = out / MANIFEST
    if mpath.exists() or mpath.is_symlink():
        try:
            old = read_json(mpath, 64 << 20, "the phantom manifest")
        except CxrbenchError:
            old = None
        if old != manifest:
            from cxrbench.errors import InputError

            raise InputError(
                mpath,
                "this folder holds a different phantom set (other n, seed or generator "
                "version); choose another --out or remove it",
            )
    write_tables(out, images, seed)
    _atomic_text(mpath, json.dumps(manifest, indent=1) + "\n")
    todo = [
        (str(imgdir / im.name), im, seed, i, compress_level)
        for i, im in enumerate(images)
        if not (imgdir / im.name).exists()
    ]
    if progress is not None:
        progress.update(total=n, completed=n - len(todo))
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    if workers == 1:
        for t in todo:
            _work(t)
            if progress is not None:
                progress.advance(1)
    else:
        from cxrbench._mp import context

        with context().Pool(workers) as pool:
            for _ in pool.imap_unordered(_work, todo, chunksize=4):
                if progress is not None:
                    progress.advance(1)
    return images
