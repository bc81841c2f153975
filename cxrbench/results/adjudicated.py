"""Rescoring a run against radiologist-adjudicated labels: the four findings that Google released for 4,376
ChestX-ray14 images with Majkowska et al., Radiology 294(2), 2019 (each label the consensus of three
radiologists), beside the NLP-mined NIH labels of the same images.

The adjudicated file is untrusted input: its columns, values, names and rows are checked line by line. A
run's predictions are mapped to the four findings by a versioned `Mapping` (the default is `DEFAULT_MAPPING`,
justified in docs/adjudicated.md); each result records the mapping, the file's sha256 and what was scored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrbench.data.labels import FINDINGS as CXR14_FINDINGS
from cxrbench.errors import InputError
from cxrbench.numbers import finite_or_none

# The columns of the distributed file, in order: Data_Entry_2017's, the four findings, the set.
METADATA_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
)
ADJUDICATED_FINDINGS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
COLUMNS = (*METADATA_COLUMNS, *ADJUDICATED_FINDINGS, "Set Id")
SETS = ("test", "val")
_NAME = re.compile(r"^\d{8}_\d{3}\.png$")


@dataclass(frozen=True)
class Mapping:
    """How a run's ChestX-ray14 classes stand for each adjudicated finding: the finding's score is the highest
    probability among its classes, its NIH label is positive when any of its classes is. A finding with no
    class (fracture) is not scored."""

    id: str
    version: int
    findings: dict[str, tuple[str, ...]]
    rationale: str = ""

    @property
    def key(self) -> str:
        return f"{self.id}@v{self.version}"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "version": self.version,
            "findings": {f: list(self.findings[f]) for f in ADJUDICATED_FINDINGS},
            "rationale": self.rationale,
        }

    @property
    def content_hash(self) -> str:
        """sha256 (16 hex) of the finding -> classes table (what changes the numbers)."""
        blob = json.dumps({f: sorted(self.findings[f]) for f in ADJUDICATED_FINDINGS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> list[str]:
        """One line per finding, e.g. `Nodule or mass <- max(Nodule, Mass)`."""
        out = []
        for f in ADJUDICATED_FINDINGS:
            cls = self.findings[f]
            if not cls:
                out.append(f"{f} <- (no ChestX-ray14 class: not scored)")
            elif len(cls) == 1:
                out.append(f"{f} <- {cls[0]}")
            else:
                out.append(f"{f} <- max({', '.join(cls)})")
        return out


DEFAULT_MAPPING = Mapping(
    id="cxr14-adjudicated",
    version=1,
    findings={
        "Fracture": (),
        "Pneumothorax": ("Pneumothorax",),
        "Airspace opacity": ("Consolidation", "Pneumonia", "Infiltration", "Edema"),
        "Nodule or mass": ("Nodule", "Mass"),
    },
    rationale="airspace opacity is alveolar filling: consolidation, pneumonia, NIH's loose 'infiltration', and "
    "(alveolar) edema; atelectasis (volume loss) and effusion (pleural) are left out; see "
    "docs/adjudicated.md",
)


MAX_MAPPING_BYTES = 1 << 20  # a mapping names 8 findings; a few hundred bytes


def read_mapping(path: str | Path) -> Mapping:
    """A user's mapping from JSON: {"id": ..., "version": N, "findings": {finding: [classes]}}; checked."""
    from cxrbench.files import read_json

    path = Path(path)
    raw = read_json(path, MAX_MAPPING_BYTES, "the mapping", follow=True)  # a regular file, bounded, no NaN
    if not isinstance(raw, dict) or set(raw) - {"id", "version", "findings", "rationale"}:
        raise InputError(path, 'expected an object with "id", "version", "findings" (and optionally "rationale")')
    pid, version, findings = raw.get("id"), raw.get("version"), raw.get("findings")
    if not isinstance(pid, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", pid):
        raise InputError(path, "\"id\" must be a name of letters, digits, '.', '_' or '-'")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(path, '"version" must be a whole number >= 1')
    if not isinstance(findings, dict) or set(findings) != set(ADJUDICATED_FINDINGS):
        raise InputError(path, f'"findings" must map exactly these findings: {", ".join(ADJUDICATED_FINDINGS)}')
    out: dict[str, tuple[str, ...]] = {}
    for f in ADJUDICATED_FINDINGS:
        cls = findings[f]
        if not isinstance(cls, list) or not all(isinstance(c, str) for c in cls) or len(set(cls)) != len(cls):
            raise InputError(path, f"finding {f!r}: expected a list of distinct class names")
        unknown = [c for c in cls if c not in CXR14_FINDINGS]
        if unknown:
            raise InputError(path, f"finding {f!r}: {unknown[0]!r} is not one of the 14 ChestX-ray14 findings")
        out[f] = tuple(cls)
    rationale = raw.get("rationale", "")
    if not isinstance(rationale, str):
        raise InputError(path, '"rationale" must be text')
    return Mapping(pid, version, out, rationale)


@dataclass(frozen=True)
class AdjudicatedLabels:
    """The rows of an adjudicated-labels file, validated."""

    path: Path
    sha256: str
    names: list[str]
    patients: np.ndarray  # int64
    sets: np.ndarray  # "test" / "val"
    labels: dict[str, np.ndarray]  # finding -> bool (N,)
    lines: tuple[int, ...] = ()  # the file's line of each row (for errors found later, e.g. against a run)

    def __len__(self) -> int:
        return len(self.names)


def read_adjudicated(path: str | Path, metadata=None) -> AdjudicatedLabels:
    """Read and check the file (plain or gzipped): exactly the distributed columns, YES/NO labels, `test`/`val`
    sets, well-formed unique image names; with `metadata`, every name must be in it with the same patient.
    Every problem is an InputError naming the line."""
    from cxrbench.data.metadata import read_text_maybe_gz

    path = Path(path)
    raw = read_text_maybe_gz(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        raise InputError(path, "empty file")
    header = [h.strip() for h in header]
    if tuple(header) != COLUMNS:
        unknown = [h for h in header if h not in COLUMNS]
        missing = [c for c in COLUMNS if c not in header]
        why = (
            f"unknown column {unknown[0]!r}"
            if unknown
            else f"missing column {missing[0]!r}"
            if missing
            else "columns in another order"
        )
        raise InputError(path, f"{why}; expected the distributed columns: {', '.join(COLUMNS)}", line=1)
    col = {c: i for i, c in enumerate(COLUMNS)}
    names: list[str] = []
    patients: list[int] = []
    sets: list[str] = []
    labels: dict[str, list[bool]] = {f: [] for f in ADJUDICATED_FINDINGS}
    first_line: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(COLUMNS):
            raise InputError(path, f"{len(row)} fields, expected {len(COLUMNS)}", line=lineno)
        row = [c.strip() for c in row]
        name = row[col["Image Index"]]
        if not _NAME.fullmatch(name):
            raise InputError(path, f"{name[:40]!r} is not an image name (expected NNNNNNNN_NNN.png)", line=lineno)
        if name in first_line:
            raise InputError(path, f"image {name} appears twice (first on line {first_line[name]})", line=lineno)
        first_line[name] = lineno
        pid = row[col["Patient ID"]]
        if not pid.isdigit():
            raise InputError(path, f"bad Patient ID {pid[:20]!r} (expected a whole number)", line=lineno)
        for f in ADJUDICATED_FINDINGS:
            v = row[col[f]]
            if v not in ("YES", "NO"):
                raise InputError(path, f"{f} is {v[:20]!r}; expected YES or NO", line=lineno)
            labels[f].append(v == "YES")
        s = row[col["Set Id"]]
        if s not in SETS:
            raise InputError(path, f"Set Id is {s[:20]!r}; expected test or val", line=lineno)
        names.append(name)
        patients.append(int(pid))
        sets.append(s)
    if not names:
        raise InputError(path, "no data rows")
    if metadata is not None:
        for k, name in enumerate(names):
            if not metadata.has(name):
                raise InputError(
                    path,
                    f"image {name} is not in the metadata of the run's data ({metadata.path}): "
                    "the file is for ChestX-ray14, is the run on it (not on phantoms)?",
                    line=first_line[name],
                )
            want = int(metadata.patients[metadata.indices([name], path)[0]])
            if want != patients[k]:
                raise InputError(
                    path, f"image {name} has Patient ID {patients[k]}, the metadata says {want}", line=first_line[name]
                )
    return AdjudicatedLabels(
        path,
        hashlib.sha256(raw).hexdigest(),
        names,
        np.array(patients, np.int64),
        np.array(sets),
        {f: np.array(v, bool) for f, v in labels.items()},
        tuple(first_line[n] for n in names),
    )


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """Share of images where two binary labels agree, and Cohen's kappa (None when undefined)."""
    po = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return po, (None if pe >= 1.0 else (po - pe) / (1 - pe))


def covered(adjudicated: AdjudicatedLabels, names: list[str], sets: tuple[str, ...] = ("test",)) -> list[int]:
    """Rows of `adjudicated` (in file order) of the chosen sets whose image is among `names`: what `rescore`
    scores and the leaderboard counts as an entry's coverage."""
    have = set(names)
    return [int(k) for k in np.flatnonzero(np.isin(adjudicated.sets, list(sets))) if adjudicated.names[k] in have]


def rescore(
    names: list[str],
    patients: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    classes: list[str],
    adjudicated: AdjudicatedLabels,
    mapping: Mapping = DEFAULT_MAPPING,
    *,
    resamples: int = 1000,
    seed: int = 0,
    sets: tuple[str, ...] = ("test",),
) -> dict:
    """Per adjudicated finding, the run's AUROC against the adjudicated labels and against the NIH labels of the
    same images, with patient-bootstrap 95% CIs and a paired bootstrap of the difference (adjudicated - NIH).

    `names`, `patients`, `y` (NIH labels) and `p` (probabilities) are a run's test predictions; only the
    adjudicated images of `sets` that the predictions contain are scored."""
    from cxrbench.metrics.auroc import auroc, bootstrap_aurocs, contrast

    pos = {n: i for i, n in enumerate(names)}
    in_sets = np.isin(adjudicated.sets, list(sets))
    pick_adj = covered(adjudicated, names, sets)
    rows = np.array([pos[adjudicated.names[k]] for k in pick_adj], np.int64)
    for k, r in zip(pick_adj, rows):
        if int(patients[r]) != int(adjudicated.patients[k]):
            raise InputError(
                adjudicated.path,
                f"image {adjudicated.names[k]}: Patient ID {adjudicated.patients[k]} "
                f"here, {int(patients[r])} in the run's predictions",
                line=adjudicated.lines[k] if adjudicated.lines else None,
            )
    col = {c: j for j, c in enumerate(classes)}
    out: dict = {
        "mapping": {**mapping.to_dict(), "key": mapping.key, "hash": mapping.content_hash},
        "adjudicated_file": {"name": adjudicated.path.name, "sha256": adjudicated.sha256, "rows": len(adjudicated)},
        "sets": list(sets),
        "coverage": {
            "adjudicated_images": int(in_sets.sum()),
            "in_predictions": int(len(rows)),
            "patients": int(len(np.unique(patients[rows]))) if len(rows) else 0,
        },
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": "patient"},
        "findings": {},
    }
    for f in ADJUDICATED_FINDINGS:
        adj = adjudicated.labels[f][pick_adj] if len(pick_adj) else np.zeros(0, bool)
        entry: dict = {
            "classes": list(mapping.findings[f]),
            "images": int(len(rows)),
            "positives_adjudicated": int(adj.sum()),
        }
        if not mapping.findings[f]:
            entry.update(scored=False, reason="no ChestX-ray14 class stands for this finding")
            out["findings"][f] = entry
            continue
        missing = [c for c in mapping.findings[f] if c not in col]
        if missing:
            entry.update(scored=False, reason=f"the run has no class {missing[0]!r}")
            out["findings"][f] = entry
            continue
        idx = np.array([col[c] for c in mapping.findings[f]], dtype=np.int64)
        score = p[np.ix_(rows, idx)].max(axis=1) if len(rows) else np.zeros(0)
        nih = np.asarray(y[np.ix_(rows, idx)].any(axis=1)) if len(rows) else np.zeros(0, bool)
        agree, kappa = _agreement(adj, nih) if len(rows) else (float("nan"), None)
        entry.update(
            scored=True,
            positives_nih=int(nih.sum()),
            label_agreement=finite_or_none(agree),
            label_kappa=finite_or_none(kappa),
        )
        a_adj, a_nih = (
            auroc(adj, score) if len(rows) else float("nan"),
            auroc(nih, score) if len(rows) else float("nan"),
        )
        if not (np.isfinite(a_adj) and np.isfinite(a_nih)):
            entry.update(
                auroc_adjudicated={"auroc": finite_or_none(a_adj), "ci95": [None, None]},
                auroc_nih={"auroc": finite_or_none(a_nih), "ci95": [None, None]},
                difference=None,
                note="an AUROC is undefined: these images hold one label value only",
            )
            out["findings"][f] = entry
            continue
        both_y = np.stack([adj, nih], axis=1)
        both_p = np.stack([score, score], axis=1)
        boots = bootstrap_aurocs(both_y, both_p, patients[rows], resamples, seed)  # the same resamples for both
        points = np.array([a_adj, a_nih])
        ci_adj = contrast(points[:1], boots[:, :1], np.array([1.0]), resamples, "auroc").ci95
        ci_nih = contrast(points[1:], boots[:, 1:], np.array([1.0]), resamples, "auroc").ci95
        d = contrast(points, boots, np.array([1.0, -1.0]), resamples, "auroc")
        entry.update(
            auroc_adjudicated={
                "auroc": finite_or_none(a_adj),
                "ci95": [finite_or_none(ci_adj[0]), finite_or_none(ci_adj[1])],
            },
            auroc_nih={"auroc": finite_or_none(a_nih), "ci95": [finite_or_none(ci_nih[0]), finite_or_none(ci_nih[1])]},
            difference={
                "diff": finite_or_none(d.diff),
                "ci95": [finite_or_none(d.ci95[0]), finite_or_none(d.ci95[1])],
                "p_value": finite_or_none(d.p_value),
                "significant": d.significant,
            },
        )
        out["findings"][f] = entry
    return out
