"""The evaluation figures (cxrbench.metrics.evaluation), each against an independent computation: scikit-learn's
roc_curve, roc_auc_score, brier_score_loss and calibration_curve, and plain numpy loops for the ECEs, the
rates and the patient-bootstrap intervals; with tied probabilities and groups without positives."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

from cxrbench.metrics import evaluation as ev
from cxrbench.metrics.auroc import _resample_counts


def _data(n=600, c=3, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n // 3, n) + 1000
    y = (rng.random((n, c)) < [0.3, 0.1, 0.5][:c]).astype(np.uint8)
    p = np.clip(0.35 * y + rng.random((n, c)) * 0.65, 0, 1)
    if ties:
        p = np.round(p, 1)
    return y, p, patients


def _weights(patients, resamples, seed):
    """Per-image weights (R, N) of the protocol's patient resamples, computed the plain way."""
    ids = np.unique(patients)
    counts = _resample_counts(len(ids), resamples, seed)
    return counts[:, np.searchsorted(ids, patients)]


def _pct(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return np.percentile(x, [2.5, 97.5])


@pytest.mark.parametrize("ties", [False, True])
def test_roc_points_are_sklearns_roc_curve(ties):
    y, p, _ = _data(ties=ties)
    for c in range(y.shape[1]):
        fpr, tpr, thr = roc_curve(y[:, c], p[:, c], drop_intermediate=False)
        t, tp, fp = ev.roc_points(y[:, c], p[:, c])
        np.testing.assert_array_equal(t, thr[1:])
        np.testing.assert_allclose(tp, tpr[1:])
        np.testing.assert_allclose(fp, fpr[1:])


@pytest.mark.parametrize("ties", [False, True])
def test_thresholds_follow_their_rules_by_brute_force(ties):
    y, p, _ = _data(ties=ties, seed=1)
    for c in range(y.shape[1]):
        yy, pp = y[:, c].astype(bool), p[:, c]
        cands = np.unique(pp)[::-1]  # descending
        sens = np.array([(pp[yy] >= t).mean() for t in cands])
        spec = np.array([(pp[~yy] < t).mean() for t in cands])
        j = sens + spec - 1
        assert ev.choose_threshold(yy, pp, "youden") == cands[np.flatnonzero(j == j.max())[0]]
        for target in (0.9, 0.75):
            assert ev.choose_threshold(yy, pp, "sensitivity", target) == cands[np.flatnonzero(sens >= target)[0]]
            assert ev.choose_threshold(yy, pp, "specificity", target) == cands[np.flatnonzero(spec >= target)[-1]]
    assert ev.choose_threshold(np.zeros(5), np.linspace(0, 1, 5), "youden") is None  # no positives
    assert ev.choose_threshold(np.ones(5), np.linspace(0, 1, 5), "sensitivity") is None  # no negatives
    # only calling nothing positive is specific enough: just above the largest score
    t = ev.choose_threshold(np.array([0, 1, 0, 0]), np.array([0.9, 0.5, 0.2, 0.1]), "specificity", 1.0)
    assert t > 0.9 and (np.array([0.9, 0.5, 0.2, 0.1]) >= t).sum() == 0


def test_confusion_rates_and_their_intervals_by_brute_force():
    y, p, patients = _data(n=300, seed=2, ties=True)
    thr = np.array([0.5, 0.4, np.nan])
    rs = ev.Resampler.of(patients, 50, 7)
    got = ev.confusion_rates(y, p, thr, rs)
    w = _weights(patients, 50, 7)
    for c in range(2):
        called = p[:, c] >= thr[c]
        yy = y[:, c].astype(bool)
        tp, fp, fn, tn = called & yy, called & ~yy, ~called & yy, ~called & ~yy
        want = {
            "sensitivity": (tp, tp | fn),
            "specificity": (tn, tn | fp),
            "ppv": (tp, tp | fp),
            "npv": (tn, tn | fn),
            "f1": (2 * tp, 2 * tp + fp + fn),
        }
        for m, (num, den) in want.items():
            num, den = num.astype(float), den.astype(float)
            assert got[m][0][c] == pytest.approx(num.sum() / den.sum())
            with np.errstate(invalid="ignore", divide="ignore"):
                boots = (w @ num) / (w @ den)
            np.testing.assert_allclose(got[m][1][c], _pct(boots))
    assert all(np.isnan(got[m][0][2]) for m in got)  # no threshold: no figures


@pytest.mark.parametrize("ties", [False, True])
def test_calibration_against_sklearn_and_plain_loops(ties):
    y, p, _ = _data(n=500, seed=3, ties=ties)
    p[:5, 0] = [0.0, 1.0, 1 / 15, 2 / 15, 14 / 15]  # the bin edges themselves
    for c in range(y.shape[1]):
        yy, pp = y[:, c], p[:, c]
        prob_true, prob_pred = calibration_curve(yy, pp, n_bins=15, strategy="uniform")
        edges = np.linspace(0, 1, 16)
        n = np.array(
            [((pp > lo) | ((b == 0) & (pp == 0))) & (pp <= hi) for b, (lo, hi) in enumerate(zip(edges, edges[1:]))]
        ).sum(1)
        want = np.sum(n[n > 0] / len(pp) * np.abs(prob_pred - prob_true))
        assert ev.ece(yy, pp) == pytest.approx(want)
        rel = ev.reliability(yy, pp)
        assert [b["images"] for b in rel] == n.tolist()
        np.testing.assert_allclose([b["positive_rate"] for b in rel if b["images"]], prob_true, atol=1e-6)
        np.testing.assert_allclose([b["mean_probability"] for b in rel if b["images"]], prob_pred, atol=1e-6)
        assert ev.brier(yy, pp) == pytest.approx(brier_score_loss(yy, pp))
        # adaptive: 15 runs of the sorted images, sizes differing by at most one
        order = np.argsort(pp, kind="mergesort")
        total = 0.0
        for k in range(15):
            part = order[k * len(pp) // 15 : (k + 1) * len(pp) // 15]
            total += len(part) / len(pp) * abs(pp[part].mean() - yy[part].mean())
        assert ev.adaptive_ece(yy, pp) == pytest.approx(total)
    cal = ev.calibration(y, p, ["a", "b", "c"])
    assert cal["pooled"]["ece"] == pytest.approx(ev.ece(y.ravel(), p.ravel()), abs=1e-6)
    assert cal["pooled"]["brier"] == pytest.approx(brier_score_loss(y.ravel(), p.ravel()), abs=1e-6)
    assert "15 equal-width bins" in cal["binning"]


def test_age_bands_leave_out_impossible_ages():
    bands = ev.age_bands(np.array([0, 19, 20, 39, 40, 59, 60, 79, 80, 95, 120, 121, 414]))
    assert bands.tolist() == [
        "0-19",
        "0-19",
        "20-39",
        "20-39",
        "40-59",
        "40-59",
        "60-79",
        "60-79",
        "80+",
        "80+",
        "80+",
        None,
        None,
    ]


def _attr(rng, n):
    v = np.array(["F", "M"], dtype=object)[rng.integers(0, 2, n)]
    v[:7] = None  # left out
    return ev.Attribute("sex", v, ("F", "M", "X"))


@pytest.mark.parametrize("ties", [False, True])
def test_subgroup_aurocs_rates_and_too_few(ties):
    y, p, patients = _data(n=400, seed=4, ties=ties)
    rng = np.random.default_rng(5)
    attr = _attr(rng, len(y))
    attr.values[np.flatnonzero(y[:, 1])[: int(y[:, 1].sum()) - 5]] = "F"  # class 1: only 5 positives among M
    youden = np.array([0.5, 0.45, 0.6])
    rs = ev.Resampler.of(patients, 40, 0)
    out = ev.subgroups(y, p, ["a", "b", "c"], [attr], youden, rs)["sex"]
    assert out["left_out"] == 7 and out["groups"] == ["F", "M", "X"]
    w = _weights(patients, 40, 0)
    for c, name in enumerate("abc"):
        e = out["per_class"][name]
        for g in ("F", "M"):
            rows = np.flatnonzero(attr.values == g)
            got = e["groups"][g]
            yy, pp = y[rows, c], p[rows, c]
            assert got["images"] == len(rows) and got["positives"] == int(yy.sum())
            if yy.sum() < 10:
                assert got["auroc"] is None and got["tpr"] is None and f"{int(yy.sum())} positives" in got["too_few"]
                continue
            assert got["auroc"]["value"] == pytest.approx(roc_auc_score(yy, pp), abs=1e-6)
            boots = [
                roc_auc_score(yy, pp, sample_weight=w[r, rows])
                if w[r, rows][yy == 1].sum() and w[r, rows][yy == 0].sum()
                else np.nan
                for r in range(40)
            ]
            np.testing.assert_allclose(got["auroc"]["ci95"], _pct(boots), atol=1e-6)
            called = pp >= youden[c]
            assert got["tpr"]["value"] == pytest.approx(called[yy == 1].mean(), abs=1e-6)
            assert got["fpr"]["value"] == pytest.approx(called[yy == 0].mean(), abs=1e-6)
        assert e["groups"]["X"] == {
            "images": 0,
            "positives": 0,
            "negatives": 0,
            "auroc": None,
            "too_few": e["groups"]["X"]["too_few"],
            "tpr": None,
            "fpr": None,
        }
        vals = {g: e["groups"][g]["auroc"]["value"] for g in ("F", "M") if e["groups"][g]["auroc"]}
        if len(vals) == 2:
            assert e["auroc_gap"]["value"] == pytest.approx(abs(vals["F"] - vals["M"]), abs=2e-6)
            assert e["worst_group"] == min(vals, key=vals.get)
        else:
            assert e["auroc_gap"] is None and e["worst_group"] == next(iter(vals))


def test_underdiagnosis_with_and_without_a_no_finding_class():
    y, p, patients = _data(n=500, seed=6, c=3)
    classes = ["a", "b", "No Finding"]
    y[:, 2] = (y[:, :2].sum(1) == 0).astype(np.uint8)
    rng = np.random.default_rng(8)
    attr = _attr(rng, len(y))
    youden = np.array([0.5, 0.5, 0.55])
    rs = ev.Resampler.of(patients, 30, 1)
    w = _weights(patients, 30, 1)
    for cls, yy, pp, thr, healthy in (
        (classes, y, p, youden, p[:, 2] >= 0.55),
        (classes[:2], y[:, :2], p[:, :2], youden[:2], (p[:, :2] < 0.5).all(1)),
    ):
        out = ev.underdiagnosis(yy, pp, cls, [attr], thr, rs)
        sick = y[:, :2].any(1)
        for g in ("F", "M"):
            rows = attr.values == g
            got = out["by"]["sex"]["groups"][g]
            num, den = (sick & healthy & rows).astype(float), (sick & rows).astype(float)
            assert got["with_finding"] == den.sum()
            assert got["rate"]["value"] == pytest.approx(num.sum() / den.sum(), abs=1e-6)
            np.testing.assert_allclose(got["rate"]["ci95"], _pct((w @ num) / (w @ den)), atol=1e-6)
        assert out["by"]["sex"]["groups"]["X"]["rate"] is None
        r = {g: out["by"]["sex"]["groups"][g]["rate"]["value"] for g in ("F", "M")}
        assert out["by"]["sex"]["gap"]["value"] == pytest.approx(abs(r["F"] - r["M"]), abs=2e-6)
    assert "No Finding called positive" in ev.underdiagnosis(y, p, classes, [], youden, rs)["rule"]


def test_evaluate_puts_it_together():
    y, p, patients = _data(n=400, seed=9)
    vy, vp, _ = _data(n=200, seed=10)
    vy[:, 2] = 0  # no validation positives: no thresholds for class c
    attr = _attr(np.random.default_rng(1), len(y))
    out = ev.evaluate(y, p, patients, vy, vp, ["a", "b", "c"], [attr], 20, 0, sensitivity=0.95, specificity=0.8)
    ops = out["operating_points"]
    assert set(ops["a"]) == {"youden", "sensitivity>=0.95", "specificity>=0.8"}
    assert ops["a"]["sensitivity>=0.95"]["threshold"] == ev.choose_threshold(vy[:, 0], vp[:, 0], "sensitivity", 0.95)
    assert ops["c"]["youden"]["threshold"] is None and ops["c"]["youden"]["test"]["sensitivity"]["value"] is None
    assert out["bootstrap"] == {"resamples": 20, "seed": 0, "unit": "patient"}
