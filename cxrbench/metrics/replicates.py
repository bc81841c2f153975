"""Replicates: records of one recipe that differ only in the training seed, scored together and compared with
a test that counts both the training noise (seeds) and the test-set noise (patients).

Every seed of a group is scored on the same test images and the same patient resamples (the protocol's
bootstrap seed), so per-seed figures are comparable, and a comparison of two groups pairs them patient by
patient. Methods (named with a version, recorded with every result; docs/seeds.md has the calibration):

- `two-level-t@v1` (the default when both entries have two or more seeds): the difference of the seed means,
  with a variance made of the between-seed variance of each entry (s^2 / S) and the patient-bootstrap
  variance of the paired difference (the seed x patient part, already in s^2, taken out once), referred to a
  t distribution with Welch-Satterthwaite degrees of freedom. Calibrated by simulation at 3 + 3 seeds.
- `two-level-bootstrap@v1`: the two-level paired bootstrap (seeds resampled within each entry, patients
  resampled identically for both entries); percentile CI. Kept for comparison: with 3 seeds per entry it
  rejects a true null far more often than 5% (docs/seeds.md).
- `patient-bootstrap@v1` (`single_seed`): an entry with one seed: today's paired patient bootstrap of the
  difference of the seed means, which ignores training noise; for one seed each it is exactly
  `cxrbench.metrics.auroc.compare_resampled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from cxrbench.errors import RecordError
from cxrbench.metrics.auroc import (
    Comparison,
    _ci,
    _means,
    compare_resampled,
    per_class_auroc,
    plain_mean,
    weighted_mean,
)
from cxrbench.metrics.resample import resampled_aurocs
from cxrbench.numbers import finite_or_none

TWO_LEVEL_T = "two-level-t@v1"
TWO_LEVEL_BOOTSTRAP = "two-level-bootstrap@v1"
PATIENT_BOOTSTRAP = "patient-bootstrap@v1"
METHODS = {"two-level-t": TWO_LEVEL_T, "two-level-bootstrap": TWO_LEVEL_BOOTSTRAP}
# the seed-level draws of the two-level bootstrap come from their own stream, derived from the bootstrap seed
_SEED_STREAM = 0x5EED


class ReplicateError(RecordError):
    """Records that cannot be pooled as replicates of one recipe, or two groups that cannot be compared."""


@dataclass(frozen=True)
class Replicate:
    """One training seed's test predictions, with what must agree between replicates: the protocol (id and
    version) and a fingerprint of the data (e.g. the metadata's sha256 and the split hashes)."""

    seed: int
    names: np.ndarray  # (N,) test image names
    patients: np.ndarray  # (N,)
    y: np.ndarray  # (N, C) labels
    p: np.ndarray  # (N, C) probabilities
    protocol: str  # e.g. "nih-official-14c@v1"
    data: str
    source: str = ""  # where it was read from, named in refusals


def _name(r: Replicate) -> str:
    return r.source or f"seed {r.seed}"


def align(replicates: Sequence[Replicate]) -> list[Replicate]:
    """The replicates with rows in the first one's image order, after checking that they may pool: one protocol
    version, one data fingerprint, distinct seeds, the same test images with the same labels and patients.
    Raises ReplicateError (one line) otherwise."""
    if not replicates:
        raise ReplicateError("no replicates to score")
    first = replicates[0]
    names = np.asarray(first.names).astype(str)
    if len(np.unique(names)) != len(names):
        raise ReplicateError(f"{_name(first)}: its test images repeat a name")
    order_of = {n: i for i, n in enumerate(names)}
    seen: dict[int, str] = {}
    out = []
    for r in replicates:
        if r.protocol != first.protocol:
            raise ReplicateError(
                f"{_name(r)}: protocol {r.protocol} is not {_name(first)}'s {first.protocol}; replicates of "
                "different protocol versions never pool"
            )
        if r.data != first.data:
            raise ReplicateError(
                f"{_name(r)}: scored on other data than {_name(first)} (data fingerprints differ); replicates of "
                "different data never pool"
            )
        if r.seed in seen:
            raise ReplicateError(f"{_name(r)}: seed {r.seed} is also {seen[r.seed]}'s; each seed counts once")
        seen[r.seed] = _name(r)
        rn = np.asarray(r.names).astype(str)
        if not (len(np.asarray(r.y)) == len(np.asarray(r.p)) == len(np.asarray(r.patients)) == len(rn)):
            raise ReplicateError(f"{_name(r)}: its names, patients, labels and predictions differ in length")
        if len(rn) != len(names) or set(rn) != set(order_of):
            raise ReplicateError(f"{_name(r)}: its test images differ from {_name(first)}'s")
        idx = np.argsort(np.array([order_of[n] for n in rn]), kind="stable")
        y, p, pat = np.asarray(r.y)[idx], np.asarray(r.p, np.float64)[idx], np.asarray(r.patients)[idx]
        if y.shape != np.asarray(first.y).shape or p.shape != y.shape:
            raise ReplicateError(f"{_name(r)}: its labels or predictions are not {np.asarray(first.y).shape}")
        if not np.isfinite(p).all():
            raise ReplicateError(f"{_name(r)}: its predictions hold a value that is not a finite number")
        if not np.array_equal(y, first.y):
            raise ReplicateError(f"{_name(r)}: its test labels differ from {_name(first)}'s")
        if not np.array_equal(pat.astype(str), np.asarray(first.patients).astype(str)):
            raise ReplicateError(f"{_name(r)}: its test patients differ from {_name(first)}'s")
        out.append(Replicate(r.seed, names, first.patients, first.y, p, r.protocol, r.data, r.source))
    return out


@dataclass(frozen=True)
class ReplicateScores:
    """Per-seed figures of a replicate group on one test set, and each seed's per-class AUROCs on the same
    patient resamples (what `compare_replicates` pairs without drawing again)."""

    replicates: tuple[Replicate, ...]  # aligned: one image order
    per_class: np.ndarray  # (S, C) point AUROCs, NaN for an undefined class
    weighted: np.ndarray  # (S,) the paper's prevalence-weighted mean
    plain: np.ndarray  # (S,) the unweighted mean
    resampled: np.ndarray  # (S, R, C) per-class AUROCs on R patient resamples
    resamples: int
    seed: int  # the bootstrap seed

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.replicates)

    @property
    def n_seeds(self) -> int:
        return len(self.replicates)

    @property
    def single_seed(self) -> bool:
        return self.n_seeds == 1

    def figure(self, metric: str = "weighted") -> np.ndarray:
        """(S,) the per-seed mean AUROC named by metric ("weighted" or "plain")."""
        return self.weighted if metric == "weighted" else self.plain

    def mean(self, metric: str = "weighted") -> float:
        """The mean over seeds."""
        return float(np.mean(self.figure(metric)))

    def sd(self, metric: str = "weighted") -> float:
        """The seed standard deviation (ddof 1); NaN for one seed."""
        f = self.figure(metric)
        return float(np.std(f, ddof=1)) if len(f) > 1 else float("nan")

    def frame(self, class_names: tuple[str, ...]):
        """A pandas DataFrame with one row per seed and figure (each class, weighted_mean, plain_mean): columns
        seed, figure, auroc (NaN for an undefined class)."""
        import pandas as pd

        rows = []
        for i, seed in enumerate(self.seeds):
            for c, name in enumerate(class_names):
                rows.append((seed, name, float(self.per_class[i, c])))
            rows.append((seed, "weighted_mean", float(self.weighted[i])))
            rows.append((seed, "plain_mean", float(self.plain[i])))
        return pd.DataFrame(rows, columns=["seed", "figure", "auroc"])

    def to_dict(self, class_names: tuple[str, ...]) -> dict:
        """Numbers for a board export: per seed, and mean and sd over seeds, per class and for both means."""

        def summary(v: np.ndarray) -> dict:
            ok = v[np.isfinite(v)]
            return {
                "mean": finite_or_none(ok.mean()) if len(ok) else None,
                "sd": finite_or_none(ok.std(ddof=1)) if len(ok) > 1 else None,
                "per_seed": [finite_or_none(x) for x in v],
            }

        return {
            "seeds": list(self.seeds),
            "n_seeds": self.n_seeds,
            "single_seed": self.single_seed,
            "per_class": {c: summary(self.per_class[:, i]) for i, c in enumerate(class_names)},
            "weighted_mean": summary(self.weighted),
            "plain_mean": summary(self.plain),
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "unit": "patient"},
        }


