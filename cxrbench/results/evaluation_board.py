"""Evaluation columns for the leaderboard (`cxrbench leaderboard --evaluation`, or `--show ece,worst-group,
underdiagnosis`): every filed entry's calibration, worst-group AUROC and underdiagnosis gap, re-derived from its
checked test and fold-0 validation predictions (never from numbers stored with a record) by the code of
`cxrbench evaluate` (`cxrbench.metrics.evaluation`), with the subgroups from the metadata of `--data`.

The object has the interface of `adjudicated_board.AdjudicatedBoard` (COLUMNS, FIELDS, cells, fields, explain,
to_json), so the board's views show it as they show the adjudicated columns; `Both` joins the two.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbench.errors import RecordError
from cxrbench.metrics import evaluation as ev
from cxrbench.numbers import rounded

SHOW_KEYS = ("ece", "worst-group", "underdiagnosis")  # `leaderboard --show` names that ask for these columns
FIELDS = [
    "ev_ece",
    "ev_adaptive_ece",
    "ev_brier",
    "ev_worst_group_auroc",
    "ev_worst_group",
    "ev_underdiagnosis_gap",
    "ev_underdiagnosis_gap_groups",
    "ev_thresholds_from",
    "ev_subgroups_from",
]
COLUMNS = ["ECE (pooled)", "worst-group AUROC", "underdiagnosis gap"]


def worst_group(subgroups: dict, classes: list[str]) -> tuple[float, str] | None:
    """The lowest group mean AUROC over every attribute: per attribute, each group's plain mean of its class
    AUROCs over the classes that have an AUROC in every group that has any (groups compared on the same
    classes; a group with none is too few and left out). (value, "attribute group") or None."""
    best: tuple[float, str] | None = None
    for name, sub in subgroups.items():
        per = {g: {c: sub["per_class"][c]["groups"][g]["auroc"] for c in classes} for g in sub["groups"]}
        have = {g: a for g, a in per.items() if any(v is not None for v in a.values())}
        if len(have) < 2:
            continue
        common = [c for c in classes if all(a[c] is not None for a in have.values())]
        if not common:
            continue
        for g, a in have.items():
            m = rounded(np.mean([a[c]["value"] for c in common]))
            if best is None or m < best[0]:
                best = (m, f"{name} {g}")
    return best


def largest_underdiagnosis_gap(u: dict) -> tuple[float, str] | None:
    """The largest gap in underdiagnosis rate between the groups of any attribute: (value, "attribute: a vs b")."""
    best: tuple[float, str] | None = None
    for name, a in u["by"].items():
        gap = a["gap"]
        if gap is not None and (best is None or gap["value"] > best[0]):
            best = (gap["value"], f"{name}: {gap['highest']} vs {gap['lowest']}")
    return best


def entry_evaluation(entry, tables, protocol) -> dict:
    """The evaluation of one filed entry: its checked test predictions, its fold-0 validation predictions (sha256
    checked against its record), and the subgroups of `tables` when its metadata is the entry's."""
    from cxrbench.files import read_regular
    from cxrbench.results.evaluate import THRESHOLD_FOLD, metadata_attributes, threshold_source
    from cxrbench.results.leaderboard import _fold_file
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import MAX_PREDICTIONS_BYTES

    rec = entry.record
    test = entry.test or Predictions.read(entry.predictions)
    folds = rec["validation"]["folds"]
    val = None
    if folds and "predictions" in folds[THRESHOLD_FOLD]:
        path = _fold_file(entry.path, THRESHOLD_FOLD)
        raw = read_regular(path, MAX_PREDICTIONS_BYTES, "fold 0 validation predictions")
        if hashlib.sha256(raw).hexdigest() != folds[THRESHOLD_FOLD]["predictions"]["sha256"]:
            raise RecordError(f"{entry.path}: its fold 0 validation predictions {path} are altered")
        val = Predictions.parse(raw, path)
    attrs: list[ev.Attribute] = []
    subgroups_from = "no --data: no subgroups"
    if tables is not None:
        md = tables.dataset.metadata
        if md.sha256 != rec["data"]["metadata_csv_sha256"]:
            subgroups_from = f"other metadata than {tables.source} (no subgroups)"
        else:
            attrs = metadata_attributes(tables, test.images)
            subgroups_from = f"metadata sha256 {md.sha256[:12]}"
    y, p, classes = test.labels, test.probabilities, list(test.classes)
    rs = ev.Resampler.of(test.patients, protocol.bootstrap, protocol.seed)
    youden = (
        ev.thresholds(val.labels, val.probabilities, "youden") if val is not None else np.full(len(classes), np.nan)
    )
    out = {
        "calibration": ev.calibration(y, p, classes),
        "subgroups": ev.subgroups(y, p, classes, attrs, youden, rs),
        "underdiagnosis": ev.underdiagnosis(y, p, classes, attrs, youden, rs) if val is not None else None,
        "thresholds_from": threshold_source(protocol.final_run, len(val.images)) if val is not None else None,
        "subgroups_from": subgroups_from,
    }
    return out


