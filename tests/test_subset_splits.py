import shutil

import numpy as np
import pytest

from cxrbench.data.dataset import open_dataset, per_class_counts
from cxrbench.data.labels import ALL_LABELS
from cxrbench.data.layout import discover
from cxrbench.data.splits import make_splits, patient_wise_split
from cxrbench.data.subset import select_subset
from cxrbench.errors import InputError

from .conftest import NIH, REAL_CSV


@pytest.fixture(scope="module")
def paper_splits(real_metadata):
    return make_splits(real_metadata, discover(NIH))


def test_paper_subset_seed0(real_metadata):
    y = real_metadata.labels(15)
    sel = select_subset(y, seed=0)
    counts = dict(zip(ALL_LABELS, y[sel].sum(axis=0).tolist()))
    totals = dict(zip(ALL_LABELS, y.sum(axis=0).tolist()))
    assert counts["No Finding"] == 10_000
    for c in ALL_LABELS[:-1]:
        if totals[c] > 2000:
            assert counts[c] >= 2000, c
        else:
            assert counts[c] == totals[c], c
    assert 23_000 <= len(sel) <= 26_000
    assert np.array_equal(sel, select_subset(y, seed=0))
    assert not np.array_equal(sel, select_subset(y, seed=1))


def test_subset_takes_small_classes_whole_and_counts_overlap():
    # toy matrix with targets 2 / 3: Hernia is taken whole, Atelectasis only tops up what Hernia brought in
    y = np.zeros((10, 15), dtype=np.uint8)
    y[[0, 1], 13] = 1  # Hernia: 2 images, taken whole
    y[[1, 2, 3, 4], 0] = 1  # Atelectasis: image 1 already selected through Hernia
    y[5:, 14] = 1  # No Finding
    sel = select_subset(y, seed=0, finding_target=2, no_finding_target=3)
    assert {0, 1} <= set(sel.tolist())
    assert y[sel, 0].sum() == 2  # only one more Atelectasis image was drawn
    assert y[sel, 14].sum() == 3


def test_paper_splits(paper_splits, real_metadata):
    s = paper_splits
    assert len(s.folds) == 3
    strings = real_metadata.label_strings
    for f in s.folds:
        frac = len(f.val) / (len(f.train) + len(f.val))
        assert frac == pytest.approx(0.1, abs=0.001)
        assert len(np.intersect1d(f.train, f.val)) == 0
        assert np.array_equal(np.union1d(f.train, f.val), s.trainval)
    _, counts = np.unique(strings[s.trainval].astype(str), return_counts=True)
    assert counts.min() >= 2  # no singleton string labels left
    assert len(s.dropped_singletons) > 0
    assert not np.array_equal(s.folds[0].val, s.folds[1].val)
    # train-val vs test is patient-disjoint (stand-in for the absent official lists); folds are image-wise
    outer = [lk for lk in s.leaks if (lk.a, lk.b) == ("trainval", "test")][0]
    assert outer.ok and not outer.allowed
    assert all(lk.allowed for lk in s.leaks if lk.a.startswith("train["))
    rows = {n: c for n, c, _ in s.table1(len(real_metadata))}
    assert rows["Full training-validation"] + rows["Full test"] == 112_120
    assert rows["Training subset"] + rows["Validation subset"] == rows["Training-validation subset"]


def test_splits_deterministic(real_metadata, paper_splits):
    again = make_splits(real_metadata, discover(NIH))
    assert all(np.array_equal(a.val, b.val) for a, b in zip(again.folds, paper_splits.folds))
    other = make_splits(real_metadata, discover(NIH), subset_seed=1, seed=1)
    assert not np.array_equal(other.test, paper_splits.test)


def test_patient_wise_standin_disjoint(real_metadata):
    tv, te = patient_wise_split(np.arange(len(real_metadata)), real_metadata.patients, 0.2283, seed=0)
    p = real_metadata.patients
    assert not set(p[tv]) & set(p[te])
    assert len(te) / len(real_metadata) == pytest.approx(0.2283, abs=0.002)


def test_community_split_no_leakage(real_metadata):
    s = make_splits(real_metadata, discover(NIH), subset="all", lists="chexnet-community")
    assert [lk.patients for lk in s.leaks] == [0, 0, 0]
    assert len(s.folds[0].train) == 78_468 and len(s.test) == 22_433


def test_leaky_named_split_is_caught(tmp_path, real_metadata):
    shutil.copy(REAL_CSV, tmp_path / REAL_CSV.name)
    sp = tmp_path / "splits"
    sp.mkdir()
    # 00000001_000 and 00000001_001 belong to patient 1: one in train, one in test
    (sp / "leaky_train.txt").write_text("00000001_000.png\n00000002_000.png\n")
    (sp / "leaky_val.txt").write_text("00000003_001.png\n")
    (sp / "leaky_test.txt").write_text("00000001_001.png\n")
    with pytest.raises(InputError, match=r"patient leakage: 1 patients also appear in .*leaky_train.txt"):
        make_splits(real_metadata, discover(tmp_path), subset="all", lists="leaky")


def test_per_class_counts(real_metadata, paper_splits):
    pc = per_class_counts(real_metadata, paper_splits)
    assert pc["No Finding"]["subset"] == 10_000 and pc["Hernia"]["full"] == 227
    assert pc["Hernia"]["subset"] == 227


@pytest.mark.slow
def test_open_dataset_protocol(real_metadata):
    from cxrbench.protocols import get_protocol

    ds = open_dataset(NIH)
    s = ds.splits(get_protocol("paper-14c"))
    assert len(s.folds) == 3 and len(ds.metadata) == 112_120
