"""What the leaderboard may show of a record: every figure it can re-derive from the predictions is re-derived
and must equal the record's; the predictions must be the protocol's test split of the run's data with the
metadata's labels; every other figure (timing, throughput, localisation, validation without predictions, a
plugin's parameter count, reproducibility) is shown as reported by the submitter, and marked so.

`verify` needs only the record and its predictions (submit and every load run it); `check_data` also needs
the dataset's tables (submit runs it).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.errors import CxrbenchError, RecordError
from cxrbench.numbers import finite_or_none, mean_or_none
from cxrbench.results.predictions import Predictions

TOLERANCE = 1e-5
REDERIVED = "re-derived"
REPORTED = "reported"


def check_protocol(rec: dict, source: str | Path):
    """The built-in protocol the record names, whose settings the record must carry unchanged."""
    from cxrbench.data.labels import class_names
    from cxrbench.errors import ConfigError
    from cxrbench.protocols import get_protocol, protocol_key
    from cxrbench.results.record import safe_name

    safe_name(rec["protocol"]["id"], "protocol id", source)
    key = protocol_key(rec["protocol"]["id"], rec["protocol"]["version"])
    try:
        p = get_protocol(key)
    except ConfigError as e:
        raise RecordError(f"{source}: protocol {key} is not known to this cxrbench ({e})") from None
    if rec["protocol"]["hash"] != p.content_hash or rec["protocol"]["settings"] != p.to_dict():
        raise RecordError(
            f"{source}: its protocol settings do not match {key} (hash {rec['protocol']['hash']} vs "
            f"{p.content_hash}): a modified or mixed protocol is not filed under {key}"
        )
    if rec["data"]["classes"] != list(class_names(p.num_classes)):
        raise RecordError(f"{source}: its classes are not {key}'s {p.num_classes} classes in their fixed order")
    return p


# the words by which a record declares that it departs from the protocol's pretrained setting
_PRETRAINED_WORDS = ("pretrained", "imagenet weights")


def check_settings(rec: dict, protocol, source: str | Path) -> tuple[str, ...]:
    """Every setting the board shows against the protocol the record names: the lr in its grid, the subset,
    split and bootstrap seeds (the protocol's; the training seed may be any, as its run id says), the number
    of validation folds, the epochs each fold's history trained, and `model.pretrained`. A contradiction is
    refused naming the field; only `pretrained` may differ, and only with a deviation that says so (which the
    board shows marked). Returns the fields that deviate, declared."""
    lr = rec["lr"]
    if not any(abs(lr - x) < 1e-12 for x in protocol.lrs):
        grid = ", ".join(f"{x:g}" for x in protocol.lrs)
        raise RecordError(f"{source}: field lr is {lr:g}, which is not in {protocol.key}'s grid ({grid})")
    check_train_seed(rec, source)
    want = {"subset": protocol.subset_seed, "split": protocol.split_seed, "bootstrap": protocol.seed}
    for key, value in want.items():
        got = rec["seeds"].get(key)
        if got != value:
            raise RecordError(f"{source}: field seeds.{key} is {got}, {protocol.key} says {value}")
    folds = rec["validation"]["folds"]
    if len(folds) != protocol.n_folds:
        raise RecordError(
            f"{source}: field validation.folds has {len(folds)} fold(s), {protocol.key} trains {protocol.n_folds}"
        )
    for k, f in enumerate(folds):
        if "history" in f and [h["epoch"] for h in f["history"]] != list(range(protocol.epochs)):
            raise RecordError(
                f"{source}: field validation.folds[{k}].history holds {len(f['history'])} epoch(s), not "
                f"{protocol.key}'s {protocol.epochs} (numbered 0 to {protocol.epochs - 1})"
            )
    declared: list[str] = []
    if rec["model"]["pretrained"] != protocol.pretrained:
        said = [d for d in rec["deviations"] if any(w in d.lower() for w in _PRETRAINED_WORDS)]
        if not said:
            raise RecordError(
                f"{source}: field model.pretrained is {str(rec['model']['pretrained']).lower()}, "
                f"{protocol.key} says {str(protocol.pretrained).lower()}, and no deviation declares it"
            )
        declared.append("pretrained")
    return tuple(declared)


def check_train_seed(rec: dict, source: str | Path) -> int:
    """The record's training seed (`seeds.train`, any of 0..2**31-1: `run --seed`; replicates differ only in
    it): a run id of the default form (`...__seedS`) must name the same seed. Returns it."""
    import re

    from cxrbench.run.options import MAX_SEED

    got = rec["seeds"].get("train")
    if isinstance(got, bool) or not isinstance(got, int) or not 0 <= got <= MAX_SEED:
        raise RecordError(f"{source}: field seeds.train is {got!r}, not a training seed (0 to {MAX_SEED})")
    m = re.search(r"__seed(\d+)$", str(rec["run_id"]))
    if m is not None and int(m.group(1)) != got:
        raise RecordError(f"{source}: its run id {rec['run_id']} names seed {m.group(1)}, field seeds.train is {got}")
    return got


def predictions_digest(pred: Predictions) -> str:
    """The identity of a set of predictions by their parsed content: sha256 over the image names and each
    image's probabilities (float64, rows in name order, the classes in their order), whatever the file's
    compression, row order or number formatting."""
    import hashlib

    order = sorted(range(len(pred.images)), key=pred.images.__getitem__)
    h = hashlib.sha256()
    h.update("\n".join(pred.classes).encode() + b"\0")
    h.update("\n".join(pred.images[i] for i in order).encode() + b"\0")
    h.update(np.ascontiguousarray(np.asarray(pred.probabilities)[order], dtype="<f8").tobytes())
    return h.hexdigest()


def _same(want: Any, got: float | None) -> bool:
    if want is None or got is None:
        return want is None and got is None
    return abs(got - want) <= TOLERANCE


def rederive_test(rec: dict, protocol, pred: Predictions, source: str | Path) -> np.ndarray:
    """Per-class and mean test AUROCs, their bootstrap CIs (the protocol's resamples and seed), n_images and
    n_patients, recomputed from the predictions; any difference is refused. Returns the per-class resample
    AUROCs (R, C), which the board's paired comparisons reuse."""
    from cxrbench.metrics.auroc import score_with_resamples

    t = rec["test"]
    if pred.classes != rec["data"]["classes"]:
        raise RecordError(f"{source}: the predictions' classes differ from the record's")
    boot = {"resamples": protocol.bootstrap, "seed": protocol.seed, "unit": "patient"}
    if t["bootstrap"] != boot:
        raise RecordError(
            f"{source}: its test CIs were bootstrapped with {t['bootstrap']}, not {protocol.key}'s {boot}"
        )
    if len(pred.images) != t["n_images"]:
        raise RecordError(f"{source}: {len(pred.images)} predictions, but the record scores {t['n_images']}")
    s, resampled = score_with_resamples(
        pred.labels, pred.probabilities, pred.patients, protocol.bootstrap, protocol.seed
    )
    got = s.to_dict(tuple(pred.classes))
    if got["n_patients"] != t["n_patients"]:
        raise RecordError(
            f"{source}: the predictions hold {got['n_patients']} patients, the record says {t['n_patients']}"
        )
    parts = [(f"test AUROC of {c}", t["per_class"][c], got["per_class"][c]) for c in pred.classes]
    parts += [(f"{k}", t[k], got[k]) for k in ("weighted_mean", "plain_mean")]
    for what, want, have in parts:
        if not _same(want["auroc"], have["auroc"]):
            raise RecordError(
                f"{source}: the recorded {what} ({want['auroc']}) does not follow from its predictions "
                f"({have['auroc']}); the record was altered"
            )
        for i, end in enumerate(("low", "high")):
            if not _same(want["ci95"][i], have["ci95"][i]):
                raise RecordError(
                    f"{source}: the recorded 95% CI {end} end of {what} ({want['ci95'][i]}) does not "
                    f"follow from its predictions ({have['ci95'][i]}); the record was altered"
                )
    return resampled


def rederive_validation(rec: dict, folds: dict[int, Predictions], source: str | Path) -> str | None:
    """Each fold's validation AUROCs recomputed from its predictions where the record lists them; the mark of
    the validation figures (re-derived when every fold has predictions, else reported; None without folds)."""
    from cxrbench.metrics.auroc import per_class_auroc, plain_mean, weighted_mean

    v = rec["validation"]
    for k, pred in folds.items():
        f = v["folds"][k]
        if pred.classes != rec["data"]["classes"]:
            raise RecordError(f"{source}: fold {k}'s validation predictions have other classes than the record")
        a = per_class_auroc(pred.labels, pred.probabilities)
        got = {
            "weighted_auroc": finite_or_none(weighted_mean(a, pred.labels)),
            "plain_auroc": finite_or_none(plain_mean(a)),
        }
        checks = [
            (f"fold {k} validation AUROC of {c}", f["per_class"][c], finite_or_none(a[i]))
            for i, c in enumerate(pred.classes)
            if c in f.get("per_class", {})
        ]
        checks += [(f"fold {k} validation {key}", f[key], got[key]) for key in got if key in f]
        for what, want, have in checks:
            if not _same(want, have):
                raise RecordError(
                    f"{source}: the recorded {what} ({want}) does not follow from its predictions "
                    f"({have}); the record was altered"
                )
    if not v["folds"]:
        return None
    if len(folds) < len(v["folds"]):
        return REPORTED
    for key, fk in (("mean_weighted_auroc", "weighted_auroc"), ("mean_plain_auroc", "plain_auroc")):
        vals = [f[fk] for f in v["folds"] if f.get(fk) is not None]
        if key in v and not _same(v[key], mean_or_none(vals)):
            raise RecordError(f"{source}: the recorded validation {key} ({v[key]}) is not the mean of its folds")
    return REDERIVED


@functools.lru_cache(maxsize=32)
def _builtin_parameters(name: str, num_classes: int) -> int | None:
    """The parameter count of a built-in model (None when `name` is not built in); nothing else is imported."""
    from cxrbench.models.registry import _REGISTRY, _ensure_builtins, parameters_of

    _ensure_builtins()
    spec = _REGISTRY.get(name)
    if spec is None or spec.source.get("kind") != "built-in":
        return None
    return parameters_of(name, num_classes)


def parameters_mark(rec: dict, protocol, source: str | Path) -> str:
    """A built-in model's parameter count is recounted (and must match); a plugin's is reported."""
    m = rec["model"]
    if m["source"]["kind"] != "built-in":
        return REPORTED
    n = _builtin_parameters(m["name"], protocol.num_classes)
    if n is None:
        raise RecordError(f"{source}: it names {m['name']!r} as a built-in model, which this cxrbench does not have")
    if n != m["parameters"]:
        raise RecordError(
            f"{source}: {m['name']} has {n:,} parameters at {protocol.num_classes} classes, the "
            f"record says {m['parameters']:,}"
        )
    return REDERIVED


@dataclass(frozen=True)
class Verified:
    """What `verify` found: the mark of each group of figures and the parsed predictions."""

    marks: dict[str, str | None]  # test, validation, parameters, timing, localization, reproducibility
    test: Predictions
    folds: dict[int, Predictions]
    resampled: np.ndarray  # (R, C) test AUROCs over the protocol's patient resamples
    declared: tuple[str, ...] = ()  # settings that differ from the protocol with a declared deviation
    digest: str = ""  # predictions_digest of the test predictions


def verify(rec: dict, predictions: bytes, folds: dict[int, bytes], source: str | Path) -> Verified:
    """Check every setting the board shows against the protocol and re-derive every figure from the
    predictions; marks each group of figures re-derived, reported, or None when the record has none."""
    protocol = check_protocol(rec, source)
    declared = check_settings(rec, protocol, source)
    test = Predictions.parse(predictions, f"{source} (its predictions)")
    resampled = rederive_test(rec, protocol, test, source)
    fold_preds = {k: Predictions.parse(raw, f"{source} (fold {k} validation predictions)") for k, raw in folds.items()}
    env = rec["environment"]
    marks = {
        "test": REDERIVED,
        "validation": rederive_validation(rec, fold_preds, source),
        "parameters": parameters_mark(rec, protocol, source),
        "timing": REPORTED,
        "localization": REPORTED if "localization" in rec else None,
        "reproducibility": REPORTED if ("deterministic" in env or "bitwise_reproducible" in env) else None,
    }
    return Verified(marks, test, fold_preds, resampled, declared, predictions_digest(test))


# ------------------------------------------------------------------------------------------------ the data


@dataclass(frozen=True)
class Tables:
    """A dataset's tables as submit checks predictions against them (from a cache or a dataset folder)."""

    source: Path
    dataset: Any  # cxrbench.data.dataset.Dataset
    bad: frozenset[str] | None  # images a cache recorded as undecodable (None: a dataset folder)
    fingerprint: str | None  # the cache's fingerprint (None: a dataset folder)


def open_tables(path: str | Path) -> Tables:
    """The tables of a cxrbench cache folder or of a ChestX-ray14 dataset folder."""
    from cxrbench.cache.store import MANIFEST, open_cache
    from cxrbench.data.dataset import open_dataset

    p = Path(path)
    if (p / MANIFEST).exists():
        store = open_cache(p)
        return Tables(p, open_dataset(store.tables_dir()), frozenset(store.bad()), store.fingerprint)
    return Tables(p, open_dataset(p), None, None)


def recorded_cache(run_dir: Path) -> Path | None:
    """The cache a run recorded in its run.json, when that folder exists on this machine."""
    from cxrbench.results.record import read_regular

    cfg = run_dir / "run.json"
    if not cfg.exists():
        return None
    try:
        data = json.loads(read_regular(cfg, 1 << 20, "run.json"))
    except (CxrbenchError, ValueError, RecursionError):
        return None
    path = data.get("cache_path") if isinstance(data, dict) else None
    return Path(path) if isinstance(path, str) and path and Path(path).is_dir() else None


def _differ(what: str, got: list[str], want: set[str]) -> str:
    extra = sorted(set(got) - want)
    missing = sorted(want - set(got))
    say = []
    if extra:
        say.append(f"{len(extra)} image(s) not in it (e.g. {extra[0]})")
    if missing:
        say.append(f"{len(missing)} of its image(s) missing (e.g. {missing[0]})")
    return f"{what}: " + " and ".join(say)


def _check_rows(
    pred: Predictions, expected: set[str], tables: Tables, num_classes: int, what: str, source: str | Path
) -> None:
    if set(pred.images) != expected:
        raise RecordError(
            f"{source}: {_differ(f'its {what} predictions are not the protocol split', pred.images, expected)}"
        )
    md = tables.dataset.metadata
    rows = md.indices(pred.images, tables.source)
    truth = md.labels(num_classes)[rows]
    wrong = np.argwhere(truth != pred.labels)
    if len(wrong):
        i, c = wrong[0]
        raise RecordError(
            f"{source}: its {what} predictions give {pred.images[i]} the label {pred.classes[c]}="
            f"{int(pred.labels[i, c])}, the metadata says {int(truth[i, c])} ({len(wrong)} label(s) differ)"
        )
    pats = md.patients[rows]
    bad = np.flatnonzero(pats != pred.patients)
    if len(bad):
        i = int(bad[0])
        raise RecordError(
            f"{source}: its {what} predictions give {pred.images[i]} patient {int(pred.patients[i])}, "
            f"the metadata says {int(pats[i])}"
        )


def check_data(rec: dict, test: Predictions, folds: dict[int, Predictions], tables: Tables, source: str | Path) -> None:
    """The predictions are exactly the protocol's test split (and each fold's validation split) of this data:
    same metadata, same split hashes, same image set, the metadata's labels and patients."""
    from cxrbench.data.dataset import splits_for
    from cxrbench.protocols import get_protocol, protocol_key
    from cxrbench.results.record import split_hashes

    d = rec["data"]
    md = tables.dataset.metadata
    if md.sha256 != d["metadata_csv_sha256"]:
        raise RecordError(
            f"{source}: the run used metadata with sha256 {d['metadata_csv_sha256'][:12]}..., the data "
            f"at {tables.source} has {md.sha256[:12]}...; pass --data with the dataset or cache the run "
            "used"
        )
    protocol = get_protocol(protocol_key(rec["protocol"]["id"], rec["protocol"]["version"]))
    s = splits_for(md, tables.dataset.layout, protocol)
    hashes = split_hashes(md.names, s)
    if hashes != d["split_hashes"]:
        part = next(k for k in ("test", "trainval", "folds") if hashes[k] != d["split_hashes"][k])
        raise RecordError(
            f"{source}: its {part} split hash differs from {protocol.key}'s split of the data at {tables.source}"
        )
    for key, n in (("n_test", len(s.test)), ("n_trainval", len(s.trainval))):
        if key in d and d[key] != n:
            raise RecordError(f"{source}: data.{key} is {d[key]}, {protocol.key}'s split has {n}")
    excluded = d.get("excluded_bad_images", 0)
    bad: frozenset[str] = frozenset()
    if excluded:
        if tables.bad is None or tables.fingerprint != d["cache_fingerprint"]:
            raise RecordError(
                f"{source}: the run left out {excluded} image(s) its cache recorded as undecodable; "
                f"pass --data with that cache (fingerprint {d['cache_fingerprint']}) to check which"
            )
        bad = tables.bad
    names = md.names

    def expected(rows: np.ndarray) -> set[str]:
        return {str(names[r]) for r in rows} - bad

    _check_rows(test, expected(s.test), tables, protocol.num_classes, "test", source)
    for k, pred in folds.items():
        _check_rows(pred, expected(s.folds[k].val), tables, protocol.num_classes, f"fold {k} validation", source)
