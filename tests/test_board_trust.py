"""The leaderboard's trust boundary: run folders, records and predictions from other people are data, checked
before anything is filed or shown, and never a way to write outside the board; and what the board shows
(marks, machine-readable exports, plots). Numbers refer to issue 13 items 2-7 and issue 12 items 8-12."""

import csv
import gzip
import io
import json
import os
import shutil
from dataclasses import astuple

import numpy as np
import pytest
from click.testing import CliRunner

from cxrbench.cli import cli
from cxrbench.errors import InputError, RecordError
from cxrbench.files import WriteError
from cxrbench.protocols import get_protocol
from cxrbench.results import record as record_mod
from cxrbench.results.leaderboard import load, rank, submit
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import read_record, seal, write_predictions

from .board_runs import filed_board, finished_runs, forge
from .conftest import slow_fixture

EVIL = '<script>alert("board")</script>'  # not test_leaderboard.py's name: registrations outlive a module
SMOKE = get_protocol("smoke@v1")


@pytest.fixture(scope="module")
@slow_fixture
def runs(synth_cache, tmp_path_factory):
    """Finished smoke runs on the phantom cache: tiny, tiny_attn, and a plugin model with a hostile name."""
    return finished_runs(synth_cache, tmp_path_factory.mktemp("trust_runs"), EVIL)


def _copy(run_dir, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("gallery"))
    return dst


def _reseal(run_dir, tmp_path, edit, name=None):
    """A copy of the run whose record was edited and sealed again (its own hash is right)."""
    copy = _copy(run_dir, tmp_path, name or f"{edit.__name__}-{run_dir.name}")
    rec = json.loads((copy / "record.json").read_text())
    edit(rec)
    (copy / "record.json").write_text(json.dumps(seal(rec)))
    return copy


def _forge(run_dir, tmp_path, edit, name=None):
    """A copy whose predictions were edited, with every test figure recomputed from them and the record sealed
    again: consistent in itself, so only a check against the data can catch it."""
    return forge(run_dir, tmp_path / (name or f"{edit.__name__}-{run_dir.name}"), edit)


@pytest.fixture()
def board(runs, tmp_path):
    return filed_board(runs, tmp_path / "board")


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ------------------------------------------------------------------------------------ 2. writes inside the board


@pytest.mark.parametrize("run_id", ["../../../x", "a/b", "/tmp/abs", "..", ".hidden", "-rf", "x" * 200, "a\nb"])
def test_submit_refuses_unsafe_run_ids(runs, tmp_path, run_id):
    def hostile(rec):
        rec["run_id"] = run_id

    crafted = _reseal(runs["tiny"], tmp_path, hostile, name="crafted")
    board = tmp_path / "deep" / "er" / "board"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(RecordError, match="run_id|control character"):
        submit(crafted, board, allow_dirty=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("where", ["../predictions.csv.gz", "/etc/hostname", "sub/predictions.csv.gz", "link"])
def test_predictions_outside_the_run_folder_are_refused(runs, tmp_path, where):
    crafted = _copy(runs["tiny"], tmp_path, "crafted")
    if where == "link":  # a link inside the folder that leads out of it
        outside = tmp_path / "outside.csv.gz"
        shutil.copy(crafted / "predictions.csv.gz", outside)
        (crafted / "predictions.csv.gz").unlink()
        (crafted / "predictions.csv.gz").symlink_to(outside)
    else:
        rec = json.loads((crafted / "record.json").read_text())
        rec["predictions"]["path"] = where
        (crafted / "record.json").write_text(json.dumps(seal(rec)))
    with pytest.raises(RecordError, match="not a safe name|leads outside|is a link"):
        submit(crafted, tmp_path / "board", allow_dirty=True)
    assert not (tmp_path / "board").exists()


def test_predictions_that_are_not_regular_files_are_refused(runs, tmp_path):
    crafted = _copy(runs["tiny"], tmp_path, "fifo")
    (crafted / "predictions.csv.gz").unlink()
    os.mkfifo(crafted / "predictions.csv.gz")  # would block a plain open() forever
    with pytest.raises(RecordError, match="not a regular file"):
        submit(crafted, tmp_path / "board", allow_dirty=True)
    record_link = _copy(runs["tiny"], tmp_path, "record-link")
    (record_link / "record.json").unlink()
    (record_link / "record.json").symlink_to(runs["tiny"] / "record.json")
    with pytest.raises(RecordError, match="is a link"):
        submit(record_link, tmp_path / "board", allow_dirty=True)


def test_a_board_folder_that_links_out_is_not_written_through(runs, tmp_path):
    board, elsewhere = tmp_path / "board", tmp_path / "elsewhere"
    (board / "records").mkdir(parents=True)
    elsewhere.mkdir()
    (board / "records" / "smoke@v1").symlink_to(elsewhere)
    with pytest.raises(WriteError, match="it is a link"):  # refused by make_dirs before anything is created
        submit(runs["tiny"], board, allow_dirty=True)
    assert list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------------------------ 3. re-derived or marked


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["test"]["weighted_mean"]["ci95"].__setitem__(0, 0.01), "95% CI low end of weighted_mean"),
        (lambda r: r["test"]["plain_mean"]["ci95"].__setitem__(1, 0.99), "95% CI high end of plain_mean"),
        (
            lambda r: r["test"]["per_class"]["Atelectasis"]["ci95"].__setitem__(1, 0.99),
            "CI high end of test AUROC of At",
        ),
        (lambda r: r["test"].__setitem__("n_patients", 3), "patients, the record says 3"),
        (lambda r: r["test"]["bootstrap"].__setitem__("resamples", 50), "bootstrapped with"),
        (lambda r: r["model"].__setitem__("parameters", 123), "has 6,583 parameters"),
    ],
)
def test_resealed_edits_of_rederivable_figures_are_refused(runs, tmp_path, edit, message):
    _refused_after_reseal(runs["tiny"], tmp_path, edit, message)


