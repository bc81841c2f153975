"""The reference paper's class-balanced subset selection, made exact (DESIGN.md).

Targets: 2,000 images per finding and 10,000 for "No Finding". Classes are visited from least to most
frequent; a class at or under its target is taken whole; otherwise only as many not-yet-selected images as
the class still lacks are drawn (seeded), counting images already selected through other labels.
"""

from __future__ import annotations

import numpy as np

from cxrbench.data.labels import ALL_LABELS, NO_FINDING

FINDING_TARGET = 2000
NO_FINDING_TARGET = 10000


def select_subset(
    labels15: np.ndarray,
    seed: int = 0,
    finding_target: int = FINDING_TARGET,
    no_finding_target: int = NO_FINDING_TARGET,
) -> np.ndarray:
    """Sorted row indices of the subset, from a 15-class label matrix (rows in metadata order)."""
    if labels15.ndim != 2 or labels15.shape[1] != len(ALL_LABELS):
        raise ValueError(f"expected a (N, 15) label matrix, got {labels15.shape}")
    rng = np.random.default_rng(seed)
    counts = labels15.sum(axis=0)
    # least frequent first; ties keep the fixed class order (stable sort)
    order = np.argsort(counts, kind="stable")
    selected = np.zeros(len(labels15), dtype=bool)
    for c in order:
        target = no_finding_target if ALL_LABELS[c] == NO_FINDING else finding_target
        members = np.flatnonzero(labels15[:, c])
        if len(members) <= target:
            selected[members] = True
            continue
        lack = target - int(selected[members].sum())
        if lack <= 0:
            continue
        candidates = members[~selected[members]]
        selected[rng.choice(candidates, size=lack, replace=False)] = True
    return np.flatnonzero(selected)