def score_replicates(replicates: Sequence[Replicate], resamples: int = 1000, seed: int = 0) -> ReplicateScores:
    """Score a replicate group (checked and aligned by `align`): each seed's per-class AUROCs and both means,
    and every seed's per-class AUROCs on the same `resamples` patient resamples drawn with `seed`."""
    reps = align(replicates)
    boots = resampled_aurocs(reps[0].y, [r.p for r in reps], reps[0].patients, resamples, seed)
    return _scores(reps, boots, resamples, seed)


def scores_from(
    replicates: Sequence[Replicate], resampled: Sequence[np.ndarray], resamples: int, seed: int
) -> ReplicateScores:
    """As `score_replicates`, with each seed's per-class AUROCs on the patient resamples already drawn (the
    board's: `auroc.bootstrap_aurocs` with `resamples` and `seed`, bit-identical to `resampled_aurocs`); the
    resamples do not depend on the row order, so aligning the rows leaves them as they are."""
    reps = align(replicates)
    boots = np.stack([np.asarray(b, np.float64) for b in resampled])
    if boots.shape[:2] != (len(reps), resamples) or boots.shape[2] != reps[0].y.shape[1]:
        raise ReplicateError(f"{_name(reps[0])}: its resampled AUROCs are not ({resamples}, classes) per seed")
    return _scores(reps, boots, resamples, seed)


