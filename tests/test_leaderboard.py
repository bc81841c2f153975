import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cxrbench.errors import RecordError
from cxrbench.results.leaderboard import load, rank, submit
from cxrbench.results.record import seal

from . import browser
from .board_runs import filed_board, finished_runs

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs(synth_cache, tmp_path_factory):
    """Three finished smoke runs on the phantom cache: tiny, tiny_attn and a plugin with a hostile name."""
    return finished_runs(synth_cache, tmp_path_factory.mktemp("lb_runs"), EVIL)


@pytest.fixture()
def board(runs, tmp_path):
    return filed_board(runs, tmp_path / "board")


def _reseal(run_dir, tmp_path, edit):
    copy = tmp_path / f"{edit.__name__}-{run_dir.name}"
    shutil.copytree(run_dir, copy)
    rec = json.loads((copy / "record.json").read_text())
    edit(rec)
    (copy / "record.json").write_text(json.dumps(seal(rec)))
    return copy


def test_submit_files_append_only(runs, board):
    entries = load(board)
    assert len(entries) == 3
    files = sorted(p.name for p in (board / "records" / "smoke@v1").iterdir())
    assert sum(f.endswith(".predictions.csv.gz") for f in files) == 3
    with pytest.raises(RecordError, match="already on the leaderboard"):
        submit(runs["tiny"], board, allow_dirty=True)


def test_tampered_and_mixed_records_are_refused(runs, board, tmp_path):
    def better(rec):
        rec["test"]["weighted_mean"]["auroc"] = 0.999

    with pytest.raises(RecordError, match="weighted_mean .* does not follow from its predictions"):
        submit(_reseal(runs["tiny"], tmp_path, better), board, allow_dirty=True)

    def per_class(rec):
        rec["test"]["per_class"]["Effusion"]["auroc"] = 0.5

    with pytest.raises(RecordError, match="test AUROC of Effusion .* does not follow"):
        submit(_reseal(runs["tiny"], tmp_path, per_class), board, allow_dirty=True)

    def mixed(rec):
        rec["protocol"]["settings"]["epochs"] = 3

    with pytest.raises(RecordError, match="protocol settings do not match smoke@v1"):
        submit(_reseal(runs["tiny_attn"], tmp_path, mixed), board, allow_dirty=True)

    def dirty(rec):
        rec["code"]["git_dirty"] = True

    with pytest.raises(RecordError, match="modified \\(dirty\\) git tree.*--allow-dirty"):
        submit(_reseal(runs["tiny"], tmp_path, dirty), tmp_path / "other")

    edited = tmp_path / "plain-edit"
    shutil.copytree(runs["tiny"], edited)
    rec = json.loads((edited / "record.json").read_text())
    rec["lr"] = 0.5
    (edited / "record.json").write_text(json.dumps(rec))
    with pytest.raises(RecordError, match="record_sha256 does not match"):
        submit(edited, board, allow_dirty=True)


def test_ranking_and_paired_comparisons(board):
    (g,) = rank(load(board))
    w = [e.weighted for e in g.entries]
    assert w == sorted(w, reverse=True) and g.protocol == "smoke@v1"
    assert set(g.comparisons) == {e.id for e in g.entries[1:]}
    for c in g.comparisons.values():
        assert c["diff"] <= 1e-9 and c["ci95"][0] <= c["diff"] <= c["ci95"][1]


def test_groups_never_mix_data(board, runs, tmp_path):
    def other_split(rec):
        rec["data"]["split_hashes"]["test"] = "0" * 16

    other = _reseal(runs["tiny"], tmp_path, other_split)
    # submit checks the split against the run's data and refuses it ...
    with pytest.raises(RecordError, match="test split hash differs"):
        submit(other, board, allow_dirty=True)
    # ... a record from another split put on the board by hand is ranked in a group of its own
    folder = board / "records" / "smoke@v1"
    shutil.copy(other / "record.json", folder / "other-split.json")
    shutil.copy(other / "predictions.csv.gz", folder / "other-split.predictions.csv.gz")
    for k, fold in enumerate(json.loads((other / "record.json").read_text())["validation"]["folds"]):
        if "predictions" in fold:  # each fold's validation predictions, filed as submit files them
            shutil.copy(other / fold["predictions"]["path"], folder / f"other-split.fold{k}-val.csv.gz")
    groups = rank(load(board))
    assert sorted(len(g.entries) for g in groups) == [1, 3]


def test_cli_formats_and_generated_markdown(board):
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--format", "json"])
    data = json.loads(r.output)
    assert [e["rank"] for e in data["groups"][0]["entries"]] == [1, 2, 3]
    assert any("CheXNet" in x["name"] for x in data["reported_elsewhere"])
    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--format", "csv"])
    assert r.output.splitlines()[0].startswith("protocol,data,rank,entry,run_id,model,")
    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--write"])
    assert r.exit_code == 0, r.output
    md = (board / "LEADERBOARD.md").read_text()
    assert "do not edit by hand" in md and "tiny_attn" in md and "Reported elsewhere (not ranked)" in md
    assert "(reported)" not in md.split("Reported elsewhere")[0]  # reported rows are never ranked
    pngs = sorted(p.name for p in (board / "plots").iterdir())
    assert len(pngs) == 2 and all(n.endswith(".png") for n in pngs)
    from PIL import Image

    for n in pngs:
        assert np.asarray(Image.open(board / "plots" / n).convert("L")).std() > 5


def test_html_leaderboard_in_chromium(board, tmp_path):
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--write"])
    assert r.exit_code == 0, r.output
    page = board / "index.html"
    shot = tmp_path / "board.png"
    dom, errors = browser.load(page, shot)
    assert errors == []
    assert 'data-images="ok"' in dom
    assert dom.count('<tr class="entry">') == 3 and "tiny_attn" in dom
    # the hostile model name is text, not markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and EVIL not in dom
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[1] == 1300 and img.std() > 10


def test_gallery_in_chromium(runs, tmp_path):
    from cxrbench.cli import cli

    out = tmp_path / "gallery"
    r = CliRunner().invoke(cli, ["gallery", str(runs["tiny_attn"]), "--n", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    dom, errors = browser.load(out / "index.html", tmp_path / "gallery.png")
    assert errors == [] and 'data-images="ok"' in dom
    assert dom.count('class="card"') == 4 and "attention a1" in dom and "Grad-CAM on features.b3" in dom
    r = CliRunner().invoke(
        cli,
        [
            "gallery",
            str(runs[EVIL]),
            "--n",
            "2",
            "--out",
            str(tmp_path / "evil"),
            "--plugin",
            str(runs[EVIL].parent / "evil.py"),
        ],
    )
    assert r.exit_code == 0, r.output
    dom, errors = browser.load(tmp_path / "evil" / "index.html")
    assert errors == [] and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and EVIL not in dom


def test_console_error_detection_catches_errors(tmp_path):
    """The check above can fail: a page that throws is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _, errors = browser.load(page)
    assert errors and "undefinedFunction" in " ".join(errors)
