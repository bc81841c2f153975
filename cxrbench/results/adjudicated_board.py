"""Adjudicated-label columns for the leaderboard (`cxrbench leaderboard --adjudicated FILE`): every filed entry's
verified test predictions rescored against radiologist-adjudicated labels by `cxrbench.results.adjudicated.rescore`
(the code `cxrbench rescore` uses), how many adjudicated images each entry covers, and a rank only among
comparable entries: the same protocol group and exactly the same covered images.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import numpy as np

from cxrbench.errors import InputError
from cxrbench.numbers import mean_or_none
from cxrbench.results.adjudicated import ADJUDICATED_FINDINGS, AdjudicatedLabels, Mapping, covered, rescore

SETS = ("test",)  # the adjudicated set the board scores (all of it lies in the official test list)


def slug(finding: str) -> str:
    """A finding as a field name: `Nodule or mass` -> `nodule_or_mass`."""
    return finding.lower().replace(" ", "_")


# the machine-readable fields each entry gains, in CSV column order
FIELDS = [
    "adj_images",
    "adj_set_images",
    "adj_patients",
    "adj_cohort",
    *(f"adj_{slug(f)}_{k}" for f in ADJUDICATED_FINDINGS for k in ("auroc", "ci_low", "ci_high", "positives")),
    "adj_mean_auroc",
    "adj_rank",
    "adj_rank_of",
    "adj_mapping",
    "adj_mapping_hash",
    "adj_file_sha256",
]
COLUMNS = [
    "adjudicated images",
    *(f"adj. {f} AUROC [95% CI]" for f in ADJUDICATED_FINDINGS),
    "adj. mean AUROC",
    "adj. rank",
]


@dataclass(frozen=True)
class AdjudicatedBoard:
    """The adjudicated figures of every entry of a ranked board, keyed by entry id."""

    labels: AdjudicatedLabels
    mapping: Mapping
    results: dict[str, dict]  # entry id -> rescore()'s result on the entry's filed test predictions
    cohorts: dict[str, str]  # entry id -> id of the covered image set ("" when it covers none)
    means: dict[str, float | None]  # entry id -> plain mean of its defined adjudicated AUROCs
    ranks: dict[str, tuple[int, int] | None]  # entry id -> (rank, entries ranked with it), None: not ranked

    @property
    def set_images(self) -> int:
        return int(np.isin(self.labels.sets, list(SETS)).sum())

    def explain(self) -> list[str]:
        """The footnotes: the file and the mapping (id, hash, classes), what the columns are, the ranking rule."""
        m = self.mapping
        return [
            f"Adjudicated labels: {self.labels.path.name} (sha256 {self.labels.sha256[:16]}, {len(self.labels):,} "
            f"rows, {self.set_images:,} in set {'+'.join(SETS)}); mapping {m.key} (hash {m.content_hash}): "
            + "; ".join(m.describe())
            + ".",
            "adjudicated images: how many of the file's adjudicated test images lie in the entry's test "
            "predictions. adj. <finding>: the entry's AUROC on those images against the radiologists' labels "
            "(Majkowska et al. 2019), computed as `cxrbench rescore` computes it from the predictions checked when "
            "the entry was filed, with a patient-level bootstrap 95% CI (the protocol's resamples and seed); n/a: "
            "no ChestX-ray14 class stands for the finding (not scored); —: the entry covers no adjudicated image; "
            "undefined: the covered images hold one label value only. adj. mean: the plain mean of the defined "
            "adjudicated AUROCs.",
            "adj. rank: by adj. mean, only among entries of the same protocol group that cover exactly the same "
            "adjudicated images ('k of n': n entries cover that image set); an entry that covers other or fewer "
            "images is shown but not ranked against them, and one that covers none is not ranked.",
        ]

    def fields(self, entry_id: str) -> dict:
        """The entry's adjudicated figures, each a number (None where absent), for CSV and JSON."""
        r = self.results[entry_id]
        c, rank = r["coverage"], self.ranks[entry_id]
        out: dict = {
            "adj_images": c["in_predictions"],
            "adj_set_images": c["adjudicated_images"],
            "adj_patients": c["patients"],
            "adj_cohort": self.cohorts[entry_id] or None,
        }
        for f in ADJUDICATED_FINDINGS:
            e, s = r["findings"][f], slug(f)
            a = e.get("auroc_adjudicated") or {"auroc": None, "ci95": [None, None]}
            out.update(
                {
                    f"adj_{s}_auroc": a["auroc"],
                    f"adj_{s}_ci_low": a["ci95"][0],
                    f"adj_{s}_ci_high": a["ci95"][1],
                    f"adj_{s}_positives": e["positives_adjudicated"] if c["in_predictions"] else None,
                }
            )
        out.update(
            {
                "adj_mean_auroc": self.means[entry_id],
                "adj_rank": rank[0] if rank else None,
                "adj_rank_of": rank[1] if rank else None,
                "adj_mapping": self.mapping.key,
                "adj_mapping_hash": self.mapping.content_hash,
                "adj_file_sha256": self.labels.sha256,
            }
        )
        return out

    def cells(self, entry_id: str) -> dict[str, str]:
        """The entry's adjudicated figures as display strings, by column."""
        r = self.results[entry_id]
        n = r["coverage"]["in_predictions"]
        out = {"adjudicated images": f"{n:,} of {r['coverage']['adjudicated_images']:,}"}
        for f in ADJUDICATED_FINDINGS:
            e = r["findings"][f]
            if not e["scored"]:
                cell = "n/a"
            elif n == 0:
                cell = "—"
            elif e["auroc_adjudicated"]["auroc"] is None:
                cell = "undefined"
            else:
                a = e["auroc_adjudicated"]
                cell = f"{_f(a['auroc'])} [{_f(a['ci95'][0])}, {_f(a['ci95'][1])}]"
            out[f"adj. {f} AUROC [95% CI]"] = cell
        mean, rank = self.means[entry_id], self.ranks[entry_id]
        out["adj. mean AUROC"] = _f(mean)
        out["adj. rank"] = "—" if rank is None else f"{rank[0]} of {rank[1]}"
        return out

    def to_json(self) -> dict:
        """The file and mapping the board's adjudicated fields were computed with."""
        return {
            "file": self.labels.path.name,
            "sha256": self.labels.sha256,
            "rows": len(self.labels),
            "sets": list(SETS),
            "set_images": self.set_images,
            "mapping": {**self.mapping.to_dict(), "key": self.mapping.key, "hash": self.mapping.content_hash},
            "notes": self.explain(),
        }


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _mean(result: dict) -> float | None:
    vals = [
        e["auroc_adjudicated"]["auroc"]
        for e in result["findings"].values()
        if e["scored"] and e["auroc_adjudicated"]["auroc"] is not None
    ]
    return mean_or_none(vals)


