"""Scores: per-class AUROC (equal to scikit-learn's roc_auc_score), the paper's prevalence-weighted mean and
the plain mean, patient-level bootstrap 95% confidence intervals, and a paired comparison of two runs.

A class whose test labels are all one value has no AUROC: it is reported as undefined (NaN in arrays,
null in JSON), never as 0.5 and never as an error, and it is left out of both means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from cxrbench.numbers import finite_or_none, rounded


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """AUROC of one class (ties count half, as in scikit-learn); NaN when y holds one value only."""
    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(np.asarray(p, dtype=np.float64), kind="mergesort")
    return float(_weighted_auc(np.asarray(p, np.float64)[order], y[order], np.ones(len(y))))


def per_class_auroc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(C,) AUROCs for label matrix y (N, C) and probabilities p (N, C); NaN for undefined classes."""
    return np.array([auroc(y[:, c], p[:, c]) for c in range(y.shape[1])])


def weighted_mean(aurocs: np.ndarray, y: np.ndarray) -> float:
    """The paper's mean: each class weighted by its share of positive labels (defined classes only)."""
    pos = np.asarray(y).sum(axis=0).astype(np.float64)
    ok = np.isfinite(aurocs)
    if not ok.any() or pos[ok].sum() == 0:
        return float("nan")
    return float(np.sum(aurocs[ok] * pos[ok]) / pos[ok].sum())


def plain_mean(aurocs: np.ndarray) -> float:
    """CheXNet's mean: the unweighted mean over defined classes."""
    ok = np.isfinite(aurocs)
    return float(aurocs[ok].mean()) if ok.any() else float("nan")


@numba.njit(cache=True, nogil=True)
def _weighted_auc(scores, labels, w):
    """AUROC from scores sorted ascending, with per-sample weights (bootstrap counts); ties count half."""
    n = scores.shape[0]
    neg_below = 0.0
    num = 0.0
    wpos = 0.0
    wneg = 0.0
    i = 0
    while i < n:
        j = i
        tpos = 0.0
        tneg = 0.0
        while j < n and scores[j] == scores[i]:
            if labels[j]:
                tpos += w[j]
            else:
                tneg += w[j]
            j += 1
        num += tpos * (neg_below + 0.5 * tneg)
        neg_below += tneg
        wpos += tpos
        wneg += tneg
        i = j
    if wpos == 0.0 or wneg == 0.0:
        return np.nan
    return num / (wpos * wneg)


@numba.njit(cache=True, nogil=True)
def _bootstrap_aucs(sorted_scores, sorted_labels, sorted_groups, counts):
    """(R, C) AUROCs for R resamples given per-group resample counts (R, G)."""
    r_n = counts.shape[0]
    c_n = sorted_scores.shape[0]
    n = sorted_scores.shape[1]
    out = np.empty((r_n, c_n))
    w = np.empty(n)
    for r in range(r_n):
        for c in range(c_n):
            for i in range(n):
                w[i] = counts[r, sorted_groups[c, i]]
            out[r, c] = _weighted_auc(sorted_scores[c], sorted_labels[c], w)
    return out


@dataclass(frozen=True)
class Scores:
    """Point estimates and percentile-bootstrap 95% intervals."""

    per_class: np.ndarray  # (C,)
    per_class_ci: np.ndarray  # (C, 2)
    weighted: float
    weighted_ci: tuple[float, float]
    plain: float
    plain_ci: tuple[float, float]
    n_images: int
    n_patients: int
    resamples: int
    seed: int

    def to_dict(self, class_names: tuple[str, ...]) -> dict:
        return {
            "per_class": {
                c: {
                    "auroc": finite_or_none(self.per_class[i]),
                    "ci95": [finite_or_none(self.per_class_ci[i, 0]), finite_or_none(self.per_class_ci[i, 1])],
                }
                for i, c in enumerate(class_names)
            },
            "weighted_mean": {
                "auroc": finite_or_none(self.weighted),
                "ci95": [finite_or_none(self.weighted_ci[0]), finite_or_none(self.weighted_ci[1])],
            },
            "plain_mean": {
                "auroc": finite_or_none(self.plain),
                "ci95": [finite_or_none(self.plain_ci[0]), finite_or_none(self.plain_ci[1])],
            },
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "unit": "patient"},
        }


def _prepare(y: np.ndarray, p: np.ndarray, groups: np.ndarray):
    order = np.argsort(p, axis=0, kind="mergesort").T  # (C, N)
    ss = np.take_along_axis(p.T.astype(np.float64), order, axis=1)
    sl = np.take_along_axis(y.T.astype(np.bool_), order, axis=1)
    _, gid = np.unique(groups, return_inverse=True)
    sg = gid[order]
    return ss, sl, sg, int(gid.max()) + 1


def _resample_counts(n_groups: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(resamples, n_groups))
    counts = np.zeros((resamples, n_groups))
    for r in range(resamples):
        counts[r] = np.bincount(draws[r], minlength=n_groups)
    return counts


