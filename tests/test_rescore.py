"""Rescoring runs against radiologist-adjudicated labels (Majkowska et al. 2019): the file's checks, the mapping,
the paired scores, and `cxrbench rescore` on a finished run."""

import gzip
import json
from dataclasses import astuple

import numpy as np
import pytest
from click.testing import CliRunner

from cxrbench.errors import InputError
from cxrbench.results.adjudicated import (
    ADJUDICATED_FINDINGS,
    COLUMNS,
    DEFAULT_MAPPING,
    read_adjudicated,
    read_mapping,
    rescore,
)

from .conftest import NIH

SAMPLE = NIH / "adjudicated" / "google2019_sample.csv.gz"


def _sample_lines() -> list[str]:
    with gzip.open(SAMPLE, "rt") as fh:
        return fh.read().splitlines()


def test_the_real_sample_reads_against_the_real_metadata(real_metadata):
    a = read_adjudicated(SAMPLE, real_metadata)
    assert len(a) == 80 and int((a.sets == "test").sum()) == 60
    assert {f: int(v.sum()) for f, v in a.labels.items()} == {
        "Fracture": 2,
        "Pneumothorax": 4,
        "Airspace opacity": 49,
        "Nodule or mass": 11,
    }
    with gzip.open(NIH / "lists" / "test_list.txt.gz", "rt") as fh:
        official_test = set(fh.read().split())
    assert all(n in official_test for n, s in zip(a.names, a.sets) if s == "test")  # as the README says


@pytest.mark.parametrize(
    "edit, line, reason",
    [
        (lambda ls: [ls[0] + ",Extra", *ls[1:]], 1, "unknown column 'Extra'"),
        (lambda ls: [ls[0].replace(",Set Id", ""), *ls[1:]], 1, "missing column 'Set Id'"),
        (
            lambda ls: [ls[0], ls[1].replace(",NO,NO,NO,NO,", ",NO,MAYBE,NO,NO,"), *ls[2:]],
            2,
            "Pneumothorax is 'MAYBE'; expected YES or NO",
        ),
        (lambda ls: [ls[0], ls[1], ls[1], *ls[2:]], 3, "appears twice \\(first on line 2\\)"),
        (
            lambda ls: [ls[0], ls[1].replace("00001900_007.png", "99999999_000.png"), *ls[2:]],
            2,
            "99999999_000.png is not in the metadata of the run.s data",
        ),
        (
            lambda ls: [ls[0], ls[1].replace(",7,1900,", ",7,1901,"), *ls[2:]],
            2,
            "Patient ID 1901, the metadata says 1900",
        ),
        (lambda ls: [ls[0], ls[1][: -len("test")] + "train", *ls[2:]], 2, "Set Id is 'train'"),
        (lambda ls: [ls[0], ls[1].replace("00001900_007.png", "../../etc/passwd"), *ls[2:]], 2, "is not an image name"),
        (lambda ls: [ls[0], ls[1] + ",", *ls[2:]], 2, "17 fields, expected 16"),
    ],
)
def test_bad_adjudicated_files_are_refused_with_the_line(tmp_path, real_metadata, edit, line, reason):
    lines = _sample_lines()
    assert lines[1].startswith("00001900_007.png,No Finding,7,1900,") and lines[1].endswith(",NO,NO,NO,NO,test")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(InputError, match=f"bad.csv, line {line}: .*{reason}"):
        read_adjudicated(bad, real_metadata)


