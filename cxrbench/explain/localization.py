"""Heatmaps scored against boxes: the pointing game and the ChestX-ray8 paper's IoBB accuracy.

For each (image, finding, box) the Grad-CAM map of that finding's class is taken on the model's view of the
image (crop of the resized cache image) and mapped back to the 1024-pixel space of the NIH boxes.
- pointing game: a hit when the map's peak lies inside the box;
- IoBB (Wang et al. 2017): the map, scaled to peak 1, is thresholded at 0.5; the bounding box of the
  connected region holding the peak is the predicted box; IoBB = |pred ∩ truth| / |pred|; accuracy at
  IoBB >= 0.1, 0.25 and 0.5.
A centre baseline (an isotropic Gaussian at the image centre, sigma = 1/4 of the side) is scored the same
way beside every model. Degenerate maps count as misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IOBB_THRESHOLDS = (0.1, 0.25, 0.5)
ORIGINAL = 1024


@dataclass(frozen=True)
class Geometry:
    """How the model's input relates to the original 1024-pixel image."""

    image_size: int  # cache side
    resize: int  # side after the on-device resize
    crop: int  # side of the centre crop the model sees

    @property
    def scale(self) -> float:
        """Original pixels per crop pixel."""
        return ORIGINAL / self.resize

    @property
    def offset(self) -> int:
        return (self.resize - self.crop) // 2

    def box_in_crop(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of an original-space box in crop pixel units."""
        s, o = self.scale, self.offset
        return x / s - o, y / s - o, (x + w) / s - o, (y + h) / s - o


def centre_map(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    c, sigma = side / 2, side / 4
    return np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * sigma**2))


def pointing_hit(m: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    x0, y0, x1, y1 = box
    return bool(x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1)


def predicted_box(m: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), pixel edges, of the region above threshold*peak that holds the peak."""
    from scipy import ndimage

    peak = m.max()
    mask = m >= threshold * peak
    labels, _ = ndimage.label(mask)
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    ys, xs = np.nonzero(labels == labels[y, x])
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def iobb(m: np.ndarray, box: tuple[float, float, float, float]) -> float:
    px0, py0, px1, py1 = predicted_box(m)
    x0, y0, x1, y1 = box
    iw = max(0.0, min(px1, x1) - max(px0, x0))
    ih = max(0.0, min(py1, y1) - max(py0, y0))
    area = (px1 - px0) * (py1 - py0)
    return float(iw * ih / area) if area > 0 else 0.0


def score_maps(items: list[tuple[str, tuple[float, float, float, float], np.ndarray | None]]) -> dict:
    """Scores for (class, box in crop units, map or None for degenerate) items, per class and overall."""
    per: dict[str, dict[str, list]] = {}
    for label, box, m in items:
        d = per.setdefault(label, {"hit": [], "iobb": []})
        if m is None or not np.isfinite(m).all() or m.max() <= 0:
            d["hit"].append(False)
            d["iobb"].append(0.0)
        else:
            d["hit"].append(pointing_hit(m, box))
            d["iobb"].append(iobb(m, box))

    def summary(hits: list, ious: list) -> dict:
        ious_a = np.asarray(ious)
        return {
            "boxes": len(hits),
            "pointing": round(float(np.mean(hits)), 4) if hits else None,
            **{f"iobb@{t}": round(float((ious_a >= t).mean()), 4) if len(ious_a) else None for t in IOBB_THRESHOLDS},
        }

    out = {"per_class": {k: summary(v["hit"], v["iobb"]) for k, v in sorted(per.items())}}
    out["overall"] = summary(sum((v["hit"] for v in per.values()), []), sum((v["iobb"] for v in per.values()), []))
    return out


def localize(
    model,
    spec,
    images,
    features,
    boxes: list[tuple[int, str, float, float, float, float]],
    view,
    class_names: tuple[str, ...],
    device: str,
    batch: int = 16,
) -> dict:
    """Grad-CAM localisation of every box (row index into `images`, finding, x, y, w, h), with the centre
    baseline; `images` (N, S, S) uint8 tensor, `view` the loader View the model was trained with."""
    import torch

    from cxrbench.engine.loader import Transform, View
    from cxrbench.explain.gradcam import GradCAM

    geo = Geometry(view.image_size, view.resize, view.crop)
    tf = Transform(
        View(view.image_size, view.resize, view.crop, augment=False, channels_last=view.channels_last),
        torch.device(device),
    )
    items: list[tuple[str, tuple[float, float, float, float], np.ndarray | None]] = []
    base: list[tuple[str, tuple[float, float, float, float], np.ndarray | None]] = []
    by_row: dict[int, list] = {}
    for row, label, bx, by, bw, bh in boxes:
        if label in class_names:
            by_row.setdefault(row, []).append((label, geo.box_in_crop(bx, by, bw, bh)))
    rows = sorted(by_row)
    centre = centre_map(view.crop)
    degenerate = 0
    with GradCAM(model, spec.cam_layer, spec.nonimage) as cam:
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            k = max(len(by_row[r]) for r in chunk)
            cls = torch.tensor(
                [[class_names.index(by_row[r][min(j, len(by_row[r]) - 1)][0]) for j in range(k)] for r in chunk]
            )
            idx = torch.tensor(chunk, device=images.device)
            x = tf(images.index_select(0, idx).to(device), None)
            f = features.index_select(0, idx).to(device) if features is not None else None
            res = cam(x, cls, f)
            maps = res.normalised((view.crop, view.crop)).cpu().numpy()
            for bi, r in enumerate(chunk):
                for j, (label, box) in enumerate(by_row[r]):
                    deg = bool(res.degenerate[bi, j])
                    degenerate += deg
                    items.append((label, box, None if deg else maps[bi, j]))
                    base.append((label, box, centre))
    out = {
        "method": "Grad-CAM on " + spec.cam_layer,
        "model": score_maps(items),
        "centre_baseline": score_maps(base),
        "degenerate_maps": degenerate,
    }
    return out
