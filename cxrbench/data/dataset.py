"""One handle on a dataset folder: its layout and metadata, and the splits a protocol draws from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbench.data.layout import DatasetLayout, discover
from cxrbench.data.metadata import Metadata, read_metadata
from cxrbench.data.splits import SplitSet, make_splits


@dataclass(frozen=True)
class Dataset:
    """A discovered dataset folder with its validated metadata."""

    layout: DatasetLayout
    metadata: Metadata

    def splits(self, protocol, seed: int | None = None) -> SplitSet:
        """The protocol's splits; `seed` overrides both the subset and the split seed (another draw)."""
        return splits_for(self.metadata, self.layout, protocol, seed)


def open_dataset(data_dir: str | Path) -> Dataset:
    """Discover `data_dir` and read its metadata CSV (images are not touched)."""
    layout = discover(data_dir)
    return Dataset(layout=layout, metadata=read_metadata(layout.metadata_csv))


def splits_for(metadata: Metadata, layout: DatasetLayout | None, protocol, seed: int | None = None) -> SplitSet:
    """The splits a protocol defines, on this metadata (and the layout's lists, when given)."""
    from cxrbench.data.splits import TooSmall
    from cxrbench.errors import InputError

    try:
        return make_splits(
            metadata,
            layout,
            subset=protocol.subset,
            subset_seed=protocol.subset_seed if seed is None else seed,
            subset_rule=protocol.subset_rule,
            lists=protocol.lists,
            val=protocol.val,
            n_folds=protocol.n_folds,
            val_fraction=protocol.val_fraction,
            seed=protocol.split_seed if seed is None else seed,
        )
    except TooSmall as e:
        raise InputError(None, f"the dataset is too small for protocol {protocol.key}: {e.reason}") from None


def per_class_counts(metadata: Metadata, s: SplitSet) -> dict[str, dict[str, int]]:
    """Images per class in the full set, the subset selection, fold 0's train/val, and test."""
    from cxrbench.data.labels import ALL_LABELS

    y = metadata.labels(15)
    parts = {
        "full": np.arange(len(metadata)),
        "subset": np.arange(len(metadata)) if s.subset is None else s.subset,
        "train": s.folds[0].train,
        "val": s.folds[0].val,
        "test": s.test,
    }
    sums = {k: y[v].sum(axis=0) for k, v in parts.items()}
    return {c: {k: int(sums[k][j]) for k in parts} for j, c in enumerate(ALL_LABELS)}


def subset_vs_targets(per_class: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Each class's subset count beside the paper's target (2,000 per finding, 10,000 for No Finding); a class
    with no more images than its target is taken whole, so its target cannot be met."""
    from cxrbench.data.subset import class_target

    out = {}
    for c, v in per_class.items():
        target = class_target(c)
        out[c] = {
            "subset": v["subset"],
            "target": target,
            "difference": v["subset"] - target,
            "taken_whole": v["full"] <= target,
        }
    return out