def test_mapping_is_explicit_versioned_and_checked(tmp_path):
    assert DEFAULT_MAPPING.key == "cxr14-adjudicated@v1" and len(DEFAULT_MAPPING.content_hash) == 16
    assert DEFAULT_MAPPING.describe() == [
        "Fracture <- (no ChestX-ray14 class: not scored)",
        "Pneumothorax <- Pneumothorax",
        "Airspace opacity <- max(Consolidation, Pneumonia, Infiltration, Edema)",
        "Nodule or mass <- max(Nodule, Mass)",
    ]
    mine = tmp_path / "mine.json"
    findings = {
        "Fracture": [],
        "Pneumothorax": ["Pneumothorax"],
        "Airspace opacity": ["Consolidation", "Atelectasis"],
        "Nodule or mass": ["Nodule"],
    }
    mine.write_text(json.dumps({"id": "mine", "version": 2, "findings": findings}))
    m = read_mapping(mine)
    assert m.key == "mine@v2" and m.content_hash != DEFAULT_MAPPING.content_hash
    for bad, reason in (
        ({"id": "mine", "version": 1, "findings": {**findings, "Fracture": ["Bones"]}}, "'Bones' is not one of the 14"),
        (
            {"id": "mine", "version": 1, "findings": {"Pneumothorax": ["Pneumothorax"]}},
            "must map exactly these findings",
        ),
        ({"id": "../x", "version": 1, "findings": findings}, "must be a name"),
    ):
        mine.write_text(json.dumps(bad))
        with pytest.raises(InputError, match=reason):
            read_mapping(mine)