def _refused_after_reseal(run_dir, tmp_path, edit, message):
    def edited(rec):
        edit(rec)

    with pytest.raises(RecordError, match=message):
        submit(_reseal(run_dir, tmp_path, edited), tmp_path / "board", allow_dirty=True)


def test_figures_that_cannot_be_rederived_are_marked_reported(runs, tmp_path):
    def boasts(rec):
        rec["run_id"] = "boasts"
        rec["timing"]["train_images_per_s"] = 99999.0
        for f in rec["validation"]["folds"]:  # as a run that saved no validation predictions (an older cxrbench)
            f.pop("predictions", None)
        rec["validation"]["folds"][0]["weighted_auroc"] = 0.99
        rec["validation"]["mean_weighted_auroc"] = 0.99
        rec["environment"]["bitwise_reproducible"] = True
        rec["environment"]["deterministic"] = True
        rec["lr"] = 0.1

    board = tmp_path / "board"
    submit(_reseal(runs["tiny"], tmp_path, boasts), board, allow_dirty=True)
    submit(runs["tiny_attn"], board, allow_dirty=True)
    (g,) = rank(load(board))
    e = next(x for x in g.entries if x.record["run_id"] == "boasts")
    assert e.marks == {
        "test": "re-derived",
        "validation": "reported",
        "parameters": "re-derived",
        "timing": "reported",
        "localization": "reported",
        "reproducibility": "reported",
    }
    from cxrbench.results import render

    row = next(r for r in render.rows(g) if r["entry"] == e.id)
    assert row["train images/s"].endswith("†") and row["validation AUROC"] == "0.9900 †"
    assert row["bitwise reproducible"] == "yes †" and "†" not in row["weighted AUROC [95% CI]"]
    assert "†" not in row["params"]
    other = next(r for r in render.rows(g) if r["entry"] != e.id)
    assert other["bitwise reproducible"] == "yes †"  # a CPU run states it; no board can re-derive it
    md = render.to_markdown([g])
    assert "99,999 (" in md and "as reported by the submitter" in md
    fields = {f["entry"]: f for f in render.entry_fields(g)}[e.id]
    assert fields["timing_source"] == "reported" and fields["validation_source"] == "reported"
    assert fields["test_source"] == "re-derived" and fields["bitwise_reproducible"] is True


