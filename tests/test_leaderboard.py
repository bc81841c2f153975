import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cxrbench.errors import RecordError
from cxrbench.results.leaderboard import load, rank, submit
from cxrbench.results.record import seal

from . import browser
from .board_runs import filed_board, finished_runs
from .conftest import slow_fixture

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
@slow_fixture
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
    assert all(re.match(r"^[a-z0-9-]+-v\d+-", n) and "-vv" not in n for n in pngs), pngs  # smoke-v1-..., one v
    from PIL import Image

    for n in pngs:
        assert np.asarray(Image.open(board / "plots" / n).convert("L")).std() > 5


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------ views for people


def _width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def _board_text(board, *args, columns="80"):
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), *args], env={"COLUMNS": columns})
    assert r.exit_code == 0, r.output
    return r.stdout


def test_terminal_board_fits_80_columns_one_line_per_entry(board):
    out = _board_text(board)
    assert _width(out) <= 80, out
    g = rank(load(board))[0]
    for e in g.entries:
        w = e.record["test"]["weighted_mean"]
        auroc = f"{w['auroc']:.4f} [{w['ci95'][0]:.4f}, {w['ci95'][1]:.4f}]"
        name = e.record["model"]["name"]
        assert len([line for line in out.splitlines() if name in line and auroc in line]) == 1, out
    # the compact view: rank, model, weighted AUROC with its CI; the rest one option away
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert "weighted AUROC [95% CI]" in header and "plain AUROC" not in header and "train images/s" not in out
    # the note about the plugin model is printed once, under the table, and marked in its row
    assert out.count("a plugin model (not built into cxrbench)") == 1
    # no paragraph about a column that is not shown (pointing, the submitter's dagger)
    assert "pointing (centre):" not in out and "as reported by the submitter" not in out
    shown = _board_text(board, "--show", "plain,params")
    assert _width(shown) <= 80 and "plain AUROC [95% CI]" in shown
    wide = _board_text(board, "--wide")
    assert "bitwise reproducible" in wide and "as reported by the submitter" in wide  # as wide as it needs
    # wide enough, nothing is left out and every line stays within the width
    roomy = _board_text(board, "--show", "plain,params", columns="160")
    assert _width(roomy) <= 160 and "left out" not in roomy and "entry" in roomy


def test_unknown_show_column_is_refused(board):
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--show", "plian"])
    assert r.exit_code != 0 and "no such column" in str(r.exception) and "plain" in str(r.exception)


@pytest.mark.slow
def test_terminal_board_in_a_pseudo_terminal_of_80_columns(board):
    """A real terminal: its size is the width (no COLUMNS)."""
    import re
    import sys

    from tests.terminal import run_in_pty

    args = [sys.executable, "-m", "cxrbench", "leaderboard", "--leaderboard", str(board)]
    rc, out = run_in_pty(args, columns=80, rows=50, timeout=120)
    assert rc == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode()).replace("\r", "")
    assert _width(text) <= 80, text
    assert "tiny_attn" in text and "weighted AUROC [95% CI]" in text


def test_p_values_are_never_written_as_zero(board):
    from cxrbench.results.render import p_text

    assert p_text(0.0, 200) == "p<0.01" and p_text(0.0, 10_000) == "p<0.001"
    assert p_text(0.0004, 10_000) == "p<0.001" and p_text(0.0123, 1000) == "p=0.012"
    for args in ([], ["--wide"], ["--format", "md"], ["--format", "csv"], ["--format", "json"]):
        assert "p=0.000" not in _board_text(board, *args)
    from cxrbench.cli import cli

    CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--write"])
    for f in ("LEADERBOARD.md", "index.html"):
        assert "p=0.000" not in (board / f).read_text()


def test_empty_or_missing_board_names_its_folder(tmp_path):
    from cxrbench.cli import cli

    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(tmp_path / "empty")])
    assert r.exit_code == 0 and str((tmp_path / "empty").resolve()) in r.stderr
    assert "--leaderboard PATH" in r.stderr
    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "--leaderboard PATH" in str(r.exception)


def test_every_other_table_fits_80_columns(synth_cache, synth_dir):
    from cxrbench.cli import cli

    for args in (
        ["models"],
        ["protocols"],
        ["cache", "info", str(synth_cache)],
        ["splits", "--data-dir", str(synth_dir), "--protocol", "smoke"],
    ):
        r = CliRunner().invoke(cli, args, env={"COLUMNS": "80"})
        assert r.exit_code == 0, (args, r.output)
        assert r.stdout.strip() and _width(r.stdout) <= 80, (args, r.stdout)