def bootstrap_aurocs(y: np.ndarray, p: np.ndarray, groups: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(R, C) per-class AUROCs over patient-level resamples (a patient is drawn with all their images)."""
    ss, sl, sg, g = _prepare(np.asarray(y), np.asarray(p, np.float64), np.asarray(groups))
    return _bootstrap_aucs(ss, sl, sg, _resample_counts(g, resamples, seed))


def _means(aucs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(aucs)
    wv = np.where(ok, weights[None, :], 0.0)
    a0 = np.where(ok, aucs, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = (a0 * wv).sum(1) / wv.sum(1)
        plain = a0.sum(1) / ok.sum(1)
    return weighted, plain


def _ci(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


def score(y: np.ndarray, p: np.ndarray, patients: np.ndarray, resamples: int = 1000, seed: int = 0) -> Scores:
    """Per-class and mean AUROCs with patient-level bootstrap 95% CIs (percentile method, seeded)."""
    return score_with_resamples(y, p, patients, resamples, seed)[0]


def score_with_resamples(
    y: np.ndarray, p: np.ndarray, patients: np.ndarray, resamples: int = 1000, seed: int = 0
) -> tuple[Scores, np.ndarray]:
    """`score`, and its (R, C) per-class resample AUROCs (what `compare_resampled` pairs without drawing again:
    the resamples depend only on the patients, the count and the seed, not on the order of the rows)."""
    y = np.asarray(y)
    p = np.asarray(p, np.float64)
    point = per_class_auroc(y, p)
    boots = bootstrap_aurocs(y, p, patients, resamples, seed)
    # a class undefined on the full test set stays undefined in every resample
    boots[:, ~np.isfinite(point)] = np.nan
    weights = y.sum(0).astype(np.float64)
    bw, bp = _means(boots, weights)
    ci = np.array([_ci(boots[:, c]) for c in range(y.shape[1])])
    return Scores(
        point,
        ci,
        weighted_mean(point, y),
        _ci(bw),
        plain_mean(point),
        _ci(bp),
        len(y),
        len(np.unique(patients)),
        resamples,
        seed,
    ), boots


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of the difference a - b in a mean AUROC on one test set."""

    metric: str
    diff: float
    ci95: tuple[float, float]
    p_value: float
    resamples: int
    seed: int = 0

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.ci95[0]) and (self.ci95[0] > 0 or self.ci95[1] < 0))

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "diff": rounded(self.diff),
            "ci95": [rounded(self.ci95[0]), rounded(self.ci95[1])],
            "p_value": rounded(self.p_value),
            "significant": self.significant,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def compare(
    y: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    patients: np.ndarray,
    metric: str = "weighted",
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Paired patient-level bootstrap: both runs are scored on the same resamples of the same test set."""
    y = np.asarray(y)
    ba = bootstrap_aurocs(y, pa, patients, resamples, seed)
    bb = bootstrap_aurocs(y, pb, patients, resamples, seed)
    return compare_resampled(y, pa, pb, ba, bb, metric, resamples, seed)


def compare_resampled(
    y: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    ba: np.ndarray,
    bb: np.ndarray,
    metric: str = "weighted",
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """`compare` from the two runs' per-class resample AUROCs (R, C), drawn with the same patients, count and
    seed (e.g. by `score_with_resamples`)."""
    y = np.asarray(y)
    weights = y.sum(0).astype(np.float64)
    undefined = ~np.isfinite(per_class_auroc(y, pa))
    ba, bb = ba.copy(), bb.copy()
    ba[:, undefined] = np.nan
    bb[:, undefined] = np.nan
    idx = 0 if metric == "weighted" else 1
    da = _means(ba, weights)[idx]
    db = _means(bb, weights)[idx]
    pa_c, pb_c = per_class_auroc(y, pa), per_class_auroc(y, pb)
    point = (
        (weighted_mean(pa_c, y) - weighted_mean(pb_c, y))
        if metric == "weighted"
        else (plain_mean(pa_c) - plain_mean(pb_c))
    )
    d = (da - db)[np.isfinite(da - db)]
    if len(d) == 0:
        return Comparison(metric, float("nan"), (float("nan"), float("nan")), float("nan"), resamples, seed)
    p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))
    return Comparison(metric, float(point), _ci(d), float(p), resamples, seed)


def bootstrap_means(
    y: np.ndarray,
    preds: list[np.ndarray],
    patients: np.ndarray,
    metric: str = "weighted",
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates (S,) and per-resample means (R, S) of several prediction sets on the same resamples
    of one test set, for contrasts of more than two runs (e.g. a difference of differences)."""
    y = np.asarray(y)
    weights = y.sum(0).astype(np.float64)
    undefined = ~np.isfinite(per_class_auroc(y, preds[0]))
    idx = 0 if metric == "weighted" else 1
    boots, points = [], []
    for p in preds:
        b = bootstrap_aurocs(y, p, patients, resamples, seed)
        b[:, undefined] = np.nan
        boots.append(_means(b, weights)[idx])
        a = per_class_auroc(y, p)
        points.append(weighted_mean(a, y) if metric == "weighted" else plain_mean(a))
    return np.array(points), np.stack(boots, 1)


def contrast(
    points: np.ndarray, boots: np.ndarray, coef: np.ndarray, resamples: int, metric: str, seed: int = 0
) -> Comparison:
    """A linear contrast (e.g. [1, -1] or [1, -1, -1, 1]) of bootstrapped means, with its CI and p-value
    (`seed`: the seed the resamples were drawn with, recorded with the result)."""
    d = boots @ coef
    d = d[np.isfinite(d)]
    point = float(points @ coef)
    if len(d) == 0:
        return Comparison(metric, point, (float("nan"), float("nan")), float("nan"), resamples, seed)
    p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))
    return Comparison(metric, point, _ci(d), float(p), resamples, seed)