def _scores(reps: list[Replicate], boots: np.ndarray, resamples: int, seed: int) -> ReplicateScores:
    y = reps[0].y
    point = np.stack([per_class_auroc(y, r.p) for r in reps])
    # a class undefined on the full test set stays undefined in every resample (as in auroc.score)
    boots[:, :, ~np.isfinite(point[0])] = np.nan
    return ReplicateScores(
        tuple(reps),
        point,
        np.array([weighted_mean(a, y) for a in point]),
        np.array([plain_mean(a) for a in point]),
        boots,
        resamples,
        seed,
    )


@dataclass(frozen=True)
class SeedComparison:
    """The difference a - b of the seed means of a mean AUROC, its 95% CI and p-value, and how it was got."""

    metric: str
    diff: float
    ci95: tuple[float, float]
    p_value: float
    method: str  # with its version, e.g. "two-level-t@v1"
    resamples: int
    seed: int
    seeds_a: int
    seeds_b: int
    sd_a: float  # seed sd of each entry's figure (NaN for one seed)
    sd_b: float
    se: float = float("nan")  # two-level-t only: the standard error and the degrees of freedom
    df: float = float("nan")

    @property
    def single_seed(self) -> bool:
        """True when an entry has one seed: the test then ignores training noise."""
        return self.method == PATIENT_BOOTSTRAP

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.ci95[0]) and (self.ci95[0] > 0 or self.ci95[1] < 0))

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "diff": finite_or_none(self.diff),
            "ci95": [finite_or_none(self.ci95[0]), finite_or_none(self.ci95[1])],
            "p_value": finite_or_none(self.p_value),
            "significant": self.significant,
            "method": self.method,
            "single_seed": self.single_seed,
            "resamples": self.resamples,
            "seed": self.seed,
            "seeds": [self.seeds_a, self.seeds_b],
            "seed_sd": [finite_or_none(self.sd_a), finite_or_none(self.sd_b)],
            "se": finite_or_none(self.se),
            "df": finite_or_none(self.df),
        }