def _with_validation_predictions(run_dir, synth_cache, tmp_path, name, edit=None):
    """A run that saved fold 0's validation predictions (the run engineer's contract) with figures from them."""
    from cxrbench.data.dataset import open_dataset, splits_for
    from cxrbench.metrics.auroc import per_class_auroc, plain_mean, weighted_mean

    copy = _copy(run_dir, tmp_path, name)
    ds = open_dataset(synth_cache / "tables")
    s = splits_for(ds.metadata, ds.layout, SMOKE)
    rows = s.folds[0].val
    y = ds.metadata.labels(15)[rows]
    p = np.random.default_rng(0).random(y.shape)
    names = [str(n) for n in ds.metadata.names[rows]]
    classes = read_record(run_dir)["data"]["classes"]
    sha = write_predictions(copy / "fold0-val.csv.gz", names, ds.metadata.patients[rows], y, p, tuple(classes))
    a = per_class_auroc(y, p)
    r6 = lambda x: None if not np.isfinite(x) else round(float(x), 6)  # noqa: E731
    rec = json.loads((copy / "record.json").read_text())
    f = rec["validation"]["folds"][0]
    f.update(
        per_class={c: r6(a[i]) for i, c in enumerate(classes)},
        weighted_auroc=r6(weighted_mean(a, y)),
        plain_auroc=r6(plain_mean(a)),
        predictions={"path": "fold0-val.csv.gz", "sha256": sha},
    )
    rec["validation"]["mean_weighted_auroc"] = f["weighted_auroc"]
    rec["validation"]["mean_plain_auroc"] = f["plain_auroc"]
    rec["run_id"] = name
    if edit is not None:
        edit(rec)
    (copy / "record.json").write_text(json.dumps(seal(rec)))
    return copy


def test_validation_figures_are_rederived_from_their_predictions(runs, synth_cache, tmp_path):
    board = tmp_path / "board"
    ok = _with_validation_predictions(runs["tiny"], synth_cache, tmp_path, "with-val")
    path = submit(ok, board, allow_dirty=True)
    assert (path.parent / (path.name[:-5] + ".fold0-val.csv.gz")).exists()
    (e,) = load(board)
    assert e.marks["validation"] == "re-derived"

    def better(rec):
        rec["validation"]["folds"][0]["weighted_auroc"] = 0.99
        rec["validation"]["mean_weighted_auroc"] = 0.99

    forged = _with_validation_predictions(runs["tiny"], synth_cache, tmp_path, "forged-val", better)
    with pytest.raises(RecordError, match="fold 0 validation weighted_auroc .* does not follow"):
        submit(forged, board, allow_dirty=True)

    def mean(rec):
        rec["validation"]["mean_plain_auroc"] = 0.99

    with pytest.raises(RecordError, match="mean_plain_auroc .* is not the mean of its folds"):
        submit(
            _with_validation_predictions(runs["tiny"], synth_cache, tmp_path, "forged-mean", mean),
            board,
            allow_dirty=True,
        )

    def shuffled(rec):  # the validation rows of another fold: labels that are not the split's
        pass

    swapped = _with_validation_predictions(runs["tiny"], synth_cache, tmp_path, "swapped-val", shuffled)
    names, pat, y, p, classes = astuple(Predictions.read(swapped / "fold0-val.csv.gz"))
    y[0] = 1 - y[0]
    sha = write_predictions(swapped / "fold0-val.csv.gz", names, pat, y, p, tuple(classes))
    rec = json.loads((swapped / "record.json").read_text())
    rec["validation"]["folds"][0]["predictions"]["sha256"] = sha
    from cxrbench.metrics.auroc import per_class_auroc, plain_mean, weighted_mean

    a = per_class_auroc(y, p)
    r6 = lambda x: None if not np.isfinite(x) else round(float(x), 6)  # noqa: E731
    f = rec["validation"]["folds"][0]
    f.update(
        per_class={c: r6(a[i]) for i, c in enumerate(classes)},
        weighted_auroc=r6(weighted_mean(a, y)),
        plain_auroc=r6(plain_mean(a)),
    )
    rec["validation"]["mean_weighted_auroc"], rec["validation"]["mean_plain_auroc"] = (
        f["weighted_auroc"],
        f["plain_auroc"],
    )
    (swapped / "record.json").write_text(json.dumps(seal(rec)))
    with pytest.raises(RecordError, match="fold 0 validation predictions give .* the metadata says"):
        submit(swapped, board, allow_dirty=True)


