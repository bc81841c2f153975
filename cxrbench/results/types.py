"""A run record as a typed, frozen object.

`Record.from_dict` is the one way in: it runs the record validator (`cxrbench.results.record.validate`, the one
set of rules) and then builds the typed view, which is trusted from there on. The dict exactly as read is kept
in `Record.raw`: hashing, sealing and copying a record use those bytes' content, so nothing on disk and no
hash changes because of the types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

Json = Any  # a JSON value already checked by the validator


@dataclass(frozen=True)
class FileRef:
    """A file of the run folder named by the record, with the sha256 its bytes must have."""

    path: str
    sha256: str

    @classmethod
    def _of(cls, d: Mapping[str, Json]) -> FileRef:
        return cls(str(d["path"]), str(d["sha256"]))


@dataclass(frozen=True)
class Metric:
    """An AUROC (None where undefined) and its 95% bootstrap interval."""

    auroc: float | None
    ci95: tuple[float | None, float | None]

    @classmethod
    def _of(cls, d: Mapping[str, Json]) -> Metric:
        return cls(_opt_float(d["auroc"]), (_opt_float(d["ci95"][0]), _opt_float(d["ci95"][1])))


@dataclass(frozen=True)
class Bootstrap:
    """How the test intervals were resampled."""

    resamples: int
    seed: int
    unit: str


@dataclass(frozen=True)
class TestScores:
    """The test split's scores: per class (in the record's class order), the two means and the sizes."""

    per_class: Mapping[str, Metric]
    weighted_mean: Metric
    plain_mean: Metric
    n_images: int
    n_patients: int
    bootstrap: Bootstrap


@dataclass(frozen=True)
class Epoch:
    """One epoch of a fold's training history."""

    epoch: int
    train_loss: float
    val_weighted_auroc: float | None = None
    val_plain_auroc: float | None = None


@dataclass(frozen=True)
class Fold:
    """A cross-validation fold's validation figures (each optional: a record may leave them out)."""

    history: tuple[Epoch, ...]
    per_class: Mapping[str, float | None]
    weighted_auroc: float | None
    plain_auroc: float | None
    predictions: FileRef | None


@dataclass(frozen=True)
class ProtocolRef:
    """The protocol the run followed: its id, version, content hash and full settings."""

    id: str
    version: int
    hash: str
    settings: Mapping[str, Json]


@dataclass(frozen=True)
class ModelInfo:
    """The model: registered name, where it came from (`source_kind`: builtin, plugin, ...), size, weights."""

    name: str
    source_kind: str
    source: Mapping[str, Json]
    parameters: int
    pretrained: bool


@dataclass(frozen=True)
class DataInfo:
    """What the run was trained and scored on."""

    metadata_csv_sha256: str
    split_hashes: Mapping[str, Json]
    cache_fingerprint: str
    classes: tuple[str, ...]
    excluded_bad_images: int | None
    n_test: int | None
    n_trainval: int | None


@dataclass(frozen=True)
class Code:
    cxrbench_version: str
    git_commit: str | None
    git_dirty: bool | None


@dataclass(frozen=True)
class Environment:
    device: str
    device_name: str | None
    deterministic: bool | None
    bitwise_reproducible: bool | None


@dataclass(frozen=True)
class Timing:
    wall_seconds: float
    train_images_per_s: float