def _check_pair(a: ReplicateScores, b: ReplicateScores) -> ReplicateScores:
    """b with its rows in a's image order, after checking that the two may be paired."""
    ra, rb = a.replicates[0], b.replicates[0]
    if ra.protocol != rb.protocol or ra.data != rb.data:
        raise ReplicateError(f"{_name(rb)}: another protocol or data than {_name(ra)}; the two cannot be compared")
    if len(ra.names) != len(rb.names) or set(ra.names) != set(rb.names):
        raise ReplicateError(f"{_name(rb)}: its test images differ from {_name(ra)}'s")
    if (a.resamples, a.seed) != (b.resamples, b.seed):
        raise ReplicateError(
            f"{_name(rb)}: resampled {b.resamples} times with seed {b.seed}, {_name(ra)} {a.resamples} times with "
            f"seed {a.seed}; a paired test needs the same resamples"
        )
    if np.array_equal(ra.names, rb.names):
        reps = b.replicates
    else:  # the patient resamples do not depend on the row order: only the rows move
        pos = {n: i for i, n in enumerate(rb.names)}
        idx = np.array([pos[n] for n in ra.names])
        reps = tuple(
            Replicate(r.seed, ra.names, r.patients[idx], r.y[idx], r.p[idx], r.protocol, r.data, r.source)
            for r in b.replicates
        )
    if not np.array_equal(reps[0].y, ra.y):
        raise ReplicateError(f"{_name(rb)}: its test labels differ from {_name(ra)}'s")
    if not np.array_equal(np.asarray(reps[0].patients).astype(str), np.asarray(ra.patients).astype(str)):
        raise ReplicateError(f"{_name(rb)}: its test patients differ from {_name(ra)}'s")
    return ReplicateScores(reps, b.per_class, b.weighted, b.plain, b.resampled, b.resamples, b.seed)


def _resampled_means(s: ReplicateScores, metric: str, undefined: np.ndarray) -> np.ndarray:
    """(S, R) the per-seed mean AUROC on each patient resample, classes undefined in `undefined` left out."""
    weights = s.replicates[0].y.sum(0).astype(np.float64)
    idx = 0 if metric == "weighted" else 1
    out = []
    for boots in s.resampled:
        bb = boots.copy()
        bb[:, undefined] = np.nan
        out.append(_means(bb, weights)[idx])
    return np.stack(out)


def _p_two_sided(d: np.ndarray) -> float:
    return float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))


def compare_replicates(
    a: ReplicateScores, b: ReplicateScores, metric: str = "weighted", method: str = "two-level-t"
) -> SeedComparison:
    """Compare two replicate groups scored on the same test images and patient resamples. With two or more
    seeds on both sides, `method` ("two-level-t", the default, or "two-level-bootstrap"); otherwise today's
    paired patient bootstrap of the seed means, marked single-seed (for one seed each exactly
    `auroc.compare_resampled`)."""
    if method not in METHODS:
        raise ReplicateError(f"unknown comparison method {method!r}; one of {', '.join(METHODS)}")
    if metric not in ("weighted", "plain"):
        raise ReplicateError(f"unknown metric {metric!r}; 'weighted' or 'plain'")
    b = _check_pair(a, b)
    y = a.replicates[0].y
    sa, sb = a.n_seeds, b.n_seeds
    fa, fb = a.figure(metric), b.figure(metric)
    sd_a, sd_b = a.sd(metric), b.sd(metric)
    nan = float("nan")
    common = SeedComparison(metric, nan, (nan, nan), nan, "", a.resamples, a.seed, sa, sb, sd_a, sd_b)
    if sa == 1 and sb == 1:
        c: Comparison = compare_resampled(
            y, a.replicates[0].p, b.replicates[0].p, a.resampled[0], b.resampled[0], metric, a.resamples, a.seed
        )
        return replace(common, diff=c.diff, ci95=c.ci95, p_value=c.p_value, method=PATIENT_BOOTSTRAP)
    # classes undefined on the test set (as compare_resampled: judged from the first entry's predictions)
    undefined = ~np.isfinite(a.per_class[0])
    ma, mb = _resampled_means(a, metric, undefined), _resampled_means(b, metric, undefined)
    diff = float(fa.mean() - fb.mean())
    if sa == 1 or sb == 1:
        d = ma.mean(0) - mb.mean(0)
        d = d[np.isfinite(d)]
        if len(d) == 0:
            return replace(common, diff=diff, ci95=(np.nan, np.nan), p_value=np.nan, method=PATIENT_BOOTSTRAP)
        return replace(common, diff=diff, ci95=_ci(d), p_value=_p_two_sided(d), method=PATIENT_BOOTSTRAP)
    if method == "two-level-bootstrap":
        return _two_level_bootstrap(ma, mb, diff, common)
    return _two_level_t(ma, mb, fa, fb, diff, common)


