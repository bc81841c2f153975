"""The paper's five claims, each re-tested from the study's runs: its numbers with 95% CIs, the paired
patient-level bootstrap of the claimed difference, and a verdict (holds / does not hold / inconclusive at 95%).

Every bootstrap uses the resamples and seed of the protocol the compared runs share (as the leaderboard does),
so a comparison has one p-value everywhere. With replicates (`reproduce paper --seeds K`), every arm is its runs
of K training seeds and every test is the seed-aware one of cxrbench.metrics.replicates (two-level-t@v1); the
claims are also judged by the single-seed test (each arm's first seed), and the report says where the verdict
changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrbench.data.labels import FINDINGS
from cxrbench.results.predictions import Predictions
from cxrbench.results.types import Metric, Record
from cxrbench.studies.paper.design import NEGLIGIBLE, PAPER_SAYS, RunSpec, Study

INCONCLUSIVE = "inconclusive at 95%"
CLAIMED_GAIN = (0.02, 0.03)  # claim 4b: attention models over DenseNet-121


@dataclass
class Claim:
    """One claim of the paper as the report shows it."""

    key: str
    title: str
    says: str
    rows: list[tuple[str, str]] = field(default_factory=list)  # (what, reproduced number with CI)
    tests: list[tuple[str, dict]] = field(default_factory=list)  # (contrast, comparison dict)
    verdict: str = "not run"
    why: str = ""
    figure: str | None = None
    # with replicates: the verdict and tests of the single-seed test (each arm's first seed, patient bootstrap)
    single_seed_verdict: str | None = None
    single_seed_tests: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def verdict_changed(self) -> bool | None:
        """Whether the seed-aware verdict differs from the single-seed one (None without replicates)."""
        return None if self.single_seed_verdict is None else self.verdict != self.single_seed_verdict


# ------------------------------------------------------------------------------------------------ verdicts


def _ci_of(c: dict) -> tuple[float, float] | None:
    lo, hi = c["ci95"]
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return float(lo), float(hi)


def greater_verdict(c: dict) -> str:
    """ "a > b" from the 95% CI of a - b: holds above 0, does not hold below 0, else inconclusive."""
    ci = _ci_of(c)
    if ci is None:
        return INCONCLUSIVE
    return "holds" if ci[0] > 0 else ("does not hold" if ci[1] < 0 else INCONCLUSIVE)


def gain_in_range_verdict(c: dict, lo: float = CLAIMED_GAIN[0], hi: float = CLAIMED_GAIN[1]) -> str:
    """ "a beats b by lo to hi": holds when the gain is significant (CI above 0) and its 95% CI overlaps
    [lo, hi]; does not hold when the CI lies wholly below lo or above hi; else inconclusive."""
    ci = _ci_of(c)
    if ci is None:
        return INCONCLUSIVE
    if ci[1] < lo or ci[0] > hi:
        return "does not hold"
    return "holds" if ci[0] > 0 else INCONCLUSIVE


def negligible_verdict(c: dict, limit: float = 0.02) -> str:
    """ "b adds little to a": holds when the whole 95% CI of the gain lies below `limit`; does not hold when the
    gain is significant and its point estimate reaches `limit`; else inconclusive."""
    ci = _ci_of(c)
    if ci is None:
        return INCONCLUSIVE
    if ci[0] > 0 and c["diff"] >= limit:
        return "does not hold"
    return "holds" if ci[1] < limit else INCONCLUSIVE


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return "not run"
    if all(v == "holds" for v in verdicts):
        return "holds"
    if any(v == "does not hold" for v in verdicts):
        return "does not hold"
    return INCONCLUSIVE


# ------------------------------------------------------------------------------------------------ evidence


def _preds(d: Path) -> Predictions:
    return Predictions.read(d / "predictions.csv.gz")


def run_record(d: Path) -> Record:
    return Record.read(d)


def _fmt_ci(m: Metric) -> str:
    lo, hi = m.ci95
    return "undefined" if m.auroc is None or lo is None or hi is None else f"{m.auroc:.4f} [{lo:.4f}, {hi:.4f}]"


class Evidence:
    """The study's finished runs, with the paired tests the claims use. `replicates` (run spec -> the runs of
    its seeds, the first being `runs`' run): each arm is its seeds, and the tests are seed-aware."""

    def __init__(
        self, study: Study, runs: dict[RunSpec, Path], replicates: dict[RunSpec, list[Path]] | None = None
    ) -> None:
        self.study = study
        self.runs = runs
        self.seeds: dict[Path, list[Path]] = {}
        for s, ds in (replicates or {}).items():
            if s in runs:
                self.seeds[Path(runs[s])] = [Path(d) for d in ds]

    def arm(self, d: Path) -> list[Path]:
        """The runs of the arm whose first seed's run is `d` (just `d` without replicates)."""
        return self.seeds.get(Path(d), [Path(d)])

    def _scores(self, ds: list[Path], protocol: str, classes: list[str] | None = None):
        """An arm's ReplicateScores on `protocol`'s resamples (restricted to `classes` when given)."""
        from cxrbench.metrics.replicates import Replicate, score_replicates

        reps = []
        for d in ds:
            p = _preds(d)
            y, pr = p.labels, p.probabilities
            if classes is not None:
                idx = [p.classes.index(c) for c in classes]
                y, pr = y[:, idx], pr[:, idx]
            seed = run_record(d).seeds["train"]
            reps.append(Replicate(int(seed), np.asarray(p.images), p.patients, y, pr, protocol, "study", str(d)))
        b = self.boot(protocol)
        return score_replicates(reps, b["resamples"], b["seed"])

    def get(self, protocol: str, model: str, lr: float) -> Path | None:
        return self.runs.get(RunSpec(protocol, model, lr))

    @staticmethod
    def boot(protocol: str) -> dict:
        from cxrbench.protocols import get_protocol

        p = get_protocol(protocol)
        return {"resamples": p.bootstrap, "seed": p.seed}

    def weighted(self, d: Path) -> str:
        """A run's weighted test AUROC with its CI, as the report prints it; for an arm of several seeds, the
        mean over its seeds with their standard deviation."""
        ds = self.arm(d)
        if len(ds) == 1:
            return _fmt_ci(run_record(d).test.weighted_mean)
        recs = [run_record(x) for x in ds]
        w = np.array([np.nan if r.test.weighted_mean.auroc is None else r.test.weighted_mean.auroc for r in recs])
        seeds = ",".join(str(r.seeds["train"]) for r in recs)
        return f"{np.mean(w):.4f} ± {np.std(w, ddof=1):.4f} (mean ± seed sd, {len(ds)} seeds: {seeds})"

    def pair(self, a: Path, b: Path, protocol: str, classes: list[str] | None = None) -> dict:
        """Paired weighted-mean comparison a - b on the same test images (optionally restricted to classes);
        seed-aware (`compare_replicates`) when the arms have several seeds."""
        from cxrbench.metrics.auroc import compare

        if len(self.arm(a)) > 1 or len(self.arm(b)) > 1:
            from cxrbench.metrics.replicates import compare_replicates

            sa, sb = self._scores(self.arm(a), protocol, classes), self._scores(self.arm(b), protocol, classes)
            return _numbers(compare_replicates(sa, sb).to_dict())

        a_, b_ = _preds(a), _preds(b)
        pat, ya, pa, ca = a_.patients, a_.labels, a_.probabilities, a_.classes
        pb, cb = b_.probabilities, b_.classes
        if a_.images != b_.images:
            from cxrbench.errors import RecordError

            raise RecordError(f"{a} and {b} were scored on different test images; they cannot be compared")
        if classes is not None:
            ia, ib = [ca.index(c) for c in classes], [cb.index(c) for c in classes]
            ya, pa, pb = ya[:, ia], pa[:, ia], pb[:, ib]
        return compare(ya, pa, pb, pat, metric="weighted", **self.boot(protocol)).to_dict()

    def contrast(self, runs: list[Path], coef: list[float], protocol: str, offset: float = 0.0) -> dict:
        """A linear contrast of the runs' weighted means (minus `offset`) over shared patient resamples."""
        from cxrbench.metrics.auroc import bootstrap_means, contrast

        if any(len(self.arm(d)) > 1 for d in runs):
            from cxrbench.metrics.replicates import contrast_replicates

            groups = [self._scores(self.arm(d), protocol) for d in runs]
            return _numbers(contrast_replicates(groups, coef, "weighted", offset).to_dict())
        preds = [_preds(d) for d in runs]
        b = self.boot(protocol)
        pts, boots = bootstrap_means(preds[0].labels, [p.probabilities for p in preds], preds[0].patients, **b)
        return contrast(pts - offset, boots - offset, np.array(coef), b["resamples"], "weighted", b["seed"]).to_dict()