# ------------------------------------------------------------------------------------ 4. the protocol's test split


def test_rewritten_labels_are_refused(runs, tmp_path):
    def perfect(names, patients, y, p):
        y = np.zeros_like(y)
        y[np.argmax(p, axis=0), np.arange(y.shape[1])] = 1  # every class "perfectly" ranked
        return names, patients, y, p

    forged = _forge(runs["tiny"], tmp_path, perfect)
    assert read_record(forged)["test"]["weighted_mean"]["auroc"] == 1.0
    with pytest.raises(RecordError, match="its test predictions give .* the label .* the metadata says"):
        submit(forged, tmp_path / "board", allow_dirty=True)


def test_images_outside_the_test_split_are_refused(runs, synth_cache, tmp_path):
    from cxrbench.data.dataset import open_dataset, splits_for

    ds = open_dataset(synth_cache / "tables")
    s = splits_for(ds.metadata, ds.layout, SMOKE)
    train_row = int(s.trainval[0])
    lab = ds.metadata.labels(15)[train_row]

    def swapped(names, patients, y, p):
        names[0] = str(ds.metadata.names[train_row])
        patients[0] = ds.metadata.patients[train_row]
        y[0] = lab
        return names, patients, y, p

    with pytest.raises(RecordError, match="not the protocol split: 1 image\\(s\\) not in it"):
        submit(_forge(runs["tiny"], tmp_path, swapped), tmp_path / "board", allow_dirty=True)

    def dropped(names, patients, y, p):
        return names[1:], patients[1:], y[1:], p[1:]

    with pytest.raises(RecordError, match="1 of its image\\(s\\) missing"):
        submit(_forge(runs["tiny"], tmp_path, dropped), tmp_path / "board", allow_dirty=True)

    def other_patient(names, patients, y, p):
        patients[0] = 99999
        return names, patients, y, p

    with pytest.raises(RecordError, match="patient 99999, the metadata says"):
        submit(_forge(runs["tiny"], tmp_path, other_patient), tmp_path / "board", allow_dirty=True)


def test_submit_checks_against_the_named_data(runs, synth_dir, synth300_cache, tmp_path):
    board = tmp_path / "board"
    with pytest.raises(RecordError, match="metadata with sha256 .* pass --data"):
        submit(runs["tiny"], board, allow_dirty=True, data=synth300_cache)
    no_cfg = _copy(runs["tiny"], tmp_path, "moved")
    (no_cfg / "run.json").unlink()
    with pytest.raises(RecordError, match="pass --data"):
        submit(no_cfg, board, allow_dirty=True)
    assert submit(no_cfg, board, allow_dirty=True, data=synth_dir).exists()  # the dataset folder works too
    r = _cli("submit", runs["tiny_attn"], "--leaderboard", board, "--allow-dirty", "--data", synth300_cache)
    assert r.exit_code != 0 and "metadata" in str(r.exception)

    def excluded(rec):
        rec["data"]["excluded_bad_images"] = 1

    with pytest.raises(RecordError, match="left out 1 image\\(s\\).*pass --data with that cache"):
        submit(_reseal(runs["tiny_attn"], tmp_path, excluded), board, allow_dirty=True, data=synth_dir)


# ------------------------------------------------------------------------------------ 5. one bad record