def _two_level_bootstrap(ma: np.ndarray, mb: np.ndarray, diff: float, common: SeedComparison) -> SeedComparison:
    """Resample r: seeds drawn with replacement within each entry, both on patient resample r."""
    sa, r_n = ma.shape
    sb = mb.shape[0]
    rng = np.random.default_rng([common.seed, _SEED_STREAM])
    ia = rng.integers(0, sa, size=(r_n, sa))
    ib = rng.integers(0, sb, size=(r_n, sb))
    cols = np.arange(r_n)[:, None]
    d = ma[ia, cols].mean(1) - mb[ib, cols].mean(1)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return replace(common, diff=diff, ci95=(np.nan, np.nan), p_value=np.nan, method=TWO_LEVEL_BOOTSTRAP)
    return replace(common, diff=diff, ci95=_ci(d), p_value=_p_two_sided(d), method=TWO_LEVEL_BOOTSTRAP)


def two_level_variance(
    ma: np.ndarray, mb: np.ndarray, fa: np.ndarray, fb: np.ndarray
) -> tuple[float, float, float, float]:
    """The parts of the variance of the difference of seed means: (patient, seed a, seed b, df).

    patient: the patient-bootstrap variance of the paired difference of the seed means (ma, mb: (S, R) per-seed
    means on each resample) less its seed x patient part, which the between-seed variances already hold
    (estimated from the spread of each seed around its entry's mean within a resample; floored at 0);
    seed a/b: s^2 / S of the per-seed point figures fa, fb; df: Welch-Satterthwaite, the patient part counted
    with infinite degrees of freedom."""
    ok = np.isfinite(ma).all(0) & np.isfinite(mb).all(0)
    ma, mb = ma[:, ok], mb[:, ok]
    sa, sb = len(fa), len(fb)
    v_pat = float(np.var(ma.mean(0) - mb.mean(0), ddof=1))
    # seed x patient: the resample variance of a seed's deviation from its entry's mean, scaled to one seed
    inter_a = float(np.var(ma - ma.mean(0), axis=1, ddof=1).mean()) * sa / (sa - 1)
    inter_b = float(np.var(mb - mb.mean(0), axis=1, ddof=1).mean()) * sb / (sb - 1)
    v_pat = max(0.0, v_pat - inter_a / sa - inter_b / sb)
    va = float(np.var(fa, ddof=1)) / sa
    vb = float(np.var(fb, ddof=1)) / sb
    den = va**2 / (sa - 1) + vb**2 / (sb - 1)
    total = v_pat + va + vb
    df = total**2 / den if den > 0 else float("inf")
    return v_pat, va, vb, df


def _two_level_t(
    ma: np.ndarray, mb: np.ndarray, fa: np.ndarray, fb: np.ndarray, diff: float, common: SeedComparison
) -> SeedComparison:
    from scipy import stats

    if not (np.isfinite(ma).all(0) & np.isfinite(mb).all(0)).any() or not np.isfinite(diff):
        return replace(common, diff=diff, ci95=(np.nan, np.nan), p_value=np.nan, method=TWO_LEVEL_T)
    v_pat, va, vb, df = two_level_variance(ma, mb, fa, fb)
    se = float(np.sqrt(v_pat + va + vb))
    if se == 0.0:
        p = 1.0 if diff == 0 else 0.0
        return replace(common, diff=diff, ci95=(diff, diff), p_value=p, method=TWO_LEVEL_T, se=se, df=df)
    q = float(stats.t.ppf(0.975, df))
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return replace(common, diff=diff, ci95=(diff - q * se, diff + q * se), p_value=p, method=TWO_LEVEL_T, se=se, df=df)


