"""`cxrbench evaluate` on a finished `smoke` run of the `tiny` model on the phantom set: its JSON against an
independent recomputation from the run's predictions and the metadata, the other formats, the pictures, the
user's attributes, and bad input refused in one line."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from cxrbench.errors import InputError, RecordError


@pytest.fixture(scope="module")
def smoke_run(synth_cache, tmp_path_factory):
    from cxrbench.run import RunOptions, run

    out = tmp_path_factory.mktemp("evaluate_runs")
    return run(RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")).parent


def _evaluate(*args):
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["evaluate", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r.stdout


def _youden(y, p):
    """The Youden threshold by brute force: every distinct score, the highest on ties."""
    cands = np.unique(p)[::-1]
    j = np.array([(p[y == 1] >= t).mean() - (p[y == 0] >= t).mean() for t in cands])
    return cands[np.flatnonzero(j == j.max())[0]]


def _weights(patients, resamples, seed):
    from cxrbench.metrics.auroc import _resample_counts

    ids = np.unique(patients)
    return _resample_counts(len(ids), resamples, seed)[:, np.searchsorted(ids, patients)]


@pytest.mark.slow
def test_json_matches_an_independent_recomputation(smoke_run, synth_cache):
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.verify import open_tables

    folder = smoke_run / "evaluation"
    stored = json.loads((folder / "evaluation.json").read_text())  # `run` wrote it beside the record
    assert not list(folder.glob("*.png")) and "<table>" in (folder / "evaluation.html").read_text()
    r = json.loads(_evaluate(smoke_run, "--format", "json"))
    assert r == stored
    test = Predictions.read(smoke_run / "predictions.csv.gz")
    val = Predictions.read(smoke_run / "fold0-val.csv.gz")
    y, p, classes = test.labels, test.probabilities, test.classes
    assert r["classes"] == classes and r["test"]["images"] == len(y)
    assert r["thresholds_from"]["file"] == "fold0-val.csv.gz" and r["thresholds_from"]["same_model_as_test"]
    assert "the model that scored the test set" in r["thresholds_from"]["model"]
    boot = r["bootstrap"]
    assert boot == {"resamples": 200, "seed": 0, "unit": "patient"}  # the smoke protocol's
    w = _weights(test.patients, boot["resamples"], boot["seed"])
    youden = {}
    for i, c in enumerate(classes):
        vy, vp = val.labels[:, i], val.probabilities[:, i]
        op = r["operating_points"][c]
        if vy.all() or not vy.any():
            assert all(o["threshold"] is None for o in op.values())
            continue
        t = youden[c] = _youden(vy, vp)
        assert op["youden"]["threshold"] == t
        sens = np.array([(vp[vy == 1] >= x).mean() for x in np.unique(vp)])
        assert op["sensitivity>=0.9"]["threshold"] == np.unique(vp)[np.flatnonzero(sens >= 0.9)[-1]]
        called, yy = p[:, i] >= t, y[:, i] == 1
        got = op["youden"]["test"]
        if yy.any():
            tp, pos = (called & yy).astype(float), yy.astype(float)
            assert got["sensitivity"]["value"] == pytest.approx(tp.sum() / pos.sum(), abs=1e-6)
            with np.errstate(invalid="ignore"):
                boots = (w @ tp) / (w @ pos)
            np.testing.assert_allclose(
                got["sensitivity"]["ci95"], np.percentile(boots[np.isfinite(boots)], [2.5, 97.5]), atol=1e-6
            )
        else:
            assert got["sensitivity"]["value"] is None
        assert got["specificity"]["value"] == pytest.approx((~called & ~yy).sum() / (~yy).sum(), abs=1e-6)
    # calibration
    for i, c in enumerate(classes):
        e = r["calibration"]["per_class"][c]
        assert e["brier"] == pytest.approx(brier_score_loss(y[:, i], p[:, i]), abs=1e-6)
        prob_true, prob_pred = calibration_curve(y[:, i], p[:, i], n_bins=15, strategy="uniform")
        n = np.array([b["images"] for b in e["reliability"]])
        assert n.sum() == len(y)
        assert e["ece"] == pytest.approx(np.sum(n[n > 0] / len(y) * np.abs(prob_pred - prob_true)), abs=1e-6)
    # subgroups, from the metadata
    md = open_tables(synth_cache).dataset.metadata
    rows = md.indices(test.images, "test")
    sex = md.table["sex"].to_numpy()[rows]
    for g in ("F", "M"):
        m = sex == g
        for i, c in enumerate(classes):
            e = r["subgroups"]["sex"]["per_class"][c]["groups"][g]
            assert (e["images"], e["positives"]) == (int(m.sum()), int(y[m, i].sum()))
            if min(e["positives"], e["negatives"]) < 10:
                assert e["auroc"] is None and "too_few" in e
            else:
                assert e["auroc"]["value"] == pytest.approx(roc_auc_score(y[m, i], p[m, i]), abs=1e-6)
    assert r["subgroups"]["age"]["left_out"] == int((md.table["age"].to_numpy()[rows] > 120).sum())
    # underdiagnosis: No Finding called positive among images with a finding
    nf = classes.index("No Finding")
    sick = y[:, nf] == 0
    u = r["underdiagnosis"]["all"]
    assert u["with_finding"] == int(sick.sum())
    if sick.sum() >= 10 and "No Finding" in youden:
        assert u["rate"]["value"] == pytest.approx((sick & (p[:, nf] >= youden["No Finding"])).sum() / sick.sum())
    else:
        assert u["rate"] is None
    # what was written is what was printed, with the pictures
    assert json.loads((folder / "evaluation.json").read_text()) == r
    page = (folder / "evaluation.html").read_text()
    for name in ("roc.png", "reliability.png", "forest-0.png", "forest-1.png", "forest-2.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"src='{name}'" in page


def test_text_markdown_csv_and_a_users_attribute(smoke_run, tmp_path):
    from cxrbench.results.predictions import Predictions

    text = _evaluate(smoke_run, "--no-pictures", "--out", tmp_path / "ev0")
    for part in ("Operating points", "Calibration (test)", "Subgroups by sex", "Subgroups by age", "Underdiagnosis"):
        assert part in text
    assert "fold0-val.csv.gz" in text and "15 equal-width bins" in text
    md = _evaluate(smoke_run, "--format", "md", "--out", tmp_path / "ev", "--no-pictures")
    assert md.startswith("# Evaluation of ") and "## Subgroups by view" in md and "| class | rule |" in md
    assert (tmp_path / "ev" / "evaluation.html").is_file() and not list((tmp_path / "ev").glob("*.png"))
    names = Predictions.read(smoke_run / "predictions.csv.gz").images
    attrs = tmp_path / "drains.csv"
    attrs.write_text(
        "Image Index,drain\n" + "".join(f"{n},{'yes' if k % 2 else 'no'}\n" for k, n in enumerate(names[1:]))
    )
    out = _evaluate(
        smoke_run, "--format", "csv", "--attributes", attrs, "--by", "drain", "--out", tmp_path / "ev2", "--no-pictures"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    got = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    d = got["subgroups"]["drain"]
    assert d["groups"] == ["no", "yes"] and d["left_out"] == 1 and "1 test image(s) without a value" in d["note"]
    nf = [x for x in rows if x["section"] == "calibration" and x["class"] == "No Finding" and x["metric"] == "ece"]
    assert float(nf[0]["value"]) == got["calibration"]["per_class"]["No Finding"]["ece"]
    assert {x["attribute"] for x in rows if x["section"] == "underdiagnosis"} >= {"", "sex", "age", "view", "drain"}


@pytest.mark.parametrize(
    "content, by, reason",
    [
        ("image,drain\n", "drain", "no 'Image Index' column"),
        ("Image Index,tube\n", "drain", "no column 'drain'"),
        ("Image Index,drain\n{0},yes\n{0},no\n", "drain", "line 3: image .* appears twice"),
        ("Image Index,drain\n{0},=cmd()\n", "drain", "line 2: drain value '=cmd\\(\\)' is not a group name"),
        ("Image Index,drain\n00009999_000.png,yes\n", "drain", "none of the run's .* test images has a value"),
    ],
)
def test_bad_attributes_are_refused_naming_the_file(smoke_run, tmp_path, content, by, reason):
    from cxrbench.results.evaluate import read_attributes
    from cxrbench.results.predictions import Predictions

    names = Predictions.read(smoke_run / "predictions.csv.gz").images
    bad = tmp_path / "attrs.csv"
    bad.write_text(content.format(names[0]))
    with pytest.raises(InputError, match=f"attrs.csv.*{reason}"):
        read_attributes(bad, by, names)


def test_the_command_line_says_what_is_wrong_in_one_line(smoke_run, tmp_path):
    bad = tmp_path / "a.csv"
    bad.write_text("image,drain\n")
    for args, reason in (
        (["--attributes", str(bad), "--by", "drain"], "a.csv: no 'Image Index' column"),
        (["--by", "drain"], "--attributes FILE and --by COLUMN go together"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "cxrbench", "evaluate", str(smoke_run), *args], capture_output=True, text=True
        )
        assert r.returncode == 2 and reason in r.stderr, r.stderr
        assert len([x for x in r.stderr.splitlines() if "error" in x]) == 1 and "Traceback" not in r.stderr


def test_a_run_with_a_rewritten_label_is_not_evaluated(smoke_run, tmp_path):
    """The run folder is untrusted: a rewritten label (record re-sealed) is refused before anything is computed."""
    import shutil

    from cxrbench.results.evaluate import evaluate_run
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import seal

    forged = tmp_path / "forged"
    shutil.copytree(smoke_run, forged, ignore=shutil.ignore_patterns("evaluation"))
    v = Predictions.read(forged / "fold0-val.csv.gz")
    v.labels[0, 0] ^= 1
    sha = Predictions(v.images, v.patients, v.labels, v.probabilities, v.classes).write(forged / "fold0-val.csv.gz")
    rec = json.loads((forged / "record.json").read_text())
    rec["validation"]["folds"][0]["predictions"]["sha256"] = sha
    (forged / "record.json").write_text(json.dumps(seal(rec)))
    with pytest.raises(RecordError, match="fold 0 validation predictions give .* the label"):
        evaluate_run(forged)


def test_the_board_rederives_the_evaluation_columns(smoke_run, synth_cache, tmp_path):
    """`leaderboard --show ece,worst-group,underdiagnosis` and `--evaluation` in the exports: the figures of
    `cxrbench evaluate`, re-derived from the filed predictions, never read from a stored result."""
    from cxrbench.cli import cli
    from cxrbench.results.leaderboard import submit

    board = tmp_path / "board"
    submit(smoke_run, board, allow_dirty=True, data=str(synth_cache))
    want = json.loads(_evaluate(smoke_run, "--format", "json", "--no-pictures", "--out", tmp_path / "e"))
    r = CliRunner().invoke(
        cli,
        ["leaderboard", "--leaderboard", str(board), "--format", "json", "--evaluation", "--data", str(synth_cache)],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    entry = out["groups"][0]["entries"][0]
    assert entry["ev_ece"] == want["calibration"]["pooled"]["ece"]
    assert entry["ev_brier"] == want["calibration"]["pooled"]["brier"]
    assert entry["ev_thresholds_from"] == "fold0-val.csv.gz"
    full = out["evaluation"]["entries"][entry["entry"]]
    assert full["subgroups"] == want["subgroups"] and full["underdiagnosis"] == want["underdiagnosis"]
    r = CliRunner().invoke(
        cli, ["leaderboard", "--leaderboard", str(board), "--show", "ece,underdiagnosis", "--data", str(synth_cache)]
    )
    assert r.exit_code == 0, r.output
    assert "ECE (pooled)" in r.stdout and "underdiagnosis gap" in r.stdout and f"{entry['ev_ece']:.4f}" in r.stdout
    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--data", str(synth_cache)])
    assert r.exit_code != 0 and "--evaluation" in str(r.exception)


def test_worst_group_and_underdiagnosis_gap_of_the_board():
    from cxrbench.results.evaluation_board import largest_underdiagnosis_gap, worst_group

    def a(v):
        return None if v is None else {"value": v, "ci95": [None, None]}

    sub = {
        "sex": {
            "groups": ["F", "M"],
            "per_class": {
                "x": {"groups": {"F": {"auroc": a(0.7)}, "M": {"auroc": a(0.8)}}},
                "y": {"groups": {"F": {"auroc": a(0.9)}, "M": {"auroc": None}}},  # not in every group: left out
            },
        },
        "age": {
            "groups": ["0-19", "80+"],
            "per_class": {
                "x": {"groups": {"0-19": {"auroc": None}, "80+": {"auroc": a(0.6)}}},  # one group only: no ranking
                "y": {"groups": {"0-19": {"auroc": None}, "80+": {"auroc": a(0.5)}}},
            },
        },
    }
    assert worst_group(sub, ["x", "y"]) == (0.7, "sex F")
    u = {"by": {"sex": {"gap": {"value": 0.1, "highest": "F", "lowest": "M"}}, "age": {"gap": None}}}
    assert largest_underdiagnosis_gap(u) == (0.1, "sex: F vs M")
    assert largest_underdiagnosis_gap({"by": {"age": {"gap": None}}}) is None