def _numbers(t: dict) -> dict:
    """A seed-aware comparison as the report formats it: undefined numbers as NaN, as the single-seed tests."""
    nan = float("nan")
    t = dict(t)
    t["diff"] = nan if t["diff"] is None else t["diff"]
    t["p_value"] = nan if t["p_value"] is None else t["p_value"]
    t["ci95"] = [nan if x is None else x for x in t["ci95"]]
    return t


# ------------------------------------------------------------------------------------------------ claims


def claim_subset(ev: Evidence) -> Claim:
    """1. The class-balanced subset is big enough: the baselines reach a mean test AUROC of 0.7 or more."""
    s = ev.study
    c = Claim("subset", "1. The class-balanced subset is big enough (Table 1; AUROC >= 0.7)", PAPER_SAYS["subset"])
    vs = []
    for m in (s.baseline, s.resnet):
        d = ev.get(s.p15, m, s.high_lr)
        if d is None:
            continue
        c.rows.append((f"{m} test AUROC (weighted)", ev.weighted(d)))
        t = ev.contrast([d], [1.0], s.p15, offset=0.7)
        c.tests.append((f"{m} - 0.7", t))
        vs.append(greater_verdict(t))
    c.verdict = _combine(vs)
    c.why = "holds when the 95% CI of each baseline's weighted test AUROC lies above 0.7"
    return c