def test_evaluation_tables_fit_80_columns(runs, tmp_path):
    """`cxrbench evaluate RUN` (its operating points, calibration, subgroups and underdiagnosis tables and the
    prose around them) piped with COLUMNS=80: every line within 80 columns, every class named."""
    from cxrbench.cli import cli

    args = ["evaluate", str(runs["tiny"]), "--no-pictures", "--out", str(tmp_path / "ev")]
    r = CliRunner().invoke(cli, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() and _width(r.stdout) <= 80, r.stdout
    assert "Operating points" in r.stdout and "Calibration" in r.stdout


@pytest.mark.slow
def test_html_board_rows_are_one_line_of_text_tall(board, tmp_path):
    """In Chromium at 1400 px, every entry row is one line of text tall: notes are markers, each note once below
    the table."""
    from cxrbench.cli import cli

    r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), "--write"])
    assert r.exit_code == 0, r.output
    measure = """<script>
window.addEventListener("load", function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.entry"));
  var lines = rows.map(function (tr) {
    var td = tr.querySelector("td"), cs = getComputedStyle(td);
    var inner = td.getBoundingClientRect().height - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
    return Math.round(Math.max.apply(null, Array.prototype.map.call(tr.cells, function (c) {
      var s = getComputedStyle(c);
      return (c.getBoundingClientRect().height - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom)) /
        parseFloat(s.lineHeight === "normal" ? parseFloat(s.fontSize) * 1.2 : s.lineHeight);
    })) * 100) / 100;
  });
  document.body.setAttribute("data-row-lines", lines.join(","));
});
</script></body>"""
    page = board / "measure.html"
    page.write_text((board / "index.html").read_text().replace("</body>", measure))
    dom, errors = browser.load(page, tmp_path / "shot.png", size="1400,1000")
    assert errors == []
    lines = [float(x) for x in dom.split('data-row-lines="')[1].split('"')[0].split(",")]
    assert len(lines) == 3 and all(x < 1.5 for x in lines), lines
    assert dom.count("a plugin model (not built into cxrbench)") == 1


# ------------------------------------------------------------------------------------ untrusted text in views

BIDI = "\u202e\u2066\u2067\u2068\u2069\u200b"


def test_markdown_makes_no_link_of_urls_mail_addresses_or_entry_ids():
    import re

    from cxrbench.results.render import md_cell

    cell = md_cell("see http://evil.example/x, www.evil.example, me@evil.example, tiny__smoke@v1__lr0.1__seed0-1a")
    # what GFM and markdown-it's linkify turn into links by themselves: a scheme with //, www., an address
    assert not re.search(r"[a-z]+://|www\.|[\w.+-]@[\w-]", cell), cell
    assert "http\\://" in cell and "www\\." in cell and "me\\@evil" in cell and "smoke\\@v1" in cell
    assert md_cell("mailto:me") == "mailto\\:me" and md_cell("Adjudicated labels: x") == "Adjudicated labels: x"


def test_bidi_and_control_characters_are_shown_not_obeyed(board, capsys):
    from cxrbench.console import Display, plain
    from cxrbench.results.render import md_cell, to_html

    assert plain("a\u202eb\x1b[31mc") == "a<U+202E>b<U+001B>[31mc"
    for ch in BIDI:
        assert ch not in md_cell(f"x{ch}y") and f"U+{ord(ch):04X}" in md_cell(f"x{ch}y")
    d = Display()
    d.table(["model"], [[f"evil{BIDI}\x1b[2J"]])
    d.text(f"note {BIDI}")
    out = capsys.readouterr().out
    assert not any(ch in out for ch in BIDI + "\x1b") and "<U+202E>" in out
    g = rank(load(board))[0]
    g.entries[0].record["model"]["name"] = f"evil{BIDI}"
    g.entries[0].record["deviations"] = [f"dev{BIDI}"]
    page = to_html([g], {}, board / "x.html")
    assert not any(ch in page for ch in BIDI) and "&lt;U+202E&gt;" in page


def test_a_name_with_mathtext_is_drawn_as_plain_text(board, tmp_path):
    """`evil$\\frac{$` is a model name like any other: the plots and the pages are made, not a traceback."""
    from cxrbench.results import render

    name = "evil$\\frac{$"
    groups = rank(load(board))
    for e in groups[0].entries:
        e.record["model"]["name"] = name
    figs = render.plots(groups, tmp_path / "plots")
    assert all(p.stat().st_size > 1000 for ps in figs.values() for p in ps)
    page = render.to_html(groups, figs, tmp_path / "index.html")
    assert "evil$\\frac{$" in page
    assert "evil$\\\\frac{$" in render.to_markdown(groups)  # a backslash escaped, the dollars harmless