@dataclass(frozen=True)
class Record:
    """A validated run record (see the module docstring); `raw` is the record as read, for hashing and copying."""

    raw: Mapping[str, Json]
    schema_version: int
    run_id: str
    created: str
    protocol: ProtocolRef
    model: ModelInfo
    lr: float
    deviations: tuple[str, ...]
    data: DataInfo
    seeds: Mapping[str, int]
    code: Code
    environment: Environment
    timing: Timing
    folds: tuple[Fold, ...]
    mean_weighted_auroc: float | None
    mean_plain_auroc: float | None
    test: TestScores
    predictions: FileRef
    localization: Mapping[str, Json] | None
    record_sha256: str
    scoring_checkpoint: FileRef | None = None  # the checkpoint that scored the test set (older records: None)

    @classmethod
    def from_dict(cls, d: object, source: str | Path = "record") -> Record:
        """Validate `d` (a RecordError naming `source` and the field on any problem) and build the record."""
        from cxrbench.results.record import validate

        return cls._trusted(validate(d, source))

    @classmethod
    def read(cls, path: str | Path, check_predictions: bool = True) -> Record:
        """Read and validate a record (a run folder or its record.json), by default with its predictions' sha256."""
        from cxrbench.results.record import read_record

        return cls._trusted(read_record(path, check_predictions))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.data.classes

    @classmethod
    def _trusted(cls, d: dict[str, Json]) -> Record:
        """The typed view of a dict the validator accepted."""
        b = d["test"]["bootstrap"]
        p, m, da, c, env, t, v, te = (
            d["protocol"],
            d["model"],
            d["data"],
            d["code"],
            d["environment"],
            d["timing"],
            d["validation"],
            d["test"],
        )
        return cls(
            raw=MappingProxyType(d),
            schema_version=int(d["schema_version"]),
            run_id=str(d["run_id"]),
            created=str(d["created"]),
            protocol=ProtocolRef(str(p["id"]), int(p["version"]), str(p["hash"]), MappingProxyType(p["settings"])),
            model=ModelInfo(
                str(m["name"]),
                str(m["source"]["kind"]),
                MappingProxyType(m["source"]),
                int(m["parameters"]),
                bool(m["pretrained"]),
            ),
            lr=float(d["lr"]),
            deviations=tuple(str(x) for x in d["deviations"]),
            data=DataInfo(
                str(da["metadata_csv_sha256"]),
                MappingProxyType(da["split_hashes"]),
                str(da["cache_fingerprint"]),
                tuple(str(x) for x in da["classes"]),
                da.get("excluded_bad_images"),
                da.get("n_test"),
                da.get("n_trainval"),
            ),
            seeds=MappingProxyType({str(k): int(x) for k, x in d["seeds"].items()}),
            code=Code(str(c["cxrbench_version"]), c["git_commit"], c["git_dirty"]),
            environment=Environment(
                str(env["device"]), env.get("device_name"), env.get("deterministic"), env.get("bitwise_reproducible")
            ),
            timing=Timing(float(t["wall_seconds"]), float(t["train_images_per_s"])),
            folds=tuple(_fold(f) for f in v["folds"]),
            mean_weighted_auroc=_opt_float(v.get("mean_weighted_auroc")),
            mean_plain_auroc=_opt_float(v.get("mean_plain_auroc")),
            test=TestScores(
                MappingProxyType({str(k): Metric._of(x) for k, x in te["per_class"].items()}),
                Metric._of(te["weighted_mean"]),
                Metric._of(te["plain_mean"]),
                int(te["n_images"]),
                int(te["n_patients"]),
                Bootstrap(int(b["resamples"]), int(b["seed"]), str(b["unit"])),
            ),
            predictions=FileRef._of(d["predictions"]),
            localization=MappingProxyType(d["localization"]) if "localization" in d else None,
            record_sha256=str(d["record_sha256"]),
            scoring_checkpoint=FileRef._of(d["scoring_checkpoint"]) if "scoring_checkpoint" in d else None,
        )


def _opt_float(x: Json) -> float | None:
    return None if x is None else float(x)


def _fold(f: Mapping[str, Json]) -> Fold:
    return Fold(
        history=tuple(
            Epoch(
                int(h["epoch"]),
                float(h["train_loss"]),
                _opt_float(h.get("val_weighted_auroc")),
                _opt_float(h.get("val_plain_auroc")),
            )
            for h in f.get("history", [])
        ),
        per_class=MappingProxyType({str(k): _opt_float(x) for k, x in f.get("per_class", {}).items()}),
        weighted_auroc=_opt_float(f.get("weighted_auroc")),
        plain_auroc=_opt_float(f.get("plain_auroc")),
        predictions=FileRef._of(f["predictions"]) if "predictions" in f else None,
    )
