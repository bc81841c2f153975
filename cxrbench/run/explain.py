"""Stage 5, explain: Grad-CAM localisation of the scoring model on the test images that have boxes (the
pointing game and IoBB, beside a centre baseline), from the model's declared CAM layer."""

from __future__ import annotations

import numpy as np

from cxrbench.run.context import RunContext
from cxrbench.run.fit import Trained
from cxrbench.run.load import Images
from cxrbench.run.score import Scored


def boxes(ctx: RunContext, local_rows: np.ndarray) -> list[tuple[int, str, float, float, float, float]]:
    """(index into local_rows, finding, x, y, w, h) for every box on these images (the cache's BBox table)."""
    from cxrbench.data.lists import read_bbox

    bbox_csv = ctx.bound.metadata_layout.bbox_csv
    if bbox_csv is None:
        return []
    table = read_bbox(bbox_csv)
    where = {n: i for i, n in enumerate(ctx.bound.names(local_rows))}
    columns = (table[c].tolist() for c in ("image", "label", "x", "y", "w", "h"))
    return [
        (where[image], str(label), float(x), float(y), float(w), float(h))
        for image, label, x, y, w, h in zip(*columns)
        if image in where
    ]


def explain(ctx: RunContext, images: Images, trained: Trained, scored: Scored) -> dict | None:
    """Pointing game and IoBB on the test images that have boxes (None when none have)."""
    import torch

    from cxrbench.engine.train import unwrap
    from cxrbench.explain.localization import localize

    test_rows = scored.test_rows
    found = boxes(ctx, test_rows)
    if not found:
        return None
    rows = sorted({b[0] for b in found})
    remap = {r: i for i, r in enumerate(rows)}
    pixels = images.pixels(ctx, test_rows[rows])
    feats = torch.as_tensor(ctx.features[test_rows[rows]], dtype=torch.float32, device=pixels.device)
    res = localize(
        unwrap(trained.model),
        ctx.spec,
        pixels,
        feats,
        [(remap[r], label, x, y, w, h) for r, label, x, y, w, h in found],
        ctx.view(train=False),
        ctx.bound.classes,
        ctx.device,
    )
    res["images"] = len(rows)
    return res
