"""Simulated replicate groups, to check the seed-aware comparison rather than assume it.

A trial draws one test set (patients, their images, labels) and two entries of S seeds each. A seed's score
for image i and class c is  (separation + entry effect + seed shift) * y_ic + shared noise + own noise:
- the seed shift (sd `seed_sd`, drawn per seed and class around one mean) moves that seed's AUROC: training
  noise in a recipe's skill;
- the shared noise (a patient part and an image part) is the same for every model: hard patients and images,
  what makes a paired comparison sharper than two separate ones;
- the own noise is drawn per seed and image: which images a seed gets wrong (the seed x patient part).
Under the null both entries have effect 0 (one distribution); `effect` adds separation to entry a.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrbench.metrics.replicates import Replicate, compare_replicates, score_replicates


@dataclass(frozen=True)
class SimSettings:
    """Sizes and noise of a simulated test set and its replicates (scaled down from 25,596 x 14)."""

    patients: int = 600
    images_per_patient: float = 2.0  # mean; 1 + Poisson(mean - 1)
    classes: int = 4
    prevalence: float = 0.15
    separation: float = 1.6
    seed_sd: float = 0.05  # sd of a seed's shift of the separation, per class
    patient_sd: float = 0.6  # shared noise: per patient and class
    image_sd: float = 0.6  # shared noise: per image and class
    own_sd: float = 0.35  # per seed, image and class
    effect: float = 0.0  # separation added to entry a


def simulate_pair(
    settings: SimSettings, seeds_a: int, seeds_b: int, rng: np.random.Generator
) -> tuple[list[Replicate], list[Replicate]]:
    """One trial: a test set and two replicate groups of seeds_a and seeds_b seeds on it."""
    s = settings
    per = 1 + rng.poisson(s.images_per_patient - 1, s.patients)
    patients = np.repeat(np.arange(s.patients), per)
    n = len(patients)
    names = np.array([f"img{i:06d}.png" for i in range(n)])
    y = (rng.random((n, s.classes)) < s.prevalence).astype(np.uint8)
    shared = rng.normal(0, s.patient_sd, (s.patients, s.classes))[patients] + rng.normal(0, s.image_sd, (n, s.classes))

    def group(k: int, effect: float, tag: str) -> list[Replicate]:
        out = []
        for seed in range(k):
            sep = s.separation + effect + rng.normal(0, s.seed_sd, s.classes)
            logit = sep * y + shared + rng.normal(0, s.own_sd, (n, s.classes))
            p = 1 / (1 + np.exp(-logit))
            out.append(Replicate(seed, names, patients, y, p, "sim@v1", "sim", f"{tag} seed {seed}"))
        return out

    return group(seeds_a, s.effect, "a"), group(seeds_b, 0.0, "b")


def rejection_rates(
    settings: SimSettings,
    trials: int,
    seeds: int = 3,
    resamples: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    progress=None,
) -> dict:
    """Share of `trials` in which each test rejects at `alpha`: the seed-aware tests with `seeds` seeds per entry
    and today's patient bootstrap fed the first seed of each; with the mean observed difference of the seed
    means and the mean seed sd, to state the effect in AUROC. `progress(i)` is called after each trial."""
    rng = np.random.default_rng(seed)
    hits = {"two-level-t": 0, "two-level-bootstrap": 0, "single-seed": 0}
    diffs, sds, ses, t_se, t_df = [], [], [], [], []
    for i in range(trials):
        a, b = simulate_pair(settings, seeds, seeds, rng)
        sa, sb = score_replicates(a, resamples, i), score_replicates(b, resamples, i)
        t = compare_replicates(sa, sb, method="two-level-t")
        hits["two-level-t"] += t.p_value < alpha
        hits["two-level-bootstrap"] += compare_replicates(sa, sb, method="two-level-bootstrap").p_value < alpha
        t_se.append(t.se)
        t_df.append(t.df)
        one = compare_replicates(score_replicates(a[:1], resamples, i), score_replicates(b[:1], resamples, i))
        hits["single-seed"] += one.p_value < alpha
        diffs.append(sa.mean() - sb.mean())
        sds.append((sa.sd() + sb.sd()) / 2)
        ses.append(one.ci95[1] - one.ci95[0])
        if progress is not None:
            progress(i)
    return {
        "trials": trials,
        "seeds_per_entry": seeds,
        "resamples": resamples,
        "alpha": alpha,
        "reject": {k: v / trials for k, v in hits.items()},
        "mean_diff": float(np.mean(diffs)),
        "mean_seed_sd": float(np.mean(sds)),
        # how well two-level-t's standard error matches the observed spread of the difference, and its df
        "sd_diff": float(np.std(diffs, ddof=1)) if trials > 1 else float("nan"),
        "rms_se_two_level_t": float(np.sqrt(np.mean(np.square(t_se)))),
        "mean_df_two_level_t": float(np.mean(t_df)),
        # the single-seed test's CI width / 3.92: the patient-only sd of a paired difference of one seed each
        "mean_patient_sd": float(np.mean(ses) / 3.92),
    }
