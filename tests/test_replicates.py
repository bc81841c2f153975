"""Replicate groups (one recipe, several training seeds): scoring, the seed-aware comparison against a direct
computation, the single-seed identity with today's paired test, the refusals, and the calibration by
simulation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from cxrbench.errors import CxrbenchError
from cxrbench.metrics.auroc import bootstrap_aurocs, compare_resampled, score_with_resamples
from cxrbench.metrics.replicates import (
    Replicate,
    ReplicateError,
    compare_replicates,
    score_replicates,
)
from cxrbench.metrics.resample import BLOCK, resampled_aurocs
from cxrbench.metrics.seedsim import SimSettings, rejection_rates, simulate_pair


def _test_set(rng: np.random.Generator, n: int = 90, c: int = 3, patients: int = 30):
    pat = rng.integers(0, patients, n) * 7 + 1000  # ids that are not 0..G-1
    y = (rng.random((n, c)) < 0.3).astype(np.uint8)
    return np.array([f"i{k:04d}.png" for k in range(n)]), pat, y


def _group(rng, names, pat, y, seeds, shift=0.0, tag="a", ties=False):
    out = []
    for s in seeds:
        p = 1 / (1 + np.exp(-((1.0 + shift + rng.normal(0, 0.3)) * y + rng.normal(0, 1, y.shape))))
        if ties:
            p = np.round(p, 1)
        out.append(Replicate(s, names, pat, y, p, "smoke@v1", "data-x", f"{tag}/seed{s}"))
    return out


def _auroc_direct(y: np.ndarray, p: np.ndarray, mult: np.ndarray) -> float:
    """AUROC over an expanded sample (image i taken mult[i] times) by comparing every positive-negative pair."""
    pos, neg = y.astype(bool), ~y.astype(bool)
    wp, wn = mult[pos], mult[neg]
    if wp.sum() == 0 or wn.sum() == 0:
        return float("nan")
    gt = (p[pos][:, None] > p[neg][None, :]) + 0.5 * (p[pos][:, None] == p[neg][None, :])
    return float((wp[:, None] * wn[None, :] * gt).sum() / (wp.sum() * wn.sum()))


def _direct_resampled_means(reps, resamples, seed):
    """(S, R) weighted mean AUROC per seed and resample: patients drawn as auroc does, images expanded."""
    y = reps[0].y
    ids = np.unique(reps[0].patients)
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(resamples, len(ids)))
    w = y.sum(0).astype(float)
    out = np.empty((len(reps), resamples))
    for r in range(resamples):
        per_patient = np.bincount(draws[r], minlength=len(ids))
        mult = per_patient[np.searchsorted(ids, reps[0].patients)].astype(float)
        for s, rep in enumerate(reps):
            a = np.array([_auroc_direct(y[:, c], rep.p[:, c], mult) for c in range(y.shape[1])])
            ok = np.isfinite(a)
            out[s, r] = (a[ok] * w[ok]).sum() / w[ok].sum()
    return out


def _weighted_direct(y, p):
    a = np.array([_auroc_direct(y[:, c], p[:, c], np.ones(len(y))) for c in range(y.shape[1])])
    w = y.sum(0).astype(float)
    return a, float((a * w).sum() / w.sum())


@pytest.mark.parametrize("resamples", [5, BLOCK + 9])
def test_resampled_aurocs_equal_bootstrap_aurocs_bit_for_bit(resamples):
    rng = np.random.default_rng(1)
    names, pat, y = _test_set(rng, n=200)
    y[:, 2] = 0  # an undefined class
    preds = [r.p for r in _group(rng, names, pat, y, [0, 1], ties=True)] + [rng.random(y.shape)]
    got = resampled_aurocs(y, preds, pat, resamples, 4)
    for s, p in enumerate(preds):
        assert np.array_equal(got[s], bootstrap_aurocs(y, p, pat, resamples, 4), equal_nan=True)
    assert np.isnan(got[:, :, 2]).all()


def test_scores_per_seed_mean_and_sd_match_a_direct_computation():
    rng = np.random.default_rng(2)
    names, pat, y = _test_set(rng)
    reps = _group(rng, names, pat, y, [0, 3, 7], ties=True)
    s = score_replicates(reps, resamples=20, seed=5)
    direct = [_weighted_direct(y, r.p) for r in reps]
    assert s.seeds == (0, 3, 7) and s.n_seeds == 3 and not s.single_seed
    np.testing.assert_allclose(s.per_class, np.stack([d[0] for d in direct]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.weighted, [d[1] for d in direct], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.plain, np.stack([d[0] for d in direct]).mean(1), rtol=0, atol=1e-12)
    assert s.mean() == pytest.approx(np.mean([d[1] for d in direct]), abs=1e-12)
    assert s.sd() == pytest.approx(np.std([d[1] for d in direct], ddof=1), abs=1e-12)
    d = s.to_dict(("A", "B", "C"))
    assert d["weighted_mean"]["per_seed"] == [round(x[1], 6) for x in direct]
    assert d["n_seeds"] == 3 and d["bootstrap"] == {"resamples": 20, "seed": 5, "unit": "patient"}
    f = s.frame(("A", "B", "C"))
    assert len(f) == 3 * 5 and list(f.columns) == ["seed", "figure", "auroc"]
    by = f.set_index(["seed", "figure"])["auroc"]
    assert by[(3, "weighted_mean")] == s.weighted[1] and by[(7, "C")] == s.per_class[2, 2]


def test_row_order_does_not_change_a_group_or_a_comparison():
    rng = np.random.default_rng(3)
    names, pat, y = _test_set(rng)
    a = _group(rng, names, pat, y, [0, 1, 2])
    b = _group(rng, names, pat, y, [0, 1], shift=0.2, tag="b")
    perm = rng.permutation(len(names))
    shuffled = [replace(r, names=r.names[perm], patients=r.patients[perm], y=r.y[perm], p=r.p[perm]) for r in b]
    a1 = score_replicates([a[0], replace(a[1], names=names[perm], patients=pat[perm], y=y[perm], p=a[1].p[perm]), a[2]])
    a0 = score_replicates(a)
    assert np.array_equal(a0.resampled, a1.resampled) and np.array_equal(a0.weighted, a1.weighted)
    c0 = compare_replicates(a0, score_replicates(b))
    c1 = compare_replicates(a0, score_replicates(shuffled))
    assert c0.to_dict() == c1.to_dict()


def test_two_level_bootstrap_matches_a_direct_computation():
    rng = np.random.default_rng(4)
    names, pat, y = _test_set(rng, n=60, patients=20)
    a = _group(rng, names, pat, y, [0, 1, 2])
    b = _group(rng, names, pat, y, [0, 1], shift=0.3, tag="b")
    resamples, seed = 30, 9
    c = compare_replicates(
        score_replicates(a, resamples, seed), score_replicates(b, resamples, seed), method="two-level-bootstrap"
    )
    ma, mb = _direct_resampled_means(a, resamples, seed), _direct_resampled_means(b, resamples, seed)
    draws = np.random.default_rng([seed, 0x5EED])
    ia, ib = draws.integers(0, 3, (resamples, 3)), draws.integers(0, 2, (resamples, 2))
    d = np.array([ma[ia[r], r].mean() - mb[ib[r], r].mean() for r in range(resamples)])
    point = np.mean([_weighted_direct(y, r.p)[1] for r in a]) - np.mean([_weighted_direct(y, r.p)[1] for r in b])
    assert c.method == "two-level-bootstrap@v1" and not c.single_seed
    assert c.diff == pytest.approx(point, abs=1e-12)
    assert c.ci95 == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-12)
    assert c.p_value == pytest.approx(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())), abs=1e-12)
    assert (c.resamples, c.seed, c.seeds_a, c.seeds_b) == (30, 9, 3, 2)


def test_two_level_t_matches_a_direct_computation():
    rng = np.random.default_rng(5)
    names, pat, y = _test_set(rng, n=60, patients=20)
    a = _group(rng, names, pat, y, [0, 1, 2])
    b = _group(rng, names, pat, y, [4, 5, 6, 7], shift=0.3, tag="b")
    resamples, seed = 30, 2
    c = compare_replicates(score_replicates(a, resamples, seed), score_replicates(b, resamples, seed))
    ma, mb = _direct_resampled_means(a, resamples, seed), _direct_resampled_means(b, resamples, seed)
    fa = np.array([_weighted_direct(y, r.p)[1] for r in a])
    fb = np.array([_weighted_direct(y, r.p)[1] for r in b])
    # patient variance of the paired difference of the seed means, less the seed x patient part of each entry
    d = ma.mean(0) - mb.mean(0)
    v_pat = sum((x - d.mean()) ** 2 for x in d) / (resamples - 1)
    for m in (ma, mb):
        k = len(m)
        dev = m - m.mean(0)
        per_seed = [sum((x - dev[s].mean()) ** 2 for x in dev[s]) / (resamples - 1) for s in range(k)]
        v_pat -= np.mean(per_seed) * k / (k - 1) / k
    v_pat = max(v_pat, 0.0)
    va, vb = fa.var(ddof=1) / 3, fb.var(ddof=1) / 4
    se = np.sqrt(v_pat + va + vb)
    df = (v_pat + va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    diff = fa.mean() - fb.mean()
    assert c.method == "two-level-t@v1"
    assert c.diff == pytest.approx(diff, abs=1e-12)
    assert c.se == pytest.approx(se, rel=1e-9) and c.df == pytest.approx(df, rel=1e-9)
    assert c.p_value == pytest.approx(2 * stats.t.sf(abs(diff) / se, df), rel=1e-9)
    q = stats.t.ppf(0.975, df)
    assert c.ci95 == pytest.approx((diff - q * se, diff + q * se), rel=1e-9)
    assert c.sd_a == pytest.approx(fa.std(ddof=1), abs=1e-12)


@pytest.mark.parametrize("metric", ["weighted", "plain"])
def test_one_seed_each_is_exactly_todays_paired_patient_bootstrap(metric):
    rng = np.random.default_rng(6)
    names, pat, y = _test_set(rng, n=150)
    y[:, 1] = 1  # an undefined class
    (ra,), (rb,) = _group(rng, names, pat, y, [0], ties=True), _group(rng, names, pat, y, [0], shift=0.2, tag="b")
    sa, sb = score_replicates([ra], 100, 3), score_replicates([rb], 100, 3)
    (s1, ba), (_, bb) = score_with_resamples(y, ra.p, pat, 100, 3), score_with_resamples(y, rb.p, pat, 100, 3)
    assert np.array_equal(sa.resampled[0], ba, equal_nan=True)
    assert np.array_equal(sa.per_class[0], s1.per_class, equal_nan=True) and sa.weighted[0] == s1.weighted
    today = compare_resampled(y, ra.p, rb.p, ba, bb, metric, 100, 3)
    got = compare_replicates(sa, sb, metric)
    assert (got.diff, got.ci95, got.p_value, got.resamples, got.seed) == (
        today.diff,
        today.ci95,
        today.p_value,
        today.resamples,
        today.seed,
    )
    assert got.single_seed and got.method == "patient-bootstrap@v1"
    assert got.to_dict()["single_seed"] is True and got.to_dict()["seed_sd"] == [None, None]


def test_one_seed_against_several_is_marked_single_seed():
    rng = np.random.default_rng(7)
    names, pat, y = _test_set(rng)
    a, b = _group(rng, names, pat, y, [0, 1, 2]), _group(rng, names, pat, y, [0], tag="b")
    c = compare_replicates(score_replicates(a, 50), score_replicates(b, 50))
    assert c.single_seed and c.method == "patient-bootstrap@v1" and (c.seeds_a, c.seeds_b) == (3, 1)
    assert np.isfinite(c.sd_a) and np.isnan(c.sd_b)


def _refused(fn, *args, match: str):
    with pytest.raises(ReplicateError, match=match) as e:
        fn(*args)
    assert isinstance(e.value, CxrbenchError) and "\n" not in str(e.value)


def test_refusals():
    rng = np.random.default_rng(8)
    names, pat, y = _test_set(rng)
    a = _group(rng, names, pat, y, [0, 1])
    _refused(score_replicates, [], match="no replicates")
    _refused(score_replicates, [a[0], replace(a[1], protocol="smoke@v2")], match="protocol versions never pool")
    _refused(score_replicates, [a[0], replace(a[1], data="data-y")], match="different data never pool")
    _refused(score_replicates, [a[0], replace(a[1], seed=0)], match="seed 0 is also a/seed0's")
    other = names.copy()
    other[0] = "elsewhere.png"
    _refused(score_replicates, [a[0], replace(a[1], names=other)], match="a/seed1: its test images differ")
    _refused(score_replicates, [a[0], replace(a[1], names=names[1:], p=a[1].p[1:])], match="differ in length")
    bad = a[1].p.copy()
    bad[3, 1] = np.nan
    _refused(score_replicates, [a[0], replace(a[1], p=bad)], match="not a finite number")
    flipped = y.copy()
    flipped[0, 0] ^= 1
    _refused(score_replicates, [a[0], replace(a[1], y=flipped)], match="test labels differ")
    moved = pat.copy()
    moved[0] += 1
    _refused(score_replicates, [a[0], replace(a[1], patients=moved)], match="test patients differ")
    sa = score_replicates(a, 20, 0)
    b = _group(rng, names, pat, y, [0, 1], tag="b")
    _refused(compare_replicates, sa, score_replicates(b, 20, 1), match="needs the same resamples")
    _refused(
        compare_replicates,
        sa,
        score_replicates([replace(r, protocol="x@v1") for r in b], 20),
        match="cannot be compared",
    )
    _refused(compare_replicates, sa, score_replicates([replace(r, names=other) for r in b], 20), match="images differ")
    _refused(compare_replicates, sa, score_replicates([replace(r, y=flipped) for r in b], 20), match="labels differ")
    sb = score_replicates(b, 20)
    _refused(lambda: compare_replicates(sa, sb, method="t-test"), match="unknown comparison method")
    _refused(lambda: compare_replicates(sa, sb, metric="median"), match="unknown metric")


def test_simulation_is_seeded_and_pairs_one_test_set():
    a1, b1 = simulate_pair(SimSettings(patients=50), 2, 3, np.random.default_rng(0))
    a2, _ = simulate_pair(SimSettings(patients=50), 2, 3, np.random.default_rng(0))
    assert len(a1) == 2 and len(b1) == 3
    assert all(np.array_equal(r.p, q.p) for r, q in zip(a1, a2))
    assert all(np.array_equal(r.y, a1[0].y) and np.array_equal(r.names, a1[0].names) for r in a1 + b1)
    assert not np.array_equal(a1[0].p, a1[1].p)


@pytest.mark.slow
def test_seed_aware_test_holds_its_level_where_the_single_seed_test_does_not():
    # both entries from one distribution, training noise about twice the paired patient noise, 3 + 3 seeds
    null = rejection_rates(SimSettings(seed_sd=0.1), trials=300, seeds=3, resamples=100, seed=11)
    assert null["reject"]["two-level-t"] <= 0.07
    assert null["reject"]["single-seed"] >= 0.25
    assert null["reject"]["single-seed"] >= 4 * max(null["reject"]["two-level-t"], 0.01)
    # a difference of the paper's claims' size (+0.02 AUROC here) is found
    power = rejection_rates(SimSettings(seed_sd=0.1, effect=0.15), trials=60, seeds=5, resamples=100, seed=12)
    assert 0.015 < power["mean_diff"] < 0.025
    assert power["reject"]["two-level-t"] >= 0.8
