"""The reference paper's class-balanced subset selection, made exact, under each reading of its rule
(docs/paper-readings.md).

Targets: 2,000 images per finding and 10,000 for "No Finding". Classes are visited from least to most
frequent; a class at or under its target is taken whole; otherwise the paper says it "randomly sample[s] the
targeted number of images". Those words leave three choices open, and each combination is a named rule:

- amount: the class's *shortfall* (its target minus the images already selected through other labels) or
  the full *target*;
- pool: only the class's *unselected* images, or *all* of them (an already-selected image can be drawn
  again, which adds nothing);
- with or without *replacement* (numpy's `choice` draws with replacement unless told otherwise).

The readings differ by hundreds to thousands of images in Table 1 while the seed moves the subset by tens:
benchmarks/table1_readings.py measures every rule against the paper's six rows with the official lists, and
the paper protocols use the closest (protocols.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrbench.data.labels import ALL_LABELS, NO_FINDING
from cxrbench.errors import ConfigError

FINDING_TARGET = 2000
NO_FINDING_TARGET = 10000


@dataclass(frozen=True)
class SubsetRule:
    """One reading of "randomly sample the targeted number of images" for a class above its target."""

    name: str
    amount: str  # "shortfall": target minus the class's images already selected; "target": the whole target
    pool: str  # "unselected": the class's images not selected yet; "all": every image of the class
    replace: bool  # draw with replacement (duplicates collapse, so fewer distinct images are added)

    @property
    def description(self) -> str:
        amount = (
            "its shortfall (target minus its images already selected through other labels)"
            if self.amount == "shortfall"
            else "its whole target"
        )
        pool = (
            "its not-yet-selected images"
            if self.pool == "unselected"
            else "all its images, already-selected ones included"
        )
        return f"draw {amount} from {pool}, {'with' if self.replace else 'without'} replacement"


def _rule(amount: str, pool: str, replace: bool) -> SubsetRule:
    return SubsetRule(f"{amount}-{pool}{'-replace' if replace else ''}", amount, pool, replace)


# every reading, by name; "shortfall-unselected" is the rule of the v1 protocols
SUBSET_RULES: dict[str, SubsetRule] = {
    r.name: r
    for r in (_rule(a, p, rep) for rep in (False, True) for a in ("shortfall", "target") for p in ("unselected", "all"))
}
V1_RULE = "shortfall-unselected"


def class_target(label: str, finding_target: int = FINDING_TARGET, no_finding_target: int = NO_FINDING_TARGET) -> int:
    """The paper's target for one class: 10,000 for "No Finding", 2,000 for each finding."""
    return no_finding_target if label == NO_FINDING else finding_target


def get_rule(name: str) -> SubsetRule:
    """A subset rule by name; an unknown name lists the known ones."""
    if name not in SUBSET_RULES:
        raise ConfigError(f"unknown subset rule {name!r} (known: {', '.join(SUBSET_RULES)})")
    return SUBSET_RULES[name]


def select_subset(
    labels15: np.ndarray,
    seed: int = 0,
    finding_target: int = FINDING_TARGET,
    no_finding_target: int = NO_FINDING_TARGET,
    rule: str = V1_RULE,
) -> np.ndarray:
    """Sorted row indices of the subset, from a 15-class label matrix (rows in metadata order)."""
    if labels15.ndim != 2 or labels15.shape[1] != len(ALL_LABELS):
        raise ValueError(f"expected a (N, 15) label matrix, got {labels15.shape}")
    r = get_rule(rule)
    rng = np.random.default_rng(seed)
    counts = labels15.sum(axis=0)
    # least frequent first; ties keep the fixed class order (stable sort)
    order = np.argsort(counts, kind="stable")
    selected = np.zeros(len(labels15), dtype=bool)
    for c in order:
        target = class_target(ALL_LABELS[c], finding_target, no_finding_target)
        members = np.flatnonzero(labels15[:, c])
        if len(members) <= target:
            selected[members] = True
            continue
        size = target - int(selected[members].sum()) if r.amount == "shortfall" else target
        pool = members[~selected[members]] if r.pool == "unselected" else members
        if not r.replace:
            size = min(size, len(pool))
        if size <= 0 or len(pool) == 0:
            continue
        selected[rng.choice(pool, size=size, replace=r.replace)] = True
    return np.flatnonzero(selected)