def claim_densenet(ev: Evidence) -> Claim:
    """2. DenseNet-121 beats ResNet-50."""
    s = ev.study
    c = Claim("densenet", "2. DenseNet-121 beats ResNet-50", PAPER_SAYS["densenet"])
    a, b = ev.get(s.p15, s.baseline, s.high_lr), ev.get(s.p15, s.resnet, s.high_lr)
    if a and b:
        for m, d in ((s.baseline, a), (s.resnet, b)):
            c.rows.append((f"{m} test AUROC (weighted)", ev.weighted(d)))
        t = ev.pair(a, b, s.p15)
        c.tests.append((f"{s.baseline} - {s.resnet}", t))
        c.verdict = greater_verdict(t)
    return c


def claim_fifteen(ev: Evidence) -> Claim:
    """3. Training with 15 classes beats 14, compared on the 14 findings both predict."""
    from cxrbench.protocols import get_protocol

    s = ev.study
    c = Claim("fifteen", "3. Training with 15 classes beats 14 classes", PAPER_SAYS["fifteen"])
    a, b = ev.get(s.p15, s.baseline, s.high_lr), ev.get(s.p14, s.baseline, s.high_lr)
    if a and b:
        c.rows.append((f"{s.baseline} 15 classes, test AUROC (weighted)", ev.weighted(a)))
        c.rows.append((f"{s.baseline} 14 classes, test AUROC (weighted)", ev.weighted(b)))
        t = ev.pair(a, b, s.p15, classes=list(FINDINGS))
        c.tests.append(("15-class - 14-class model, on the 14 findings", t))
        c.verdict = greater_verdict(t)
        c.why = (
            f"protocols {s.p15} and {s.p14} ({get_protocol(s.p15).epochs} epochs, lr {s.high_lr:g}), not "
            "the paper's 3-epoch, lr 0.001 runs"
        )
    return c


