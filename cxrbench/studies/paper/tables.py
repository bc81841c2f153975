"""The paper's tables regenerated from the code (Table 1 from the data's own tables, Table 2 from the models),
and the measurement behind the attention-model finding (Grad-CAM on norm5 against transition3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrbench.studies.paper.design import PAPER_TABLE2, RunSpec, Study


def table1(study: Study, cache: str) -> dict:
    """The paper's Table 1 regenerated from the cache's own tables, beside the paper's, and the per-class subset
    counts beside the paper's targets: {"subset_rule", "rows": [(row, images, %, paper's, difference)],
    "classes": {class: {subset, target, difference, taken_whole}}}."""
    from cxrbench.cache.store import open_cache
    from cxrbench.data.dataset import open_dataset, per_class_counts, splits_for, subset_vs_targets
    from cxrbench.protocols import get_protocol

    store = open_cache(cache)
    ds = open_dataset(store.tables_dir())
    protocol = get_protocol(study.p15)
    s = splits_for(ds.metadata, ds.layout, protocol)
    return {
        "protocol": protocol.key,
        "subset_rule": protocol.subset_rule,
        "source": s.source,
        "rows": s.table1_vs_paper(len(ds.metadata)),
        "classes": subset_vs_targets(per_class_counts(ds.metadata, s)),
    }


def table2() -> list[tuple[str, int, int]]:
    """Parameter counts at 15 classes, counted from the models here, beside the paper's Table 2."""
    from cxrbench.models import count_parameters, create_model

    return [(m, count_parameters(create_model(m, num_classes=15)), n) for m, n in PAPER_TABLE2.items()]


def attention_finding(study: Study, cache: str, runs: dict[RunSpec, Path]) -> dict:
    """Grad-CAM peak / mean activation on norm5 and on transition3 of densenet121_attA, for 4 test images
    (the trained model of the study when there is one, else a seeded, untrained one)."""
    import torch

    from cxrbench.cache.store import open_cache
    from cxrbench.engine.loader import Transform, View
    from cxrbench.explain.gradcam import GradCAM
    from cxrbench.models import create_model
    from cxrbench.run.scorer import load_scored_model, scoring_checkpoint

    torch.manual_seed(0)
    model = create_model("densenet121_attA", num_classes=15)
    source = "seeded, untrained densenet121_attA"
    d = runs.get(RunSpec(study.p15, "densenet121_attA", study.high_lr))
    if d is not None and scoring_checkpoint(d, final_run=True).exists():
        model = load_scored_model(d, "densenet121_attA", 15, final_run=True)
        source = f"trained densenet121_attA ({d.name})"
    model.eval()
    store = open_cache(cache)
    imgs = torch.from_numpy(store.read(np.arange(min(4, store.n_images))))
    x = Transform(
        View(store.size, 256 if store.size >= 256 else store.size, 224 if store.size >= 256 else store.size, False),
        torch.device("cpu"),
    )(imgs, None)
    cls = torch.arange(len(imgs)).remainder(15)[:, None]
    out: dict[str, object] = {"model": source}
    for layer in ("features.norm5", "features.transition3"):
        with GradCAM(model, layer) as cam:
            r = cam(x, cls)
        out[layer] = {
            "peak_ratio_max": float(r.peak_ratio.max()),
            "degenerate": int(r.degenerate.sum()),
            "maps": len(imgs),
        }
    return out
