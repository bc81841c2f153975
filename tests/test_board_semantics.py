"""Semantic forgery on the board (issue 24, class 3): a record re-sealed with settings the protocol does not allow,
the same predictions filed again under other metadata or another compression, and two submits of one result at
the same moment."""

import gzip
import json
import multiprocessing
import shutil

import numpy as np
import pytest

from cxrbench.errors import RecordError
from cxrbench.results.leaderboard import load, rank, scan, submit
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import seal, write_predictions

PLUGIN_NAME = "semantics_plugin"


@pytest.fixture(scope="module")
def run_dir(synth_cache, tmp_path_factory):
    """One finished smoke run of `tiny` on the phantom cache."""
    from cxrbench.run import RunOptions, run

    out = tmp_path_factory.mktemp("semantics_runs")
    return run(RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")).parent


def _reseal(run_dir, dst, edit):
    """A copy of the run whose record `edit` changed, sealed again (its own hash is right)."""
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("gallery"))
    rec = json.loads((dst / "record.json").read_text())
    edit(rec)
    (dst / "record.json").write_text(json.dumps(seal(rec)))
    return dst


def _refused(run_dir, tmp_path, edit, message):
    with pytest.raises(RecordError, match=message) as e:
        submit(_reseal(run_dir, tmp_path / "forged", edit), tmp_path / "board", allow_dirty=True)
    assert "record.json" in str(e.value)  # the line names the record
    assert not list((tmp_path / "board").glob("records/*/*.json"))


def _plant(filed, stem, rec, predictions=None):
    """A record written straight into the board beside the filed entry `filed`, with that entry's files (or the
    test `predictions` given), as someone with write access to a shared board could."""
    old = filed.name[: -len(".json")]
    for f in filed.parent.glob(f"{old}.*.csv.gz"):
        shutil.copy(f, f.with_name(stem + f.name[len(old) :]))
    if predictions is not None:
        (filed.parent / f"{stem}.predictions.csv.gz").write_bytes(predictions)
    planted = filed.with_name(f"{stem}.json")
    planted.write_text(json.dumps(rec))
    return planted


# ------------------------------------------------------------------------------------ settings vs the protocol


def _lr(rec):
    rec["lr"] = 0.5


def _seed(rec):
    rec["seeds"]["train"] = 7


def _no_seed(rec):
    del rec["seeds"]["train"]


def _split_seed(rec):
    rec["seeds"]["split"] = 3


def _epochs(rec):
    for f in rec["validation"]["folds"]:
        f["history"] = f["history"][:3]


def _extra_epoch(rec):
    for f in rec["validation"]["folds"]:
        f["history"].append(dict(f["history"][-1], epoch=len(f["history"])))


def _pretrained(rec):
    rec["model"]["pretrained"] = True


@pytest.mark.parametrize(
    "edit, message",
    [
        (_lr, r"field lr is 0.5, which is not in smoke@v1's grid \(0.1\)"),
        (_seed, "its run id tiny__smoke@v1__lr0.1__seed0 names seed 0, field seeds.train is 7"),
        (_no_seed, "field seeds.train is None, not a training seed"),
        (_split_seed, "field seeds.split is 3"),
        (_epochs, r"validation.folds\[0\].history holds 3 epoch\(s\), not smoke@v1's 20"),
        (_extra_epoch, r"validation.folds\[0\].history holds 21 epoch\(s\)"),
        (_pretrained, "field model.pretrained is true, smoke@v1 says false, and no deviation declares it"),
    ],
)
def test_settings_that_contradict_the_protocol_are_refused(run_dir, tmp_path, edit, message):
    _refused(run_dir, tmp_path, edit, message)


def test_a_declared_deviation_is_filed_and_shown_marked(run_dir, tmp_path):
    def declared(rec):
        rec["model"]["pretrained"] = True
        rec["deviations"].append("trained from pretrained weights; the protocol trains from scratch (--pretrained)")

    board = tmp_path / "board"
    submit(_reseal(run_dir, tmp_path / "declared", declared), board, allow_dirty=True)
    from cxrbench.results import render

    (g,) = rank(load(board))
    (e,) = g.entries
    assert e.declared == ("pretrained",)
    (row,) = render.rows(g)
    assert row["pretrained"] == "yes (deviation)"


def test_a_forged_setting_planted_on_the_board_is_skipped_when_read(run_dir, tmp_path):
    board = tmp_path / "board"
    target = submit(run_dir, board, allow_dirty=True)
    rec = json.loads(target.read_text())
    rec["lr"] = 0.5
    rec["run_id"] = "planted"
    planted = _plant(target, "planted-00000000", seal(rec))
    entries, skipped = scan(board)
    assert [e.path for e in entries] == [target]
    (s,) = skipped
    assert s.path == planted and "field lr is 0.5" in s.reason


# ------------------------------------------------------------------------------------ duplicates by content