def claim_lr(ev: Evidence) -> Claim:
    """4a. Attention models gain more from the higher lr than the baseline does (a difference of differences)."""
    s = ev.study
    hi, lo = s.high_lr, s.low_lr
    c = Claim(
        "lr", f"4a. Attention models gain more from lr {hi:g} than from {lo:g} than the baseline does", PAPER_SAYS["lr"]
    )
    base = (ev.get(s.grid, s.baseline, hi), ev.get(s.grid, s.baseline, lo))
    vs = []
    for m in s.attention:
        att_hi, att_lo = ev.get(s.grid, m, hi), ev.get(s.grid, m, lo)
        if att_hi is None or att_lo is None or base[0] is None or base[1] is None:
            continue
        for name, d in zip((f"{m} lr {hi:g}", f"{m} lr {lo:g}"), (att_hi, att_lo)):
            c.rows.append((name + " test AUROC (weighted)", ev.weighted(d)))
        t = ev.contrast([att_hi, att_lo, base[0], base[1]], [1.0, -1.0, -1.0, 1.0], s.grid)
        c.tests.append((f"({m} gain) - ({s.baseline} gain)", t))
        vs.append(greater_verdict(t))
    if base[0] and base[1]:
        c.rows[:0] = [
            (f"{s.baseline} lr {hi:g} test AUROC (weighted)", ev.weighted(base[0])),
            (f"{s.baseline} lr {lo:g} test AUROC (weighted)", ev.weighted(base[1])),
        ]
    c.verdict = _combine(vs)
    return c


def claim_attention(ev: Evidence) -> Claim:
    """4b. Attention models beat the baseline at the higher lr by 0.02-0.03."""
    s = ev.study
    lo_gain, hi_gain = CLAIMED_GAIN
    c = Claim(
        "attention",
        f"4b. Attention models beat DenseNet-121 by {lo_gain:g}-{hi_gain:g} test AUROC (lr {s.high_lr:g})",
        PAPER_SAYS["attention"],
    )
    b = ev.get(s.p15, s.baseline, s.high_lr)
    vs = []
    for m in s.attention:
        a = ev.get(s.p15, m, s.high_lr)
        if a is None or b is None:
            continue
        c.rows.append((f"{m} test AUROC (weighted)", ev.weighted(a)))
        t = ev.pair(a, b, s.p15)
        ci = _ci_of(t)
        overlap = ci is not None and ci[1] >= lo_gain and ci[0] <= hi_gain
        c.tests.append(
            (f"{m} - {s.baseline} (95% CI {'overlaps' if overlap else 'excludes'} {lo_gain:g}-{hi_gain:g})", t)
        )
        vs.append(gain_in_range_verdict(t))
    c.verdict = _combine(vs)
    c.why = (
        f"holds when the gain is significant (95% CI above 0) and its 95% CI overlaps {lo_gain:g}-{hi_gain:g}; "
        f"does not hold when the CI lies wholly below {lo_gain:g} or above {hi_gain:g}"
    )
    return c


def claim_nonimage(ev: Evidence) -> Claim:
    """5. Non-image features (age, sex, view) do not help much."""
    s = ev.study
    c = Claim("nonimage", "5. Non-image features (age, sex, view) do not help much", PAPER_SAYS["nonimage"])
    vs = []
    for plain, with_f in s.nonimage:
        a, b = ev.get(s.p15, with_f, s.high_lr), ev.get(s.p15, plain, s.high_lr)
        if a is None or b is None:
            continue
        c.rows.append((f"{with_f} test AUROC (weighted)", ev.weighted(a)))
        t = ev.pair(a, b, s.p15)
        c.tests.append((f"{with_f} - {plain}", t))
        vs.append(negligible_verdict(t, NEGLIGIBLE))
    c.verdict = _combine(vs)
    c.why = f"holds when the whole 95% CI of the gain lies below {NEGLIGIBLE}"
    return c


CLAIMS = (claim_subset, claim_densenet, claim_fifteen, claim_lr, claim_attention, claim_nonimage)


def evaluate(
    study: Study, runs: dict[RunSpec, Path], replicates: dict[RunSpec, list[Path]] | None = None
) -> list[Claim]:
    """The claims with their numbers, tests and verdicts, in the report's order. With `replicates` (several
    seeds per arm) the verdicts are seed-aware, and each claim also carries the single-seed verdict and tests
    (each arm's first seed, the run in `runs`)."""
    claims = [claim(Evidence(study, runs, replicates)) for claim in CLAIMS]
    if replicates and any(len(v) > 1 for v in replicates.values()):
        for c, single in zip(claims, (claim(Evidence(study, runs)) for claim in CLAIMS)):
            c.single_seed_verdict = single.verdict
            c.single_seed_tests = single.tests
    return claims