def score_board(groups: list, labels: AdjudicatedLabels, mapping: Mapping, display=None) -> AdjudicatedBoard:
    """Rescore every entry of the ranked `groups` (cxrbench.results.leaderboard.Group) on the adjudicated images
    its filed test predictions contain (CIs with its protocol's resamples and seed) and rank each set of
    comparable entries. An adjudicated row whose patient differs from an entry's is an InputError naming the
    line and the entry."""
    from cxrbench.protocols import get_protocol
    from cxrbench.results.predictions import Predictions

    results: dict[str, dict] = {}
    cohorts: dict[str, str] = {}
    means: dict[str, float | None] = {}
    ranks: dict[str, tuple[int, int] | None] = {}
    total = sum(len(g.entries) for g in groups)
    bar = display.progress("adjudicated AUROCs", total, unit="entries") if display and total else nullcontext()
    with bar as handle:
        for g in groups:
            proto = get_protocol(g.protocol)
            together: dict[str, list[str]] = {}  # covered image set -> ids of the entries ranked on it
            for e in g.entries:
                t = e.test or Predictions.read(e.predictions)
                try:
                    results[e.id] = rescore(
                        t.images,
                        t.patients,
                        t.labels,
                        t.probabilities,
                        list(t.classes),
                        labels,
                        mapping,
                        resamples=proto.bootstrap,
                        seed=proto.seed,
                        sets=SETS,
                    )
                except InputError as err:
                    raise InputError(err.path, f"{err.reason} of leaderboard entry {e.id}", line=err.line) from None
                names = sorted(labels.names[k] for k in covered(labels, t.images, SETS))
                cohorts[e.id] = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12] if names else ""
                means[e.id] = _mean(results[e.id])
                ranks[e.id] = None
                if cohorts[e.id] and means[e.id] is not None:
                    together.setdefault(cohorts[e.id], []).append(e.id)
                if handle is not None:
                    handle.advance()
            for ids in together.values():
                ids.sort(key=lambda i: (-cast(float, means[i]), i))  # only entries with a mean are together
                for k, i in enumerate(ids):
                    ranks[i] = (k + 1, len(ids))
    return AdjudicatedBoard(labels, mapping, results, cohorts, means, ranks)