def _rewrite_predictions(dst, how):
    _pr = Predictions.read(dst / "predictions.csv.gz")
    names, patients, y, p, classes = _pr.images, _pr.patients, _pr.labels, _pr.probabilities, _pr.classes
    if how == "shuffled":
        order = np.random.default_rng(0).permutation(len(names))
        names, patients, y, p = [names[i] for i in order], patients[order], y[order], p[order]
    write_predictions(dst / "predictions.csv.gz", names, patients, y, p, tuple(classes))
    raw = (dst / "predictions.csv.gz").read_bytes()
    if how == "regzipped":
        raw = gzip.compress(gzip.decompress(raw), compresslevel=1, mtime=123)
    elif how == "uncompressed":
        raw = gzip.decompress(raw)
    (dst / "predictions.csv.gz").write_bytes(raw)
    return raw


def _copy_of(run_dir, dst, how, plugin=None):
    import hashlib

    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("gallery"))
    raw = _rewrite_predictions(dst, how)
    rec = json.loads((dst / "record.json").read_text())
    rec["run_id"] = f"copy-{how}"
    rec["created"] = "2031-01-01T00:00:00Z"
    rec["predictions"]["sha256"] = hashlib.sha256(raw).hexdigest()
    if plugin is not None:  # another model's name, a plugin whose parameter count is only reported
        rec["model"]["name"] = plugin
        rec["model"]["source"] = {"kind": "plugin", "file": "elsewhere.py"}
    (dst / "record.json").write_text(json.dumps(seal(rec)))
    return dst


@pytest.mark.parametrize("how", ["regzipped", "uncompressed", "shuffled", "renamed-plugin"])
def test_the_same_predictions_are_a_duplicate_whatever_the_record_or_file_says(run_dir, tmp_path, how):
    board = tmp_path / "board"
    submit(run_dir, board, allow_dirty=True)
    plugin = PLUGIN_NAME if how == "renamed-plugin" else None
    copy = _copy_of(run_dir, tmp_path / "copy", "same" if plugin else how, plugin)
    with pytest.raises(RecordError, match="same result is already on the leaderboard") as e:
        submit(copy, board, allow_dirty=True)
    assert "record.json" in str(e.value)
    assert len(list(board.glob("records/*/*.json"))) == 1


def test_changed_predictions_are_not_a_duplicate(run_dir, tmp_path):
    board = tmp_path / "board"
    submit(run_dir, board, allow_dirty=True)
    from tests.board_runs import forge

    def nudged(names, patients, y, p):
        p = p.copy()
        p[0, 0] = 0.5 if p[0, 0] != 0.5 else 0.25
        return names, patients, y, p

    copy = forge(run_dir, tmp_path / "nudged", nudged)
    rec = json.loads((copy / "record.json").read_text())
    rec["run_id"] = "nudged"
    (copy / "record.json").write_text(json.dumps(seal(rec)))
    submit(copy, board, allow_dirty=True)
    assert len(list(board.glob("records/*/*.json"))) == 2


def test_a_duplicate_planted_on_the_board_is_skipped_when_read(run_dir, tmp_path):
    board = tmp_path / "board"
    first = submit(run_dir, board, allow_dirty=True)
    copy = _copy_of(run_dir, tmp_path / "copy", "uncompressed")
    rec = json.loads((copy / "record.json").read_text())
    planted = _plant(first, "copy-uncompressed-11111111", rec, (copy / "predictions.csv.gz").read_bytes())
    entries, skipped = scan(board)
    assert [e.path for e in entries] == [first]  # the earlier one stands
    assert len(skipped) == 1 and skipped[0].path == planted and "a duplicate" in skipped[0].reason


# ------------------------------------------------------------------------------------ one lock for check and write


def _submit_at_barrier(barrier, run, board, queue):
    from cxrbench.errors import CxrbenchError
    from cxrbench.results.leaderboard import submit

    barrier.wait()
    try:
        submit(run, board, allow_dirty=True)
        queue.put("landed")
    except CxrbenchError as e:
        queue.put(f"refused: {e}")


@pytest.mark.slow
def test_simultaneous_submits_of_one_result_land_once(run_dir, tmp_path):
    copies = [run_dir] + [_copy_of(run_dir, tmp_path / f"copy{i}", "regzipped" if i % 2 else "same") for i in (1, 2)]
    board = tmp_path / "board"
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(copies) + 1), ctx.Queue()
    procs = [ctx.Process(target=_submit_at_barrier, args=(barrier, str(c), str(board), queue)) for c in copies]
    for p in procs:
        p.start()
    barrier.wait()  # every process is ready: all are released at once
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results.count("landed") == 1, results
    assert all("already on the leaderboard" in r for r in results if r != "landed"), results
    assert len(list(board.glob("records/*/*.json"))) == 1


def test_the_lock_is_a_regular_file_in_the_board(run_dir, tmp_path):
    board = tmp_path / "board"
    board.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (board / ".submit.lock").symlink_to(outside)
    with pytest.raises(Exception, match="lock file: it is a link"):
        submit(run_dir, board, allow_dirty=True)
    assert outside.read_text() == "keep"
    assert not list(board.glob("records/*/*.json"))
