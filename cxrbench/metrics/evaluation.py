"""Beyond one AUROC: operating points chosen on validation, calibration, subgroup AUROCs and underdiagnosis.

Pure computations on arrays (no files): `evaluate` takes a run's test and validation predictions and the
test images' attributes (sex, age band, view, a user's column) and returns every figure as JSON-ready
numbers. Definitions, formulas and references are in docs/evaluation.md.

Every interval is a patient-level percentile bootstrap on the protocol's resamples of the whole test set
(`cxrbench.metrics.auroc._resample_counts`: same patients, count and seed give the same resamples), so a
group's figures and the run's AUROCs are resampled together. A rate is a ratio of sums; each patient's
sums are computed once, and a resample's totals are one matrix product of its patient counts with them.
A group whose positives (or negatives) number under `MIN_COUNT` gets no AUROC, TPR or FPR: it is shown
as too few, never as a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cxrbench.metrics.auroc import _resample_counts, auroc
from cxrbench.metrics.resample import BLOCK, _blocked_aucs, _tie_ends, group_ids
from cxrbench.numbers import finite_or_none

ECE_BINS = 15  # Guo et al. 2017's 15 equal-width bins on [0, 1]
MIN_COUNT = 10  # fewer positives (or negatives) than this in a group: no AUROC, TPR or FPR
RULES = ("youden", "sensitivity", "specificity")
DEFAULT_TARGET = 0.90
AGE_BANDS: tuple[tuple[int, int, str], ...] = ((0, 19, "0-19"), (20, 39, "20-39"), (40, 59, "40-59"), (60, 79, "60-79"))
OLDEST_BAND = "80+"
MAX_AGE = 120  # above: a data error in the metadata, left out of the age audit and counted
NO_FINDING = "No Finding"


# ------------------------------------------------------------------------------------------------ thresholds


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, TPR, FPR) at every distinct score, thresholds descending, an image called positive when
    its probability is >= the threshold (scikit-learn's `roc_curve` without dropped points or its inf)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, np.float64)
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(ps[1:] != ps[:-1]), len(ps) - 1]  # the last image of each run of equal scores
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    n1, n0 = int(y.sum()), int((~y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return ps[last], tp / n1, fp / n0


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str, target: float = DEFAULT_TARGET) -> float | None:
    """The threshold `rule` picks on validation labels y and probabilities p (None without positives or
    negatives): "youden" maximises TPR - FPR (the highest such threshold on ties), "sensitivity" is the
    highest threshold whose TPR >= target, "specificity" the lowest whose specificity >= target (just
    above the largest score when only calling nothing positive reaches it)."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return None
    thr, tpr, fpr = roc_points(y, p)
    if rule == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    if rule == "sensitivity":
        return float(thr[int(np.flatnonzero(tpr >= target - 1e-12)[0])])
    if rule == "specificity":
        ok = np.flatnonzero(1.0 - fpr >= target - 1e-12)
        return float(thr[ok[-1]]) if len(ok) else float(np.nextafter(thr[0], np.inf))
    raise ValueError(f"unknown rule {rule!r}")


# ------------------------------------------------------------------------------------------------ resampling