@dataclass(frozen=True)
class EvaluationBoard:
    """The evaluation figures of every entry of a ranked board, keyed by entry id."""

    results: dict[str, dict]
    data: str | None

    COLUMNS = COLUMNS
    FIELDS = FIELDS
    JSON_KEY = "evaluation"
    TITLE = "evaluation"

    def explain(self) -> list[str]:
        where = f"the metadata of {Path(self.data).name}" if self.data else "no metadata (pass --data for subgroups)"
        return [
            "ECE (pooled): expected calibration error over every (image, class) pair of the test set, 15 "
            "equal-width bins on [0, 1] (Guo et al. 2017). worst-group AUROC: per attribute (sex, age band, "
            "view), each group's mean AUROC over the classes that have one (at least 10 positives and 10 "
            "negatives) in every group, the lowest group named. underdiagnosis gap: the largest difference "
            "between groups of the share of images with a finding called healthy at the Youden thresholds "
            "chosen on fold 0's validation predictions (Seyyed-Kalantari et al. 2021). Re-derived from the "
            f"entries' checked predictions, subgroups from {where}; compare entries only within one protocol "
            "version and data; `cxrbench evaluate RUN` gives every figure (docs/evaluation.md).",
        ]

    def fields(self, entry_id: str) -> dict:
        r = self.results[entry_id]
        pooled = r["calibration"]["pooled"]
        worst = worst_group(r["subgroups"], list(r["calibration"]["per_class"]))
        gap = largest_underdiagnosis_gap(r["underdiagnosis"]) if r["underdiagnosis"] else None
        t = r["thresholds_from"]
        return {
            "ev_ece": pooled["ece"],
            "ev_adaptive_ece": pooled["adaptive_ece"],
            "ev_brier": pooled["brier"],
            "ev_worst_group_auroc": worst[0] if worst else None,
            "ev_worst_group": worst[1] if worst else None,
            "ev_underdiagnosis_gap": gap[0] if gap else None,
            "ev_underdiagnosis_gap_groups": gap[1] if gap else None,
            "ev_thresholds_from": None if t is None else t["file"],
            "ev_subgroups_from": r["subgroups_from"],
        }

    def cells(self, entry_id: str) -> dict[str, str]:
        f = self.fields(entry_id)
        return {
            "ECE (pooled)": _f(f["ev_ece"]),
            "worst-group AUROC": "—"
            if f["ev_worst_group_auroc"] is None
            else f"{_f(f['ev_worst_group_auroc'])} ({f['ev_worst_group']})",
            "underdiagnosis gap": "—"
            if f["ev_underdiagnosis_gap"] is None
            else f"{_f(f['ev_underdiagnosis_gap'])} ({f['ev_underdiagnosis_gap_groups']})",
        }

    def to_json(self) -> dict:
        """Every entry's full figures (calibration, subgroups, underdiagnosis) and the notes."""
        return {"data": self.data, "notes": self.explain(), "entries": self.results}


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def score_board(groups: list, data: str | None, display=None) -> EvaluationBoard:
    """The evaluation of every entry of the ranked `groups` (`cxrbench.results.leaderboard.Group`), with the
    protocol's resamples and seed; subgroups from the tables at `data` (a cache or dataset folder) when given."""
    from cxrbench.protocols import get_protocol
    from cxrbench.results.verify import open_tables

    tables = open_tables(data) if data is not None else None
    results: dict[str, dict] = {}
    total = sum(len(g.entries) for g in groups)
    bar = display.progress("evaluation", total, unit="entries") if display and total else nullcontext()
    with bar as handle:
        for g in groups:
            proto = get_protocol(g.protocol)
            for e in g.entries:
                results[e.id] = entry_evaluation(e, tables, proto)
                if handle is not None:
                    handle.advance()
    return EvaluationBoard(results, None if data is None else str(data))


class Both:
    """The adjudicated and the evaluation columns together (`--adjudicated FILE --evaluation`)."""

    JSON_KEY = "adjudicated"
    TITLE = "adjudicated labels and evaluation"

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second
        self.COLUMNS = [*first.COLUMNS, *second.COLUMNS]
        self.FIELDS = [*first.FIELDS, *second.FIELDS]

    def explain(self) -> list[str]:
        return [*self.first.explain(), *self.second.explain()]

    def fields(self, entry_id: str) -> dict:
        return {**self.first.fields(entry_id), **self.second.fields(entry_id)}

    def cells(self, entry_id: str) -> dict[str, str]:
        return {**self.first.cells(entry_id), **self.second.cells(entry_id)}

    def to_json(self) -> dict:
        return {**self.first.to_json(), "evaluation": self.second.to_json()}
