"""`cxrbench evaluate`: a finished run's operating points, calibration, subgroups and underdiagnosis, from its
checked predictions and the metadata of its data (the figures: `cxrbench.metrics.evaluation`).

The run folder is untrusted, as `rescore` reads it: the record and every predictions file it lists are read
and validated, and the test and fold-0 validation predictions must be exactly the protocol's splits of the
dataset tables, with the metadata's labels and patients, before anything is computed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from cxrbench.errors import InputError, RecordError
from cxrbench.metrics import evaluation as ev

RESULT_FORMAT = "cxrbench-evaluation"
RESULT_VERSION = 1
MAX_ATTRIBUTES_BYTES = 64 << 20
MAX_GROUPS = 20  # a user attribute with more values is not a subgroup audit
_GROUP_NAME = re.compile(r"[A-Za-z0-9<>][A-Za-z0-9 ._+<>=-]{0,39}")  # untrusted text shown in tables, HTML and pictures
THRESHOLD_FOLD = 0


def threshold_source(final_run: bool, n_images: int) -> dict:
    """Which validation predictions choose the thresholds, in words and as fields."""
    if final_run:
        model = (
            f"fold {THRESHOLD_FOLD}'s model; the test set is scored by the final model trained on train+val, "
            "which has no held-out images, so its thresholds are those chosen on fold "
            f"{THRESHOLD_FOLD}'s validation predictions"
        )
    else:
        model = f"fold {THRESHOLD_FOLD}'s model, the model that scored the test set"
    return {
        "file": f"fold{THRESHOLD_FOLD}-val.csv.gz",
        "fold": THRESHOLD_FOLD,
        "images": n_images,
        "model": model,
        "same_model_as_test": not final_run,
    }


def read_attributes(path: str | Path, column: str, images: list[str]) -> tuple[np.ndarray, tuple[str, ...], str]:
    """A user's attribute for the test images: a CSV keyed by `Image Index` with the column `column`. Returns
    per image its value (None: not in the file or empty), the groups in sorted order and a note. Bad input is
    an InputError naming the file and the reason."""
    import pandas as pd

    from cxrbench.files import read_regular

    p = Path(path)
    raw = read_regular(p, MAX_ATTRIBUTES_BYTES, "attributes CSV", follow=True)
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise InputError(p, f"not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    cols = [str(c) for c in df.columns]
    if "Image Index" not in cols:
        raise InputError(p, "no 'Image Index' column (the attributes are keyed by image name)")
    if column not in cols:
        raise InputError(p, f"no column {column!r} (columns: {', '.join(cols)[:200]})")
    if column == "Image Index":
        raise InputError(p, "--by names the key column 'Image Index'; name the attribute's column")
    names = df["Image Index"].astype(str).str.strip()
    dup = names[names.duplicated()]
    if len(dup):
        raise InputError(p, f"image {dup.iloc[0][:80]!r} appears twice", line=int(dup.index[0]) + 2)
    values = df[column].astype(str).str.strip()
    bad = values[(values != "") & ~values.map(lambda v: bool(_GROUP_NAME.fullmatch(v)))]
    if len(bad):
        raise InputError(
            p,
            f"{column} value {bad.iloc[0][:40]!r} is not a group name (1-40 letters, digits, spaces or ._+<>=-, "
            "starting with a letter, a digit, < or >)",
            line=int(bad.index[0]) + 2,
        )
    lookup = dict(zip(names.tolist(), values.tolist()))
    out = np.array([lookup.get(n) or None for n in images], dtype=object)
    groups = tuple(sorted({v for v in out if v is not None}))
    if not groups:
        raise InputError(p, f"none of the run's {len(images):,} test images has a value in column {column!r}")
    if len(groups) > MAX_GROUPS:
        raise InputError(p, f"column {column!r} has {len(groups)} values among the test images (at most {MAX_GROUPS})")
    missing = int(sum(v is None for v in out))
    note = f"from {p.name}, column {column}"
    if missing:
        note += f"; {missing:,} test image(s) without a value left out"
    return out, groups, note


def metadata_attributes(tables, images: list[str]) -> list[ev.Attribute]:
    """Sex, age band and view position of the test images, from the dataset's metadata."""
    md = tables.dataset.metadata
    rows = md.indices(images, tables.source)
    t = md.table
    sex = np.asarray(t["sex"].to_numpy(dtype=object)[rows], dtype=object)
    view = np.asarray(t["view"].to_numpy(dtype=object)[rows], dtype=object)
    ages = t["age"].to_numpy(dtype=np.int64)[rows]
    bands = ev.age_bands(ages)
    over = int((ages > ev.MAX_AGE).sum())
    age_note = f"age bands of the metadata's Patient Age; {over:,} test image(s) with an age over {ev.MAX_AGE} "
    age_note += "(data errors) left out"
    # None marks an unknown value in these object arrays; numpy's stub of where() does not allow None for y
    sex_known = np.where(np.isin(sex, ["M", "F"]), sex, None)  # type: ignore[call-overload]
    view_known = np.where(np.isin(view, ["PA", "AP"]), view, None)  # type: ignore[call-overload]
    return [
        ev.Attribute("sex", sex_known, ("F", "M"), "Patient Gender"),
        ev.Attribute("age", bands, (*(b[2] for b in ev.AGE_BANDS), ev.OLDEST_BAND), age_note),
        ev.Attribute("view", view_known, ("PA", "AP"), "View Position"),
    ]


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    attributes: str | Path | None = None,
    by: str | None = None,
    sensitivity: float = ev.DEFAULT_TARGET,
    specificity: float = ev.DEFAULT_TARGET,
) -> tuple[dict, dict]:
    """Evaluate RUN: (result, arrays for the pictures). See the module docstring for what is checked."""
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import read_run_files
    from cxrbench.results.rescore import open_run_tables
    from cxrbench.results.verify import check_data, check_protocol

    if (attributes is None) != (by is None):
        raise InputError(None, "--attributes FILE and --by COLUMN go together")
    run_dir = Path(run)
    files = read_run_files(run_dir)
    rec = files.record
    protocol = check_protocol(rec, files.source)
    test = Predictions.parse(files.predictions, files.source)
    if THRESHOLD_FOLD not in files.folds:
        raise RecordError(
            f"{files.source}: the record lists no validation predictions of fold {THRESHOLD_FOLD}; the operating "
            "points are chosen on validation, never on test"
        )
    val = Predictions.parse(files.folds[THRESHOLD_FOLD], f"{files.source} (fold {THRESHOLD_FOLD} validation)")
    tables = open_run_tables(run_dir, data, " (the subgroups come from its metadata)")
    check_data(rec, test, {THRESHOLD_FOLD: val}, tables, files.source)
    attrs = metadata_attributes(tables, test.images)
    if attributes is not None and by is not None:
        values, groups, note = read_attributes(attributes, by, test.images)
        attrs.append(ev.Attribute(by, values, groups, note))
    figures = ev.evaluate(
        test.labels,
        test.probabilities,
        test.patients,
        val.labels,
        val.probabilities,
        list(test.classes),
        attrs,
        protocol.bootstrap,
        protocol.seed,
        sensitivity,
        specificity,
    )
    result = {
        "format": RESULT_FORMAT,
        "format_version": RESULT_VERSION,
        "run_id": rec["run_id"],
        "model": rec["model"]["name"],
        "protocol": protocol.key,
        "run_record_sha256": rec["record_sha256"],
        "predictions_sha256": rec["predictions"]["sha256"],
        "metadata_csv_sha256": rec["data"]["metadata_csv_sha256"],
        "classes": list(test.classes),
        "test": {"images": len(test.images), "patients": int(len(np.unique(test.patients)))},
        "thresholds_from": threshold_source(protocol.final_run, len(val.images)),
        **figures,
    }
    result["result_sha256"] = hashlib.sha256(_canonical(result)).hexdigest()
    return result, {"y": test.labels, "p": test.probabilities}


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def write_outputs(result: dict, arrays: dict, out: Path, root: Path | None, pictures: bool = True) -> dict[str, Path]:
    """evaluation.json, evaluation.csv, evaluation.html and (unless `pictures` is False) its pictures (PNG) in
    `out`; their paths."""
    from cxrbench.files import atomic_write, atomic_write_text, make_dirs
    from cxrbench.results import evaluation_plots as plots
    from cxrbench.results import evaluation_render as render

    make_dirs(out, root=root)
    paths = {
        "json": atomic_write(
            out / "evaluation.json", (json.dumps(result, indent=1, sort_keys=True) + "\n").encode(), root=root
        ),
        "csv": atomic_write_text(out / "evaluation.csv", render.to_csv(result), root=root),
    }
    drawn = plots.draw_all(result, arrays["y"], arrays["p"], out, root) if pictures else {}
    paths.update(drawn)
    paths["html"] = atomic_write_text(
        out / "evaluation.html", render.to_html(result, {k: v.name for k, v in drawn.items()}), root=root
    )
    return paths