@dataclass(frozen=True)
class Resampler:
    """The protocol's patient resamples of one test set: per-image patient numbers `gid` (0..G-1 in sorted
    id order, as the AUROC scoring numbers them) and the resample counts (R, G)."""

    gid: np.ndarray
    counts: np.ndarray
    seed: int

    @classmethod
    def of(cls, patients: np.ndarray, resamples: int, seed: int) -> Resampler:
        gid, g = group_ids(patients)
        return cls(gid, _resample_counts(g, resamples, seed), seed)

    @property
    def resamples(self) -> int:
        return int(self.counts.shape[0])

    def sums(self, values: np.ndarray) -> np.ndarray:
        """(G, K) per-patient sums of per-image values (N, K)."""
        values = np.asarray(values, np.float64).reshape(len(self.gid), -1)
        out = np.zeros((self.counts.shape[1], values.shape[1]))
        if len(self.gid):
            order = np.argsort(self.gid, kind="stable")
            g = self.gid[order]
            starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
            out[g[starts]] = np.add.reduceat(values[order], starts, axis=0)
        return out

    def ratio(self, num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point ratios (K,) of per-image sums num/den (N, K) and their percentile 95% intervals (K, 2) over
        the resamples (resamples whose denominator is 0 are left out, as the AUROC intervals leave out
        undefined resamples)."""
        sn, sd = self.sums(num), self.sums(den)
        with np.errstate(invalid="ignore", divide="ignore"):
            point = sn.sum(0) / sd.sum(0)
            boots = (self.counts @ sn) / (self.counts @ sd)
        return point, _ci_cols(boots)

    def aurocs(self, y: np.ndarray, p: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(R, C) AUROCs of the images `rows` (a group) on the whole test set's resamples: each resample
        weights a group's image by its patient's count, as `auroc.bootstrap_aurocs` weights every image."""
        y = np.asarray(y)[rows].astype(np.bool_)
        p = np.asarray(p, np.float64)[rows]
        order = np.argsort(p, axis=0, kind="mergesort").T  # (C, n)
        sg = np.ascontiguousarray(self.gid[rows][order])
        sl = np.ascontiguousarray(np.take_along_axis(y.T, order, axis=1))
        te = _tie_ends(np.take_along_axis(p.T, order, axis=1))
        r_n, c_n = self.resamples, y.shape[1]
        out = np.empty((r_n, c_n))
        block = np.empty((c_n, BLOCK))
        for r0 in range(0, r_n, BLOCK):
            r1 = min(r_n, r0 + BLOCK)
            res = block[:, : r1 - r0]
            _blocked_aucs(sg, sl, te, np.ascontiguousarray(self.counts[r0:r1].T), res)
            out[r0:r1] = res.T
        return out


def _ci_cols(boots: np.ndarray) -> np.ndarray:
    """(K, 2) percentile 2.5/97.5 of each column's finite values (NaN where none)."""
    out = np.full((boots.shape[1], 2), np.nan)
    for k in range(boots.shape[1]):
        x = boots[:, k][np.isfinite(boots[:, k])]
        if len(x):
            out[k] = np.percentile(x, [2.5, 97.5])
    return out


def _value(point: float, ci: np.ndarray) -> dict:
    return {"value": finite_or_none(point), "ci95": [finite_or_none(ci[0]), finite_or_none(ci[1])]}


# ------------------------------------------------------------------------------------------------ operating points


def confusion_rates(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, rs: Resampler) -> dict[str, tuple]:
    """Sensitivity, specificity, PPV, NPV and F1 of calling p >= threshold (one per column; NaN: none)
    on the test labels y, each (point (K,), CI (K, 2)) on the patient resamples. The four counts are
    resampled together (one matrix product) and every rate is a ratio of them."""
    y = np.asarray(y).astype(np.float64)
    called = (np.asarray(p) >= thresholds[None, :]).astype(np.float64)
    called[:, ~np.isfinite(thresholds)] = np.nan
    k = y.shape[1]
    cells = np.concatenate([called * y, called * (1 - y), (1 - called) * y, (1 - called) * (1 - y)], axis=1)
    sums = rs.sums(cells)
    out = {}
    for name, (pt, boots) in _rates(sums.sum(0)[None, :], rs.counts @ sums, k).items():
        out[name] = (pt[0], _ci_cols(boots))
    return out


def _rates(point: np.ndarray, boots: np.ndarray, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The five rates from (.., 4K) counts laid out as TP, FP, FN, TN: (point, resampled) per rate."""

    def split(a):
        return a[:, :k], a[:, k : 2 * k], a[:, 2 * k : 3 * k], a[:, 3 * k :]

    out: dict[str, dict[str, np.ndarray]] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for which, a in (("point", point), ("boots", boots)):
            tp, fp, fn, tn = split(a)
            for name, v in (
                ("sensitivity", tp / (tp + fn)),
                ("specificity", tn / (tn + fp)),
                ("ppv", tp / (tp + fp)),
                ("npv", tn / (tn + fn)),
                ("f1", 2 * tp / (2 * tp + fp + fn)),
            ):
                out.setdefault(name, {})[which] = v
    return {name: (v["point"], v["boots"]) for name, v in out.items()}


def thresholds(val_y: np.ndarray, val_p: np.ndarray, rule: str, target: float = DEFAULT_TARGET) -> np.ndarray:
    """(C,) thresholds `rule` picks per class on validation labels and probabilities (NaN: none)."""
    return np.array(
        [
            np.nan if (t := choose_threshold(val_y[:, i], val_p[:, i], rule, target)) is None else t
            for i in range(np.asarray(val_y).shape[1])
        ]
    )


def operating_points(
    val_y: np.ndarray,
    val_p: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    classes: Sequence[str],
    rs: Resampler,
    rules: Sequence[tuple[str, float]],
) -> dict:
    """Per class and rule (name, target): the threshold chosen on validation (unrounded, so that anyone can
    call the same images) and the test figures there."""
    out: dict = {c: {} for c in classes}
    for rule, target in rules:
        thr = thresholds(val_y, val_p, rule, target)
        rates = confusion_rates(y, p, thr, rs)
        key = rule if rule == "youden" else f"{rule}>={target:g}"
        for i, c in enumerate(classes):
            out[c][key] = {
                "rule": rule,
                "target": None if rule == "youden" else target,
                "threshold": float(thr[i]) if np.isfinite(thr[i]) else None,
                "test": {m: _value(pt[i], ci[i]) for m, (pt, ci) in rates.items()},
            }
    return out


# ------------------------------------------------------------------------------------------------ calibration


def equal_width_bins(p: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin of each probability: bins (k/B, (k+1)/B], the first closed at 0 (Guo et al.; scikit-learn's
    `calibration_curve(strategy="uniform")` bins the same way)."""
    return np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p)


def equal_mass_bins(p: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin of each probability for the adaptive ECE: the images in probability order (ties in image order),
    bin k holding sorted positions floor(k N / B) to floor((k + 1) N / B) - 1 (sizes differ by at most one)."""
    n = len(p)
    rank = np.empty(n, np.int64)
    rank[np.argsort(p, kind="mergesort")] = np.arange(n)
    starts = np.arange(bins) * n // bins
    return np.searchsorted(starts, rank, side="right") - 1


def _binned_error(y: np.ndarray, p: np.ndarray, ids: np.ndarray, bins: int) -> float:
    sp = np.bincount(ids, weights=p, minlength=bins)
    sy = np.bincount(ids, weights=y, minlength=bins)
    return float(np.abs(sp - sy).sum() / len(p))  # sum_b (n_b / N) |mean p_b - rate_b|


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of (bin's share of images) x |mean probability -
    positive rate|."""
    y, p = np.asarray(y, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    return _binned_error(y, p, equal_width_bins(p, bins), bins)


def adaptive_ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """The ECE over equal-mass bins (Nixon et al. 2019's adaptive binning)."""
    y, p = np.asarray(y, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    return _binned_error(y, p, equal_mass_bins(p, bins), bins)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between probability and label."""
    return float(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram's equal-width bins: edges, images, mean probability and positive rate (None in
    an empty bin)."""
    y, p = np.asarray(y, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    ids = equal_width_bins(p, bins)
    n = np.bincount(ids, minlength=bins)
    sp = np.bincount(ids, weights=p, minlength=bins)
    sy = np.bincount(ids, weights=y, minlength=bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return [
        {
            "low": finite_or_none(edges[b]),
            "high": finite_or_none(edges[b + 1]),
            "images": int(n[b]),
            "mean_probability": finite_or_none(sp[b] / n[b]) if n[b] else None,
            "positive_rate": finite_or_none(sy[b] / n[b]) if n[b] else None,
        }
        for b in range(bins)
    ]


def calibration(y: np.ndarray, p: np.ndarray, classes: Sequence[str], bins: int = ECE_BINS) -> dict:
    """ECE, adaptive ECE, Brier score and reliability bins per class and pooled (every image-class pair)."""

    def one(yy, pp) -> dict:
        return {
            "ece": finite_or_none(ece(yy, pp, bins)),
            "adaptive_ece": finite_or_none(adaptive_ece(yy, pp, bins)),
            "brier": finite_or_none(brier(yy, pp)),
            "reliability": reliability(yy, pp, bins),
        }

    return {
        "bins": bins,
        "binning": f"ECE: {bins} equal-width bins on [0, 1], (k/{bins}, (k+1)/{bins}], the first closed at 0; "
        f"adaptive ECE: {bins} equal-mass bins in probability order; each bin weighted by its share of images",
        "per_class": {c: one(y[:, i], p[:, i]) for i, c in enumerate(classes)},
        "pooled": one(y, p),
    }


# ------------------------------------------------------------------------------------------------ subgroups


def age_bands(ages: np.ndarray) -> np.ndarray:
    """Each age's band ("0-19" ... "80+"), None above MAX_AGE (a data error) or below 0."""
    ages = np.asarray(ages)
    out = np.full(len(ages), None, dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(ages >= lo) & (ages <= hi)] = name
    out[(ages >= 80) & (ages <= MAX_AGE)] = OLDEST_BAND
    return out


@dataclass(frozen=True)
class Attribute:
    """A subgroup attribute: per test image its group (None: left out, e.g. an age over 120), the groups in
    display order, and a note on where it comes from and what was left out."""

    name: str
    values: np.ndarray  # (N,) object
    groups: tuple[str, ...]
    note: str = ""


def _group_rows(attr: Attribute) -> list[tuple[str, np.ndarray]]:
    return [(g, np.flatnonzero(attr.values == g)) for g in attr.groups]


def _gap(values: Mapping[str, float | None]) -> dict | None:
    """The largest difference between groups with a number, and which two (None with fewer than two)."""
    have = {g: v for g, v in values.items() if v is not None}
    if len(have) < 2:
        return None
    hi = max(have, key=lambda g: have[g])
    lo = min(have, key=lambda g: have[g])
    return {"value": finite_or_none(have[hi] - have[lo]), "highest": hi, "lowest": lo}


def subgroups(
    y: np.ndarray, p: np.ndarray, classes: Sequence[str], attrs: Sequence[Attribute], youden: np.ndarray, rs: Resampler
) -> dict:
    """Per attribute, group and class: images, positives, AUROC with CI (or too few), TPR and FPR at the
    Youden threshold; per class the worst group and the largest AUROC, TPR and FPR gaps."""
    yb = np.asarray(y).astype(bool)
    out: dict = {}
    for attr in attrs:
        groups = _group_rows(attr)
        per: dict = {c: {"groups": {}} for c in classes}
        for g, rows in groups:
            pos = yb[rows].sum(0)
            neg = len(rows) - pos
            ok = (pos >= MIN_COUNT) & (neg >= MIN_COUNT)
            boots = rs.aurocs(y, p, rows) if ok.any() and len(rows) else None
            rates = confusion_rates(y[rows], p[rows], youden, _sub(rs, rows)) if len(rows) else None
            for i, c in enumerate(classes):
                e: dict = {"images": int(len(rows)), "positives": int(pos[i]), "negatives": int(neg[i])}
                if ok[i]:
                    a = auroc(yb[rows, i], p[rows, i])
                    e["auroc"] = _value(a, _ci_cols(boots[:, i : i + 1])[0])  # type: ignore[index]
                else:
                    e["auroc"] = None
                    e["too_few"] = (
                        f"{int(pos[i])} positives, {int(neg[i])} negatives (an AUROC needs {MIN_COUNT} of each)"
                    )
                e["tpr"] = (
                    _value(rates["sensitivity"][0][i], rates["sensitivity"][1][i])
                    if (rates and pos[i] >= MIN_COUNT and np.isfinite(youden[i]))
                    else None
                )
                e["fpr"] = (
                    _value(1 - rates["specificity"][0][i], 1 - rates["specificity"][1][i][::-1])
                    if rates and neg[i] >= MIN_COUNT and np.isfinite(youden[i])
                    else None
                )
                per[c]["groups"][g] = e
        for c in classes:
            gr = per[c]["groups"]
            aucs = {g: (e["auroc"] or {}).get("value") for g, e in gr.items()}
            have = {g: v for g, v in aucs.items() if v is not None}
            per[c]["worst_group"] = min(have, key=lambda g: have[g]) if have else None
            per[c]["auroc_gap"] = _gap(aucs)
            per[c]["tpr_gap"] = _gap({g: (e["tpr"] or {}).get("value") for g, e in gr.items()})
            per[c]["fpr_gap"] = _gap({g: (e["fpr"] or {}).get("value") for g, e in gr.items()})
        out[attr.name] = {
            "groups": list(attr.groups),
            "note": attr.note,
            "left_out": int(sum(v is None for v in attr.values)),
            "per_class": per,
        }
    return out


def _sub(rs: Resampler, rows: np.ndarray) -> Resampler:
    """The same resamples seen from a subset of the images (each keeps its patient's counts)."""
    return Resampler(rs.gid[rows], rs.counts, rs.seed)


# ------------------------------------------------------------------------------------------------ underdiagnosis


def called_healthy(p: np.ndarray, classes: Sequence[str], youden: np.ndarray) -> tuple[np.ndarray, str]:
    """Per image, whether the model calls it healthy at the Youden thresholds, and the rule in words: with a
    "No Finding" class, its probability at or above its threshold; without, every finding below its own."""
    p = np.asarray(p)
    if NO_FINDING in classes:
        i = list(classes).index(NO_FINDING)
        if not np.isfinite(youden[i]):
            return np.zeros(len(p), bool), "no threshold for No Finding (no validation positives or negatives)"
        return np.asarray(p[:, i] >= youden[i]), "No Finding called positive at its validation Youden threshold"
    ok = np.isfinite(youden)
    below = p[:, ok] < youden[None, ok]
    skipped = [c for c, k in zip(classes, ok) if not k]
    rule = "every finding below its validation Youden threshold"
    if skipped:
        rule += f" ({', '.join(skipped)}: no threshold, not counted)"
    return np.asarray(below.all(1)), rule


def underdiagnosis(
    y: np.ndarray, p: np.ndarray, classes: Sequence[str], attrs: Sequence[Attribute], youden: np.ndarray, rs: Resampler
) -> dict:
    """Per group, the share of images with at least one finding that the model calls healthy (Seyyed-
    Kalantari et al. 2021), with its CI, and per attribute the largest gap between groups."""
    y = np.asarray(y).astype(bool)
    findings = [i for i, c in enumerate(classes) if c != NO_FINDING]
    sick = np.asarray(y[:, findings].any(1))
    healthy, rule = called_healthy(p, classes, youden)
    num = (sick & healthy).astype(np.float64)[:, None]
    den = sick.astype(np.float64)[:, None]

    def rate(rows: np.ndarray) -> dict:
        n = int(sick[rows].sum())
        e: dict = {"images": int(len(rows)), "with_finding": n}
        if n < MIN_COUNT:
            e["rate"] = None
            e["too_few"] = f"{n} images with a finding (a rate needs {MIN_COUNT})"
            return e
        pt, ci = _sub(rs, rows).ratio(num[rows], den[rows])
        e["rate"] = _value(pt[0], ci[0])
        return e

    out: dict = {"rule": rule, "all": rate(np.arange(len(y))), "by": {}}
    for attr in attrs:
        groups = {g: rate(rows) for g, rows in _group_rows(attr)}
        out["by"][attr.name] = {
            "groups": groups,
            "gap": _gap({g: (e["rate"] or {}).get("value") for g, e in groups.items()}),
        }
    return out


# ------------------------------------------------------------------------------------------------ all of it


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    patients: np.ndarray,
    val_y: np.ndarray,
    val_p: np.ndarray,
    classes: Sequence[str],
    attrs: Sequence[Attribute],
    resamples: int,
    seed: int,
    sensitivity: float = DEFAULT_TARGET,
    specificity: float = DEFAULT_TARGET,
) -> dict:
    """Operating points (thresholds from the validation predictions), calibration, subgroups and
    underdiagnosis of test predictions, as JSON-ready numbers."""
    y = np.asarray(y)
    p = np.asarray(p, np.float64)
    rs = Resampler.of(patients, resamples, seed)
    rules = [("youden", 0.0), ("sensitivity", sensitivity), ("specificity", specificity)]
    val_y, val_p = np.asarray(val_y), np.asarray(val_p, np.float64)
    ops = operating_points(val_y, val_p, y, p, classes, rs, rules)
    youden = thresholds(val_y, val_p, "youden")
    return {
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": "patient"},
        "min_count": MIN_COUNT,
        "operating_points": ops,
        "calibration": calibration(y, p, classes),
        "subgroups": subgroups(y, p, classes, attrs, youden, rs),
        "underdiagnosis": underdiagnosis(y, p, classes, attrs, youden, rs),
    }