@pytest.mark.parametrize(
    "damage", ["not json", "missing field", "wrong type", "edited", "no predictions", "nan", "wrong folder"]
)
def test_one_bad_record_never_takes_the_board_down(board, damage):
    folder = board / "records" / "smoke@v1"
    victim = sorted(folder.glob("tiny__*.json"))[0]
    rec = json.loads(victim.read_text())
    if damage == "not json":
        victim.write_text("{not json")
    elif damage == "missing field":
        del rec["test"]["n_images"]
        victim.write_text(json.dumps(seal(rec)))
    elif damage == "wrong type":
        rec["test"]["per_class"]["Atelectasis"] = {"auroc": "high", "ci95": "wide"}
        victim.write_text(json.dumps(seal(rec)))
    elif damage == "edited":
        rec["test"]["weighted_mean"]["auroc"] = 0.99
        victim.write_text(json.dumps(rec))
    elif damage == "no predictions":
        victim.with_name(victim.name[:-5] + ".predictions.csv.gz").unlink()
    elif damage == "nan":
        victim.write_text(victim.read_text().replace('"lr": 0.1', '"lr": NaN'))
    else:
        (board / "records" / "smoke@v2").mkdir()
        victim.rename(board / "records" / "smoke@v2" / victim.name)
        victim = board / "records" / "smoke@v2" / victim.name
    from cxrbench.results.leaderboard import scan

    entries, skipped = scan(board)
    assert len(entries) == 2 and [s.path for s in skipped] == [victim]
    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert f"skipped {victim}" in r.stderr
    data = json.loads(r.stdout)
    assert [e["rank"] for e in data["groups"][0]["entries"]] == [1, 2]


# ------------------------------------------------------------------------------------ 6. duplicates by content


def test_duplicates_are_found_by_content(runs, board, tmp_path):
    def again(rec):
        rec["created"] = "2030-01-01T00:00:00Z"

    with pytest.raises(RecordError, match="same result is already on the leaderboard"):
        submit(_reseal(runs["tiny"], tmp_path, again), board, allow_dirty=True)

    def renamed(rec):
        rec["run_id"] = "tiny-copy"
        rec["created"] = "2031-01-01T00:00:00Z"

    with pytest.raises(RecordError, match="same result is already on the leaderboard"):
        submit(_reseal(runs["tiny"], tmp_path, renamed), board, allow_dirty=True)
    assert len(list((board / "records" / "smoke@v1").glob("*.json"))) == 3


# ------------------------------------------------------------------------------------ 7. escaping and names


def test_markdown_board_escapes_html(runs, board):
    r = _cli("leaderboard", "--leaderboard", board, "--write")
    assert r.exit_code == 0, r.output
    md = (board / "LEADERBOARD.md").read_text()
    import html

    assert html.escape(EVIL, quote=False) in md and EVIL not in md and "<script" not in md


def test_markdown_cells_cannot_make_links_or_columns():
    from cxrbench.results.render import md_cell

    cell = md_cell("[x](javascript:alert(1)) a|b `c` *d*\nnext")
    assert cell == "\\[x\\](javascript\\:alert(1)) a\\|b \\`c\\` \\*d\\* next"


@pytest.mark.parametrize("name", ["a,b.png", 'a"b.png', "a b.png", "../x.png", ".x.png", "sub/x.png"])
def test_image_names_that_need_quoting_are_refused_in_the_metadata(tmp_path, name):
    from cxrbench.data.metadata import read_metadata

    csv_path = tmp_path / "Data_Entry_2017_v2020.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position"]
    )
    w.writerow(["00000001_000.png", "No Finding", "0", "1", "58", "M", "PA"])
    w.writerow([name, "No Finding", "0", "2", "58", "M", "PA"])
    csv_path.write_text(buf.getvalue())
    with pytest.raises(InputError, match="line 3: .*Image Index may hold only letters, digits"):
        read_metadata(csv_path)


def test_predictions_round_trip_and_refuse_bad_names(tmp_path):
    path = tmp_path / "p.csv.gz"
    y = np.array([[0, 1], [1, 0]], np.uint8)
    p = np.array([[0.1, 0.9], [0.8, 0.2]])
    write_predictions(path, ["00000001_000.png", "00000002_000.png"], np.array([1, 2]), y, p, ("A", "B"))
    names, pat, y2, p2, classes = astuple(Predictions.read(path))
    assert names == ["00000001_000.png", "00000002_000.png"] and classes == ["A", "B"]
    assert np.array_equal(y, y2) and np.allclose(p, p2)
    write_predictions(path, ['a,"b".png', "00000002_000.png"], np.array([1, 2]), y, p, ("A", "B"))
    with gzip.open(path, "rt") as fh:
        assert '"a,""b"".png"' in fh.read()  # quoted on write: the file stays a two-row table
    with pytest.raises(RecordError, match="is not a ChestX-ray14 file name"):
        Predictions.read(path)