def _labels(tmp_path, names, patients, table: dict[str, np.ndarray], sets=None):
    """An adjudicated file for given images (generated rows in the distributed format)."""
    rows = [",".join(COLUMNS)]
    for i, (n, pid) in enumerate(zip(names, patients)):
        vals = ["YES" if table[f][i] else "NO" for f in ADJUDICATED_FINDINGS]
        rows.append(
            f"{n},No Finding,0,{pid},50,M,PA,2500,2048,0.168,0.168,{','.join(vals)},"
            f"{'test' if sets is None else sets[i]}"
        )
    path = tmp_path / "adjudicated.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_paired_scores_show_label_noise(tmp_path):
    """A model that predicts the adjudicated truth scores higher against it than against noisy NIH labels."""
    rng = np.random.default_rng(0)
    n = 400
    names = [f"{i:08d}_000.png" for i in range(n)]
    patients = np.arange(n) // 2  # two images per patient
    truth = {f: rng.random(n) < 0.3 for f in ADJUDICATED_FINDINGS}
    classes = ["Pneumothorax", "Consolidation", "Pneumonia", "Infiltration", "Edema", "Nodule", "Mass"]
    y = np.zeros((n, len(classes)), np.uint8)
    p = rng.random((n, len(classes))) * 0.2
    noisy = truth["Pneumothorax"] ^ (rng.random(n) < 0.25)  # NIH labels: a quarter flipped
    y[:, 0] = noisy
    p[:, 0] = np.where(truth["Pneumothorax"], 0.6, 0.1) + rng.random(n) * 0.3
    y[:, 5] = truth["Nodule or mass"]  # nodule or mass: NIH labels equal the adjudicated ones
    p[:, 6] = np.where(truth["Nodule or mass"], 0.9, 0.0)  # ... and the Mass score separates them
    adj = read_adjudicated(_labels(tmp_path, names, patients, truth))
    r = rescore(names, patients, y, p, classes, adj, resamples=300, seed=0)
    assert r["coverage"] == {"adjudicated_images": n, "in_predictions": n, "patients": n // 2}
    assert (
        r["findings"]["Fracture"]["scored"] is False and "no ChestX-ray14 class" in r["findings"]["Fracture"]["reason"]
    )
    pt = r["findings"]["Pneumothorax"]
    assert pt["auroc_adjudicated"]["auroc"] == pytest.approx(1.0) and pt["auroc_nih"]["auroc"] < 0.85
    assert pt["difference"]["significant"] and pt["difference"]["ci95"][0] > 0
    assert pt["label_agreement"] == pytest.approx(float((noisy == truth["Pneumothorax"]).mean()), abs=1e-6)
    nm = r["findings"]["Nodule or mass"]  # max(Nodule, Mass) scores; Nodule OR Mass labels
    assert nm["auroc_adjudicated"]["auroc"] == nm["auroc_nih"]["auroc"] == pytest.approx(1.0)
    assert nm["label_agreement"] == 1.0 and nm["difference"]["diff"] == 0
    lo, hi = pt["auroc_nih"]["ci95"]
    assert lo <= pt["auroc_nih"]["auroc"] <= hi
    # only the chosen set, only images the run scored
    sets = ["val" if i % 4 == 0 else "test" for i in range(n)]
    adj = read_adjudicated(_labels(tmp_path, names, patients, truth, sets))
    r = rescore(names[:200], patients[:200], y[:200], p[:200], classes, adj, resamples=100, seed=0)
    assert r["coverage"]["adjudicated_images"] == 300 and r["coverage"]["in_predictions"] == 150


@pytest.mark.slow
def test_rescore_a_finished_run(synth_cache, tmp_path):
    from cxrbench.cli import cli
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import read_record
    from cxrbench.run import RunOptions, run

    run_dir = run(
        RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(tmp_path / "runs"), device="cpu")
    ).parent
    rec = read_record(run_dir)
    names, patients, y, _, classes = astuple(Predictions.read(run_dir / "predictions.csv.gz"))
    table = {
        "Fracture": np.zeros(len(names), bool),
        "Pneumothorax": y[:, classes.index("Pneumothorax")] > 0,
        "Airspace opacity": y[:, [classes.index(c) for c in ("Consolidation", "Infiltration")]].any(1),
        "Nodule or mass": y[:, [classes.index(c) for c in ("Nodule", "Mass")]].any(1),
    }
    table["Airspace opacity"][: len(names) // 2] ^= True  # disagree with NIH on half the images
    labels = _labels(tmp_path, names, patients, table)
    r = CliRunner().invoke(cli, ["rescore", str(run_dir), "--adjudicated", str(labels), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["coverage"]["in_predictions"] == rec["test"]["n_images"] == len(names)
    assert out["run_record_sha256"] == rec["record_sha256"] and out["mapping"]["key"] == "cxr14-adjudicated@v1"
    assert out["bootstrap"]["resamples"] == rec["protocol"]["settings"]["bootstrap"]
    written = list(run_dir.glob("adjudicated-*-test.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["result_sha256"] == out["result_sha256"]
    ao = out["findings"]["Airspace opacity"]
    assert ao["scored"] and ao["label_agreement"] < 0.75
    # the table view says the same in words
    r = CliRunner().invoke(cli, ["rescore", str(run_dir), "--adjudicated", str(labels)])
    assert r.exit_code == 0 and "Fracture" in r.output and "no ChestX-ray14 class" in r.output
    # a file about other images is refused, naming it
    other = _labels(tmp_path, ["00000999_000.png"], [999], {f: np.ones(1, bool) for f in ADJUDICATED_FINDINGS})
    r = CliRunner().invoke(cli, ["rescore", str(run_dir), "--adjudicated", str(other)])
    assert r.exit_code != 0


@pytest.mark.slow
def test_a_run_with_rewritten_labels_is_not_rescored(synth_cache, tmp_path):
    """The run folder is untrusted: predictions whose NIH labels were rewritten (and the record re-sealed) are
    refused before anything is scored, as `submit` refuses them."""
    import hashlib
    import shutil

    from cxrbench.errors import RecordError
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import seal, write_predictions
    from cxrbench.results.rescore import rescore_run
    from cxrbench.run import RunOptions, run

    run_dir = run(
        RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(tmp_path / "runs"), device="cpu")
    ).parent
    names, patients, y, p, classes = astuple(Predictions.read(run_dir / "predictions.csv.gz"))
    table = {f: np.zeros(len(names), bool) for f in ADJUDICATED_FINDINGS}
    table["Pneumothorax"][0] = True
    labels = _labels(tmp_path, names, patients, table)
    forged = tmp_path / "forged"
    shutil.copytree(run_dir, forged)
    y2 = y.copy()
    c = classes.index("Pneumothorax")
    y2[0, c] = 1 - y2[0, c]  # one rewritten label
    sha = write_predictions(forged / "predictions.csv.gz", names, patients, y2, p, tuple(classes))
    rec = json.loads((forged / "record.json").read_text())
    rec["predictions"]["sha256"] = sha
    (forged / "record.json").write_text(json.dumps(seal(rec)))
    assert hashlib.sha256((forged / "predictions.csv.gz").read_bytes()).hexdigest() == sha
    with pytest.raises(RecordError, match="label Pneumothorax"):
        rescore_run(forged, labels)
    rescore_run(run_dir, labels)  # the untouched run is rescored
