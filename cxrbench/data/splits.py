"""Train / validation / test splits: official lists, a patient-wise stand-in, the paper's stratified
train/val splits, named split lists, and the patient-leakage check every split goes through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrbench.data.layout import DatasetLayout
from cxrbench.data.lists import list_indices
from cxrbench.data.metadata import Metadata
from cxrbench.data.subset import V1_RULE, select_subset
from cxrbench.errors import InputError

# Share of test images in the official release (25,596 of 112,120): the patient-wise stand-in aims at it.
OFFICIAL_TEST_FRACTION = 25596 / 112120

# The reference paper's Table 1 (reported; Tan et al., section 1.2), row by row.
PAPER_TABLE1 = {
    "Full training-validation": 86524,
    "Full test": 25596,
    "Training-validation subset": 16944,
    "Training subset": 15249,
    "Validation subset": 1695,
    "Test subset": 6112,
}


@dataclass(frozen=True)
class Fold:
    """One train/validation split (metadata row indices, sorted)."""

    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class Leak:
    """Patients shared by two parts of a split."""

    a: str
    b: str
    patients: int
    images_a: int
    images_b: int
    allowed: bool  # True where the protocol splits image-wise on purpose (the paper's stratified folds)

    @property
    def ok(self) -> bool:
        return self.patients == 0


@dataclass(frozen=True)
class SplitSet:
    """Everything a protocol trains and scores on, as sorted metadata row indices."""

    source: str  # how train-val / test were obtained
    full_trainval: np.ndarray
    full_test: np.ndarray
    subset: np.ndarray | None  # the subset selection before it meets the lists (None: all images)
    trainval: np.ndarray  # what the folds cover (after the subset and the singleton drop)
    test: np.ndarray
    folds: tuple[Fold, ...]
    dropped_singletons: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    leaks: tuple[Leak, ...] = ()
    unlisted: int = 0  # images of the metadata in neither official list (left out of every split)

    def unlisted_note(self) -> str | None:
        """The one line that says how many images of the metadata no official list names (None: none)."""
        if not self.unlisted:
            return None
        return (
            f"{self.unlisted:,} image(s) of the metadata are in neither official list (train_val_list.txt, "
            "test_list.txt): they are left out of every split"
        )

    def table1(self, total: int) -> list[tuple[str, int, float]]:
        """The paper's Table 1 rows: (name, images, % of all images); train/val from the first fold."""
        rows = [
            ("Full training-validation", len(self.full_trainval)),
            ("Full test", len(self.full_test)),
            ("Training-validation subset", len(self.trainval)),
            ("Training subset", len(self.folds[0].train)),
            ("Validation subset", len(self.folds[0].val)),
            ("Test subset", len(self.test)),
        ]
        return [(n, c, 100.0 * c / total) for n, c in rows]

    def table1_vs_paper(self, total: int) -> list[tuple[str, int, float, int, int]]:
        """Table 1 beside the paper's: (name, images, % of all images, paper's images, images - paper's)."""
        return [(n, c, pct, PAPER_TABLE1[n], c - PAPER_TABLE1[n]) for n, c, pct in self.table1(total)]