# ------------------------------------------------------------------------------------ 8. a board that is not there


def test_missing_board_is_an_error_and_an_empty_one_is_empty(tmp_path):
    r = _cli("leaderboard", "--leaderboard", tmp_path / "nope")
    assert r.exit_code != 0 and "no leaderboard here" in str(r.exception)
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    from cxrbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["leaderboard", "--leaderboard", str(tmp_path / "nope")])
    assert e.value.code == 2
    r = _cli("leaderboard", "--leaderboard", tmp_path / "empty")
    assert r.exit_code == 0 and "the leaderboard is empty" in r.output


# ------------------------------------------------------------------------------------ 9. exports for machines


NUMBERS = [
    "lr",
    "weighted_auroc",
    "weighted_ci_low",
    "weighted_ci_high",
    "plain_auroc",
    "plain_ci_low",
    "plain_ci_high",
    "test_images",
    "test_patients",
    "params",
    "train_images_per_s",
    "pointing",
    "iobb@0.1",
    "centre_pointing",
    "centre_iobb@0.1",
    "val_weighted_auroc",
]
VS = ["vs_best_diff", "vs_best_ci_low", "vs_best_ci_high", "vs_best_p", "vs_best_resamples", "vs_best_seed"]


def test_csv_and_json_carry_every_figure_as_a_number(board):
    r = _cli("leaderboard", "--leaderboard", board, "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3
    for row in rows:
        for k in NUMBERS:
            float(row[k])  # a plain number, no brackets, no thousands separators
        assert row["test_source"] == "re-derived" and row["timing_source"] == "reported"
        assert row["localization_source"] == "reported"
    for row in rows[1:]:
        for k in VS:
            float(row[k])
        assert row["vs_best_significant"] in ("True", "False")
    assert all(rows[0][k] == "" for k in VS)  # the best entry is compared with nothing
    data = json.loads(_cli("leaderboard", "--leaderboard", board, "--format", "json").stdout)
    entries = data["groups"][0]["entries"]
    for e in entries:
        for k in NUMBERS:
            assert isinstance(e[k], (int, float)) and not isinstance(e[k], bool), k
        assert isinstance(e["per_class"]["Atelectasis"]["ci_low"], (float, type(None)))
    for e in entries[1:]:
        assert all(isinstance(e[k], (int, float)) for k in VS)
    assert data["groups"][0]["bootstrap"] == {"resamples": 200, "seed": 0, "unit": "patient"}


def test_printed_markdown_does_not_claim_to_be_written(board):
    r = _cli("leaderboard", "--leaderboard", board, "--format", "md")
    assert r.exit_code == 0 and "--write" in r.stdout and "Generated by" not in r.stdout
    assert "Printed by `cxrbench leaderboard --format md`" in r.stdout
    assert not (board / "LEADERBOARD.md").exists()


def test_csv_cells_never_become_spreadsheet_formulas(runs, tmp_path):
    def formula(rec):
        rec["model"]["name"] = '=HYPERLINK("http://x")'
        rec["model"]["source"] = {"kind": "file", "path": "x.py", "sha256": "0" * 64}

    board = tmp_path / "board"
    submit(_reseal(runs["tiny"], tmp_path, formula), board, allow_dirty=True)
    rows = list(csv.DictReader(io.StringIO(_cli("leaderboard", "--leaderboard", board, "--format", "csv").stdout)))
    assert rows[0]["model"] == '\'=HYPERLINK("http://x")' and rows[0]["params_source"] == "reported"


# ------------------------------------------------------------------------------------ 10. one p-value


def test_comparisons_use_the_protocols_resamples_and_seed(board):
    r = _cli("leaderboard", "--leaderboard", board, "--resamples", "1000")
    assert r.exit_code != 0 and "No such option" in r.output  # no option makes a second number
    (g,) = rank(load(board))
    assert len(g.comparisons) == 2
    assert all(c["resamples"] == SMOKE.bootstrap and c["seed"] == SMOKE.seed for c in g.comparisons.values())
    data = json.loads(_cli("leaderboard", "--leaderboard", board, "--format", "json").stdout)
    for e in data["groups"][0]["entries"][1:]:
        c = g.comparisons[e["entry"]]
        assert (e["vs_best_p"], e["vs_best_resamples"], e["vs_best_seed"]) == (c["p_value"], 200, 0)


# ------------------------------------------------------------------------------------ 12. board plot and pages


def test_board_plot_legend_covers_no_bar_and_says_na():
    from cxrbench.data.labels import ALL_LABELS
    from cxrbench.results.plots import bars_figure
    from cxrbench.results.reference import REFERENCE_ROWS

    rng = np.random.default_rng(0)
    series = [
        (f"model {i}", {c: None if c == "Hernia" else float(rng.uniform(0.55, 1.0)) for c in ALL_LABELS}, False)
        for i in range(8)
    ]
    series += [(r["name"], r["per_class"], True) for r in REFERENCE_ROWS if r["per_class"]]
    fig, ax, legend, bars = bars_figure(list(ALL_LABELS), series, "t")
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    box = legend.get_window_extent(rend)
    assert not any(box.overlaps(p.get_window_extent(rend)) for c in bars for p in c.patches)
    na = [t for t in ax.texts if t.get_text() == "n/a"]
    assert len(na) == 8 + 2  # Hernia in each run, No Finding in each reported row
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_pages_explain_pointing_and_the_two_means(board, tmp_path):
    r = _cli("leaderboard", "--leaderboard", board, "--write")
    assert r.exit_code == 0
    for text in ((board / "LEADERBOARD.md").read_text(), (board / "index.html").read_text()):
        assert "pointing (centre): the share of NIH boxes" in text
        assert "Weighted AUROC: the mean of the per-class test AUROCs weighted" in text
        assert "plain AUROC: their unweighted mean" in text


def test_board_plots_are_not_written_through_links(board, tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    (board / "plots").mkdir()
    (g,) = rank(load(board))
    from cxrbench.results.render import _stem

    (board / "plots" / f"{_stem(g)}-per-class.png").symlink_to(victim)
    assert _cli("leaderboard", "--leaderboard", board, "--write").exit_code == 0
    assert victim.read_bytes() == b"precious"


# ------------------------------------------------------------------------------------ attacks on the boundary


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema_version": 1, "lr": NaN}', "NaN is not allowed"),
        ('{"schema_version": 1, "lr": Infinity}', "Infinity is not allowed"),
        ('{"schema_version": 1, "lr": 1e999}', "out of range"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ("\xff\xfe", "not UTF-8"),
    ],
)
def test_hostile_json_is_refused_cleanly(runs, tmp_path, text, message):
    crafted = _copy(runs["tiny"], tmp_path, "json")
    (crafted / "record.json").write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    with pytest.raises(RecordError, match=message):
        submit(crafted, tmp_path / "board", allow_dirty=True)


def test_oversized_files_are_refused(runs, tmp_path, monkeypatch):
    crafted = _copy(runs["tiny"], tmp_path, "big")
    monkeypatch.setattr(record_mod, "MAX_RECORD_BYTES", 1000)
    with pytest.raises(RecordError, match="over the limit"):
        read_record(crafted)
    monkeypatch.setattr(record_mod, "MAX_RECORD_BYTES", 32 << 20)
    bomb = gzip.compress(b"image,patient\n" + b"0" * 5_000_000, mtime=0)  # 5 MB from a few KB
    monkeypatch.setattr(record_mod, "MAX_PREDICTIONS_BYTES", 1_000_000)
    with pytest.raises(RecordError, match="inflates to more than"):
        Predictions.parse(bomb, "bomb")


def _csv_bytes(lines):
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["image,patient,y:A,p:A", "00000001_000.png,1,0,nan"], "finite numbers in \\[0, 1\\]"),
        (["image,patient,y:A,p:A", "00000001_000.png,1,0,1.5"], "finite numbers in \\[0, 1\\]"),
        (["image,patient,y:A,p:A", "00000001_000.png,1,0,high"], "must be numbers"),
        (["image,patient,y:A,p:A", "00000001_000.png,1,2,0.5"], "must be 0 or 1"),
        (["image,patient,y:A,p:A", "00000001_000.png,x,0,0.5"], "whole numbers"),
        (["image,patient,y:A,p:A", "00000001_000.png,1,0,0.5", "00000001_000.png,1,1,0.5"], "listed twice"),
        (["image,patient,y:A,y:B,p:B,p:A", "00000001_000.png,1,0,1,0.5,0.5"], "same classes in the same order"),
        (["image,patient,y:A,p:A,extra", "00000001_000.png,1,0,0.5,1"], "columns must be"),
        (["image,patient,y:A,p:A"], "no predictions"),
        (["image,patient,y:A,p:A", '"00000001_000.png,1,0,0.5'], "not a readable predictions CSV|not a ChestX"),
    ],
)
def test_malformed_predictions_are_refused(lines, message):
    with pytest.raises(RecordError, match=message):
        Predictions.parse(_csv_bytes(lines), "preds")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["test"]["per_class"]["Atelectasis"].__setitem__("auroc", "0.9"), "has type str"),
        (lambda r: r["test"].__setitem__("per_class", []), "test.per_class has type list"),
        (lambda r: r.__setitem__("lr", True), "field lr has type bool"),
        (lambda r: r["model"].__setitem__("name", "\x1b[2Jtiny"), "control character"),
        (lambda r: r["environment"].__setitem__("bitwise_reproducible", "yes"), "has type str"),
        (lambda r: r["validation"]["folds"][0].__setitem__("predictions", {"path": 3}), "has type int"),
        (lambda r: r["test"]["weighted_mean"].__setitem__("ci95", [0.1]), "has 1 items"),
        (lambda r: r["test"]["weighted_mean"].__setitem__("auroc", 1.5), "outside"),
        (lambda r: r["data"]["classes"].reverse(), "classes are not smoke@v1's 15 classes"),
    ],
)
def test_wrong_types_in_nested_fields_are_refused(runs, tmp_path, edit, message):
    _refused_after_reseal(runs["tiny"], tmp_path, edit, message)


