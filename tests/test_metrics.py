import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrbench.metrics.auroc import auroc, compare, per_class_auroc, plain_mean, score, weighted_mean


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for n in (2, 7, 100, 3000):
        for _ in range(20):
            y = rng.integers(0, 2, n)
            if y.min() == y.max():
                y[0] = 1 - y[0]
            p = np.round(rng.random(n), int(rng.integers(1, 4)))  # many ties
            assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_undefined_class_is_nan_never_half():
    y = np.zeros((10, 3), np.uint8)
    y[:5, 0] = 1
    y[:, 1] = 1  # one label value only
    p = np.random.default_rng(1).random((10, 3))
    a = per_class_auroc(y, p)
    assert np.isfinite(a[0]) and np.isnan(a[1]) and np.isnan(a[2])
    assert plain_mean(a) == pytest.approx(a[0])
    assert weighted_mean(a, y) == pytest.approx(a[0])
    s = score(y, p, np.arange(10), resamples=50)
    d = s.to_dict(("A", "B", "C"))
    assert d["per_class"]["B"] == {"auroc": None, "ci95": [None, None]}


def test_weighted_mean_is_prevalence_weighted():
    a = np.array([0.6, 0.9, np.nan])
    y = np.zeros((100, 3))
    y[:10, 0] = 1
    y[:30, 1] = 1
    assert weighted_mean(a, y) == pytest.approx((0.6 * 10 + 0.9 * 30) / 40)
    assert plain_mean(a) == pytest.approx(0.75)


def _data(seed=0, n=800, c=5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.2).astype(np.uint8)
    p = rng.random((n, c)) + 0.4 * y
    patients = rng.integers(0, n // 3, n)
    return y, p, patients


def test_bootstrap_ci_contains_point_and_is_reproducible():
    y, p, pat = _data()
    s1 = score(y, p, pat, resamples=300, seed=7)
    s2 = score(y, p, pat, resamples=300, seed=7)
    s3 = score(y, p, pat, resamples=300, seed=8)
    assert s1.weighted_ci == s2.weighted_ci and np.array_equal(s1.per_class_ci, s2.per_class_ci)
    assert s1.weighted_ci != s3.weighted_ci
    assert s1.weighted_ci[0] < s1.weighted < s1.weighted_ci[1]
    assert s1.plain_ci[0] < s1.plain < s1.plain_ci[1]
    for c in range(y.shape[1]):
        assert s1.per_class_ci[c, 0] <= s1.per_class[c] <= s1.per_class_ci[c, 1]
    assert s1.n_patients == len(np.unique(pat))


def test_patient_bootstrap_resamples_whole_patients():
    """With every image of a patient identical, patient-level and image-level bootstraps differ: the
    patient-level interval is wider (it does not count duplicates as independent evidence)."""
    y, p, _ = _data(1, n=300)
    y4, p4 = np.repeat(y, 4, 0), np.repeat(p, 4, 0)
    by_patient = score(y4, p4, np.repeat(np.arange(300), 4), resamples=400, seed=0)
    by_image = score(y4, p4, np.arange(1200), resamples=400, seed=0)
    width = lambda s: s.weighted_ci[1] - s.weighted_ci[0]  # noqa: E731
    assert width(by_patient) > 1.5 * width(by_image)


def test_paired_comparison():
    y, p, pat = _data(2, n=1500)
    rng = np.random.default_rng(3)
    better = p + 0.3 * y
    noise = p + rng.normal(0, 1e-3, p.shape)
    c = compare(y, better, p, pat, resamples=300)
    assert c.diff > 0 and c.significant and c.p_value < 0.01
    same = compare(y, noise, p, pat, resamples=300)
    assert not same.significant and same.ci95[0] <= same.diff <= same.ci95[1]
    assert compare(y, better, p, pat, resamples=300).to_dict() == c.to_dict()  # seeded