def contrast_replicates(
    groups: Sequence[ReplicateScores], coef: Sequence[float], metric: str = "weighted", offset: float = 0.0
) -> SeedComparison:
    """A linear contrast sum_k coef_k * (seed mean of group k) - offset (e.g. [1, -1, -1, 1]: a difference of
    differences; [1] with an offset: one group against a fixed value), every group scored on the same test images
    and patient resamples. With 2+ seeds in every group: two-level-t@v1 generalised (variance sum_k coef_k^2
    s_k^2 / S_k plus the patient-bootstrap variance of the contrast of seed means less its seed x patient part;
    Welch-Satterthwaite df); for [1, -1] and no offset it is `compare_replicates`. With one seed in a group: the
    paired patient bootstrap of the contrast of seed means (`patient-bootstrap@v1`)."""
    from scipy import stats

    if metric not in ("weighted", "plain"):
        raise ReplicateError(f"unknown metric {metric!r}; 'weighted' or 'plain'")
    if not groups or len(groups) != len(coef):
        raise ReplicateError(f"{len(coef)} coefficient(s) for {len(groups)} group(s)")
    first = groups[0]
    gs = [first, *(_check_pair(first, g) for g in groups[1:])]
    c = np.asarray(coef, np.float64)
    undefined = ~np.isfinite(first.per_class[0])
    ms = [_resampled_means(g, metric, undefined) for g in gs]
    fs = [g.figure(metric) for g in gs]
    sizes = [g.n_seeds for g in gs]
    nan = float("nan")
    diff = float(sum(ck * f.mean() for ck, f in zip(c, fs)) - offset)
    sd = [g.sd(metric) for g in gs]
    common = SeedComparison(
        metric, diff, (nan, nan), nan, "", first.resamples, first.seed, sizes[0], sizes[-1], sd[0], sd[-1]
    )
    d = sum(ck * m.mean(0) for ck, m in zip(c, ms)) - offset  # (R,) the contrast of seed means per resample
    if min(sizes) == 1:
        d = d[np.isfinite(d)]
        if len(d) == 0:
            return replace(common, method=PATIENT_BOOTSTRAP)
        return replace(common, ci95=_ci(d), p_value=_p_two_sided(d), method=PATIENT_BOOTSTRAP)
    ok = np.all([np.isfinite(m).all(0) for m in ms], axis=0)
    if not ok.any() or not np.isfinite(diff):
        return replace(common, method=TWO_LEVEL_T)
    v_pat = float(np.var(d[ok], ddof=1))
    for ck, m, s in zip(c, ms, sizes):
        mm = m[:, ok]
        v_pat -= ck**2 * float(np.var(mm - mm.mean(0), axis=1, ddof=1).mean()) * s / (s - 1) / s
    v_pat = max(0.0, v_pat)
    vs = [ck**2 * float(np.var(f, ddof=1)) / s for ck, f, s in zip(c, fs, sizes)]
    den = sum(v**2 / (s - 1) for v, s in zip(vs, sizes))
    total = v_pat + sum(vs)
    df = total**2 / den if den > 0 else float("inf")
    se = float(np.sqrt(total))
    if se == 0.0:
        return replace(common, ci95=(diff, diff), p_value=1.0 if diff == 0 else 0.0, method=TWO_LEVEL_T, se=se, df=df)
    q = float(stats.t.ppf(0.975, df))
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return replace(common, ci95=(diff - q * se, diff + q * se), p_value=p, method=TWO_LEVEL_T, se=se, df=df)