def test_reordered_classes_in_predictions_are_refused(runs, tmp_path):
    crafted = _copy(runs["tiny"], tmp_path, "reordered")
    names, pat, y, p, classes = astuple(Predictions.read(crafted / "predictions.csv.gz"))
    sha = write_predictions(crafted / "predictions.csv.gz", names, pat, y[:, ::-1], p[:, ::-1], tuple(classes[::-1]))
    rec = json.loads((crafted / "record.json").read_text())
    rec["predictions"]["sha256"] = sha
    (crafted / "record.json").write_text(json.dumps(seal(rec)))
    with pytest.raises(RecordError, match="predictions' classes differ from the record's"):
        submit(crafted, tmp_path / "board", allow_dirty=True)


def test_reused_resamples_give_the_same_comparison():
    """The board pairs the resamples drawn when each entry was checked: the same numbers as drawing again,
    whatever the order of the rows."""
    from cxrbench.metrics.auroc import compare, compare_resampled, score_with_resamples

    rng = np.random.default_rng(1)
    y = (rng.random((300, 4)) < 0.2).astype(np.uint8)
    y[:, 3] = 0  # a class with no positive image
    pa, pb, pat = rng.random((300, 4)), rng.random((300, 4)), rng.integers(0, 120, 300)
    perm = rng.permutation(300)
    _, ra = score_with_resamples(y[perm], pa[perm], pat[perm], 200, 5)
    _, rb = score_with_resamples(y, pb, pat, 200, 5)
    assert compare_resampled(y, pa, pb, ra, rb, "weighted", 200, 5) == compare(y, pa, pb, pat, "weighted", 200, 5)


def test_markdown_cells_escape_tags_not_quotes():
    """A Markdown cell escapes what could open a tag or break the table, and leaves quotes readable."""
    from cxrbench.results.render import md_cell

    assert (
        md_cell('the paper\'s "box" <script>x</script> | a -> b')
        == 'the paper\'s "box" &lt;script&gt;x&lt;/script&gt; \\| a -&gt; b'
    )