def patient_wise_split(
    indices: np.ndarray, patients: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` so that about `fraction` of the images (whole patients only) go to the second part."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    pats = patients[indices]
    uniq, inverse, counts = np.unique(pats, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(uniq))
    target = int(round(fraction * len(indices)))
    cum = np.cumsum(counts[perm])
    k = int(np.searchsorted(cum, target, side="left")) + 1 if target > 0 else 0
    chosen = np.zeros(len(uniq), dtype=bool)
    chosen[perm[: min(k, len(uniq))]] = True
    second = chosen[inverse]
    return indices[~second], indices[second]


def drop_singletons(indices: np.ndarray, label_strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove images whose string label occurs once among `indices` (stratification needs two)."""
    labs = label_strings[indices]
    _, inverse, counts = np.unique(labs.astype(str), return_inverse=True, return_counts=True)
    single = counts[inverse] == 1
    return indices[~single], indices[single]


def stratified_folds(
    indices: np.ndarray, label_strings: np.ndarray, n_splits: int, val_fraction: float, seed: int
) -> tuple[Fold, ...]:
    """scikit-learn's StratifiedShuffleSplit on the string label, as the reference paper does."""
    from sklearn.model_selection import StratifiedShuffleSplit

    sss = StratifiedShuffleSplit(n_splits=n_splits, test_size=val_fraction, random_state=seed)
    y = label_strings[indices].astype(str)
    folds = []
    try:
        for tr, va in sss.split(np.zeros(len(indices)), y):
            folds.append(Fold(train=np.sort(indices[tr]), val=np.sort(indices[va])))
    except ValueError as e:  # fewer validation images than label strings, or no images at all
        raise TooSmall(
            None,
            f"{len(indices)} train+val images with {len(np.unique(y))} different label strings are too few for "
            f"a stratified validation split of {val_fraction:g} (scikit-learn: {' '.join(str(e).split())[:200]})",
        ) from None
    return tuple(folds)


class TooSmall(InputError):
    """A dataset too small for a split the protocol asks for."""


def patient_folds(
    indices: np.ndarray, patients: np.ndarray, n_splits: int, val_fraction: float, seed: int
) -> tuple[Fold, ...]:
    """`n_splits` patient-wise train/val splits with seeds seed, seed+1, ..."""
    return tuple(Fold(*patient_wise_split(indices, patients, val_fraction, seed + k)) for k in range(n_splits))


def leaks_between(metadata: Metadata, parts: dict[str, np.ndarray], allowed: set[tuple[str, str]]) -> tuple[Leak, ...]:
    """Patient overlap for every pair of parts; `allowed` pairs are image-wise on purpose."""
    patients = metadata.patients
    sets = {k: set(patients[v].tolist()) for k, v in parts.items()}
    names = list(parts)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sets[a] & sets[b]
            out.append(
                Leak(
                    a,
                    b,
                    len(shared),
                    int(np.isin(patients[parts[a]], list(shared)).sum()) if shared else 0,
                    int(np.isin(patients[parts[b]], list(shared)).sum()) if shared else 0,
                    allowed=(a, b) in allowed,
                )
            )
    return tuple(out)


def check_disjoint_images(parts: dict[str, np.ndarray], files: Mapping[str, Path | str]) -> None:
    """The same image in two parts of a split is an error naming both files."""
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = np.intersect1d(parts[a], parts[b])
            if len(both):
                raise InputError(files.get(b), f"{len(both)} images also listed in {files.get(a)}")


def require_patient_disjoint(leaks: tuple[Leak, ...], files: Mapping[str, Path | str]) -> None:
    """Raise for the first forbidden leak, naming the two lists."""
    for lk in leaks:
        if not lk.ok and not lk.allowed:
            raise InputError(
                files.get(lk.b, lk.b),
                f"patient leakage: {lk.patients} patients also appear in {files.get(lk.a, lk.a)} "
                f"({lk.images_a} and {lk.images_b} images); a split must keep each patient on one side",
            )


def official_or_standin(
    metadata: Metadata, layout: DatasetLayout | None, seed: int
) -> tuple[np.ndarray, np.ndarray, str, dict[str, Path | str]]:
    """Official train-val/test lists where present, else a seeded patient-wise stand-in."""
    if layout is not None and layout.train_val_list is not None and layout.test_list is not None:  # official
        tv = list_indices(layout.train_val_list, metadata)
        te = list_indices(layout.test_list, metadata)
        files: dict[str, Path | str] = {"trainval": layout.train_val_list, "test": layout.test_list}
        check_disjoint_images({"trainval": tv, "test": te}, files)
        return tv, te, "official lists", files
    tv, te = patient_wise_split(np.arange(len(metadata)), metadata.patients, OFFICIAL_TEST_FRACTION, seed)
    source = f"patient-wise stand-in for the official lists (seed {seed}, {OFFICIAL_TEST_FRACTION:.1%} test)"
    return tv, te, source, {"trainval": "stand-in train-val", "test": "stand-in test"}


def make_splits(
    metadata: Metadata,
    layout: DatasetLayout | None,
    *,
    subset: str = "paper",
    subset_seed: int = 0,
    subset_rule: str = V1_RULE,
    lists: str = "official",
    val: str = "stratified",
    n_folds: int = 3,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> SplitSet:
    """Build a protocol's splits.

    `subset`: "paper" (the class-balanced selection, drawn under `subset_rule`: data/subset.py) or "all";
    `lists`: "official" (with the patient-wise stand-in) or the name of a split list `<name>_{train,val,test}.txt`;
    `val`: "stratified" (the paper's StratifiedShuffleSplit on the string label, singletons dropped) or "patient"
    (patient-wise).
    """
    patients = metadata.patients
    strings = metadata.label_strings
    sel = select_subset(metadata.labels(15), seed=subset_seed, rule=subset_rule) if subset == "paper" else None
    if subset not in ("paper", "all"):
        raise InputError(None, f"unknown subset {subset!r} (paper or all)")

    if lists != "official":
        if layout is None:
            raise InputError(None, f"named split {lists!r} needs a dataset folder")
        files = layout.named_split(lists)
        parts = {k: list_indices(files[k], metadata) for k in ("train", "val", "test")}
        check_disjoint_images(parts, files)
        if sel is not None:
            parts = {k: np.intersect1d(v, sel) for k, v in parts.items()}
        found = leaks_between(metadata, parts, allowed=set())
        require_patient_disjoint(found, files)
        trainval = np.union1d(parts["train"], parts["val"])
        return SplitSet(
            source=f"named split lists {lists!r}",
            full_trainval=np.union1d(list_indices(files["train"], metadata), list_indices(files["val"], metadata)),
            full_test=list_indices(files["test"], metadata),
            subset=sel,
            trainval=trainval,
            test=parts["test"],
            folds=(Fold(parts["train"], parts["val"]),),
            leaks=found,
        )

    full_tv, full_te, source, list_files = official_or_standin(metadata, layout, seed)
    outer = leaks_between(metadata, {"trainval": full_tv, "test": full_te}, allowed=set())
    require_patient_disjoint(outer, list_files)
    tv = full_tv if sel is None else np.intersect1d(full_tv, sel)
    te = full_te if sel is None else np.intersect1d(full_te, sel)
    dropped = np.zeros(0, dtype=np.int64)
    if val == "stratified":
        tv, dropped = drop_singletons(tv, strings)
        folds = stratified_folds(tv, strings, n_folds, val_fraction, seed)
    elif val == "patient":
        folds = patient_folds(tv, patients, n_folds, val_fraction, seed)
    else:
        raise InputError(None, f"unknown validation scheme {val!r} (stratified or patient)")
    leaks = list(leaks_between(metadata, {"trainval": tv, "test": te}, allowed=set()))
    for k, f in enumerate(folds):
        for lk in leaks_between(
            metadata,
            {f"train[{k}]": f.train, f"val[{k}]": f.val},
            allowed={(f"train[{k}]", f"val[{k}]")} if val == "stratified" else set(),
        ):
            leaks.append(lk)
    require_patient_disjoint(tuple(leaks), list_files)
    return SplitSet(
        source=source,
        full_trainval=full_tv,
        full_test=full_te,
        subset=sel,
        trainval=tv,
        test=te,
        folds=folds,
        dropped_singletons=dropped,
        leaks=tuple(leaks),
        unlisted=len(metadata) - len(np.union1d(full_tv, full_te)) if source == "official lists" else 0,
    )
