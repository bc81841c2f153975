"""The leaderboard's adjudicated columns (issue 16 item 4): `cxrbench leaderboard --adjudicated FILE` shows each
entry's coverage of the adjudicated test images and its AUROCs against them (computed as `cxrbench rescore`
computes them), ranks only entries that cover the same images, refuses a bad file with its line, and leaves
the board without the flag as it was."""

import csv
import io
import json
import shutil
from dataclasses import astuple

import pytest
from click.testing import CliRunner

from cxrbench.cli import cli, main
from cxrbench.data.labels import class_names
from cxrbench.errors import InputError
from cxrbench.protocols import get_protocol
from cxrbench.results import leaderboard as board_mod
from cxrbench.results.adjudicated import ADJUDICATED_FINDINGS, COLUMNS, DEFAULT_MAPPING
from cxrbench.results.leaderboard import submit
from cxrbench.results.predictions import Predictions

from .board_runs import filed_board, finished_runs, forge
from .conftest import NIH, slow_fixture

HOSTILE = '<img src=x onerror=alert("rescored")>'  # a name of this module's own: registrations outlive a module
SAMPLE = NIH / "adjudicated" / "google2019_sample.csv.gz"
SMOKE = get_protocol("smoke@v1")
CLASSES = list(class_names(15))
SCORED = [f for f in ADJUDICATED_FINDINGS if DEFAULT_MAPPING.findings[f]]


@pytest.fixture(scope="module")
@slow_fixture
def runs(synth_cache, tmp_path_factory):
    return finished_runs(synth_cache, tmp_path_factory.mktemp("adj_runs"), HOSTILE)


@pytest.fixture()
def board(runs, tmp_path):
    return filed_board(runs, tmp_path / "board")


def _test_images(run_dir):
    names, patients, *_ = astuple(Predictions.read(run_dir / "predictions.csv.gz"))
    return list(names), patients


def _write(path, rows):
    """An adjudicated file in the distributed format; rows are (name, patient, {finding: bool}, set)."""
    lines = [",".join(COLUMNS)]
    for name, pid, labels, which in rows:
        vals = ",".join("YES" if labels[f] else "NO" for f in ADJUDICATED_FINDINGS)
        lines.append(f"{name},No Finding,0,{pid},50,M,PA,2500,2048,0.168,0.168,{vals},{which}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _labels(i: int) -> dict[str, bool]:
    """Both label values for every finding among any two neighbouring rows."""
    return {f: (i + k) % 2 == 0 for k, f in enumerate(ADJUDICATED_FINDINGS)}


@pytest.fixture()
def adjudicated(runs, synth_cache, tmp_path):
    """Generated rows naming the phantom test images but the last three, a phantom image outside the test split
    (no entry covers it) and a val row."""
    from cxrbench.data.dataset import open_dataset

    names, patients = _test_images(runs["tiny"])
    md = open_dataset(synth_cache / "tables").metadata
    outside = [(str(n), int(p)) for n, p in zip(md.names, md.patients) if str(n) not in set(names)]
    rows = [(n, int(p), _labels(i), "test") for i, (n, p) in enumerate(zip(names[:-3], patients))]
    rows += [(*outside[0], _labels(0), "test"), (*outside[1], _labels(1), "val")]
    return _write(tmp_path / "adjudicated.csv", rows)


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _json(board, *extra):
    r = _cli("leaderboard", "--leaderboard", board, "--format", "json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _file_without_data_check(run_dir, board, monkeypatch):
    """File a run whose predictions are not the protocol's whole test split (as a board filed before the data
    check, or from a cache that dropped images, would hold it)."""
    with monkeypatch.context() as m:
        m.setattr(board_mod, "check_data", lambda *a, **k: None)
        return submit(run_dir, board, allow_dirty=True)


def _forge(run_dir, tmp_path, name, keep, perfect=None):
    """A copy of the run with only the test predictions `keep` (names -> bool), scored again and sealed; with
    `perfect` (name -> labels), the Pneumothorax score is the adjudicated label."""

    def edit(names, patients, y, p):
        rows = [i for i, n in enumerate(names) if keep(n)]
        names, patients, y, p = [names[i] for i in rows], patients[rows], y[rows], p[rows]
        for i, n in enumerate(names):
            if perfect is not None and n in perfect:
                p[i, CLASSES.index("Pneumothorax")] = 0.99 if perfect[n]["Pneumothorax"] else 0.01
        return names, patients, y, p

    return forge(run_dir, tmp_path / name, edit)


# ------------------------------------------------------------------------------------ the columns


def test_columns_coverage_and_figures_as_rescore_computes_them(runs, board, adjudicated):
    names, _ = _test_images(runs["tiny"])
    n = len(names) - 3
    r = _cli("leaderboard", "--leaderboard", board, "--format", "md", "--adjudicated", adjudicated)
    assert r.exit_code == 0, r.output
    md = r.stdout
    header = next(line for line in md.splitlines() if line.startswith("| rank |"))
    for col in (
        "adjudicated images",
        "adj. Pneumothorax AUROC [95% CI]",
        "adj. Nodule or mass AUROC [95% CI]",
        "adj. Airspace opacity AUROC [95% CI]",
        "adj. Fracture AUROC [95% CI]",
        "adj. mean AUROC",
        "adj. rank",
    ):
        assert f" {col} |" in header
    entry_rows = [line for line in md.splitlines() if f"| {n} of {n + 1} |" in line]
    assert len(entry_rows) == 3
    for line in entry_rows:
        assert "| n/a |" in line  # fracture: no class, never invented
    # the mapping's id and hash are printed with the board, as rescore prints them
    m = DEFAULT_MAPPING
    key = m.key.replace("@", "\\@")  # Markdown: an '@' is escaped, so that no renderer makes it a mailto link
    assert f"mapping {key} (hash {m.content_hash}): Fracture &lt;- (no ChestX-ray14 class" in md
    # the figures are rescore's, from the filed predictions, with the protocol's resamples and seed
    from cxrbench.results.rescore import rescore_run

    mine, _ = rescore_run(runs["tiny"], adjudicated)
    data = _json(board, "--adjudicated", adjudicated)
    (tiny,) = [e for e in data["groups"][0]["entries"] if e["model"] == "tiny"]
    assert tiny["adj_images"] == n and tiny["adj_set_images"] == n + 1
    for f in SCORED:
        want = mine["findings"][f]["auroc_adjudicated"]
        got = [tiny[f"adj_{f.lower().replace(' ', '_')}_{k}"] for k in ("auroc", "ci_low", "ci_high")]
        assert got == [want["auroc"], *want["ci95"]] and want["auroc"] is not None
    assert mine["bootstrap"]["resamples"] == SMOKE.bootstrap
    assert data["adjudicated"]["mapping"]["key"] == m.key and data["adjudicated"]["mapping"]["hash"] == m.content_hash
    assert data["adjudicated"]["sha256"] == mine["adjudicated_file"]["sha256"]
    # the terminal table says the same
    r = _cli("leaderboard", "--leaderboard", board, "--adjudicated", adjudicated)
    assert r.exit_code == 0 and "adj. rank" in r.stdout and f"hash {m.content_hash}" in r.stdout


def test_the_real_sample_covers_no_phantom_entry(board):
    """The 60 test images of the real sample lie in the official test list, not in a phantom run's test set:
    every entry shows coverage 0 of 60, no AUROC and no rank."""
    data = _json(board, "--adjudicated", SAMPLE)
    for e in data["groups"][0]["entries"]:
        assert (e["adj_images"], e["adj_set_images"], e["adj_rank"], e["adj_mean_auroc"]) == (0, 60, None, None)
        assert all(e[f"adj_{f.lower().replace(' ', '_')}_auroc"] is None for f in ADJUDICATED_FINDINGS)
    r = _cli("leaderboard", "--leaderboard", board, "--format", "md", "--adjudicated", SAMPLE)
    rows = [line for line in r.stdout.splitlines() if "| 0 of 60 |" in line]
    assert len(rows) == 3 and all(line.endswith("| n/a | — | — | — | — | — |") for line in rows)


def test_ranked_only_among_entries_that_cover_the_same_images(runs, board, adjudicated, tmp_path, monkeypatch):
    names, _ = _test_images(runs["tiny"])
    with open(adjudicated) as fh:
        truth = {row["Image Index"]: {f: row[f] == "YES" for f in ADJUDICATED_FINDINGS} for row in csv.DictReader(fh)}
    dropped = set(names[:2])
    fewer = _forge(runs["tiny"], tmp_path, "fewer", lambda n: n not in dropped, perfect=truth)
    none = _forge(runs["tiny_attn"], tmp_path, "none", lambda n: n not in truth)
    _file_without_data_check(fewer, board, monkeypatch)
    _file_without_data_check(none, board, monkeypatch)
    (g,) = _json(board, "--adjudicated", adjudicated)["groups"]
    by_images = {}
    for e in g["entries"]:
        by_images.setdefault(e["adj_images"], []).append(e)
    full, few, zero = by_images[len(names) - 3], by_images[len(names) - 5], by_images[0]
    assert len(full) == 3 and len(few) == 1 and len(zero) == 1
    # the entry with fewer images scores best (its pneumothorax score is the truth), yet is not ranked above them
    assert few[0]["adj_pneumothorax_auroc"] == 1.0
    assert few[0]["adj_mean_auroc"] > max(e["adj_mean_auroc"] for e in full)
    assert (few[0]["adj_rank"], few[0]["adj_rank_of"]) == (1, 1)
    assert sorted((e["adj_rank"], e["adj_rank_of"]) for e in full) == [(1, 3), (2, 3), (3, 3)]
    best = min(full, key=lambda e: e["adj_rank"])
    assert best["adj_mean_auroc"] == max(e["adj_mean_auroc"] for e in full)
    assert len({e["adj_cohort"] for e in full}) == 1 and few[0]["adj_cohort"] != full[0]["adj_cohort"]
    assert zero[0]["adj_rank"] is None and zero[0]["adj_cohort"] is None and zero[0]["adj_mean_auroc"] is None
    md = _cli("leaderboard", "--leaderboard", board, "--format", "md", "--adjudicated", adjudicated).stdout
    assert "only among entries of the same protocol group that cover exactly the same adjudicated images" in md
    assert "| 1 of 1 |" in md and "| 3 of 3 |" in md


# ------------------------------------------------------------------------------------ untrusted file


def test_a_bad_file_is_one_error_naming_the_line(runs, board, adjudicated, tmp_path):
    assert _cli("leaderboard", "--leaderboard", board, "--write").exit_code == 0
    before = {p: p.read_bytes() for p in (board / "LEADERBOARD.md", board / "index.html")}
    lines = adjudicated.read_text().splitlines()
    cells = lines[2].split(",")
    cells[COLUMNS.index("Pneumothorax")] = "MAYBE"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines[:2], ",".join(cells), *lines[3:]]) + "\n")
    r = _cli("leaderboard", "--leaderboard", board, "--write", "--adjudicated", bad)
    assert isinstance(r.exception, InputError)
    assert str(r.exception).startswith(f"{bad}, line 3: ") and "expected YES or NO" in str(r.exception)
    with pytest.raises(SystemExit) as e:
        main(["leaderboard", "--leaderboard", str(board), "--adjudicated", str(bad)])
    assert e.value.code == 2
    assert {p: p.read_bytes() for p in before} == before  # nothing written was lost or changed
    # a row whose patient differs from the one a filed entry's checked predictions give: the line and the entry
    names, patients = _test_images(runs["tiny"])
    other = _write(
        tmp_path / "other.csv",
        [(names[0], int(patients[0]), _labels(0), "test"), (names[1], int(patients[1]) + 1, _labels(1), "test")],
    )
    r = _cli("leaderboard", "--leaderboard", board, "--adjudicated", other)
    assert isinstance(r.exception, InputError)
    assert str(r.exception).startswith(f"{other}, line 3: image {names[1]}: Patient ID {int(patients[1]) + 1}")
    assert "leaderboard entry" in str(r.exception)
    # --mapping only with --adjudicated; a bad mapping is refused by its reader
    r = _cli("leaderboard", "--leaderboard", board, "--mapping", other)
    assert r.exit_code != 0 and "--adjudicated" in str(r.exception)
    (tmp_path / "m.json").write_text('{"id": "x", "version": 1, "findings": {"Fracture": ["Bones"]}}')
    r = _cli("leaderboard", "--leaderboard", board, "--adjudicated", adjudicated, "--mapping", tmp_path / "m.json")
    assert isinstance(r.exception, InputError) and "m.json" in str(r.exception)


def test_a_users_mapping_is_used_and_printed(board, adjudicated, tmp_path):
    mapping = tmp_path / "mine.json"
    mapping.write_text(
        json.dumps(
            {
                "id": "mine",
                "version": 3,
                "findings": {
                    "Fracture": [],
                    "Pneumothorax": [],
                    "Airspace opacity": ["Consolidation"],
                    "Nodule or mass": ["Nodule"],
                },
            }
        )
    )
    data = _json(board, "--adjudicated", adjudicated, "--mapping", mapping)
    assert data["adjudicated"]["mapping"]["key"] == "mine@v3"
    for e in data["groups"][0]["entries"]:
        assert e["adj_mapping"] == "mine@v3" and e["adj_pneumothorax_auroc"] is None  # no class: not scored
        assert e["adj_airspace_opacity_auroc"] is not None


# ------------------------------------------------------------------------------------ exports and the plain board


def test_csv_and_json_carry_each_adjudicated_figure_as_a_number(board, adjudicated):
    r = _cli("leaderboard", "--leaderboard", board, "--format", "csv", "--adjudicated", adjudicated)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3
    for row in rows:
        for f in SCORED:
            s = f.lower().replace(" ", "_")
            float(row[f"adj_{s}_auroc"])  # a plain number
            int(row[f"adj_{s}_positives"])
            for k in ("ci_low", "ci_high"):  # a number, or empty where a bootstrap CI is undefined
                assert row[f"adj_{s}_{k}"] == "" or 0 <= float(row[f"adj_{s}_{k}"]) <= 1
        float(row["adj_pneumothorax_ci_low"]), float(row["adj_pneumothorax_ci_high"])
        for k in ("adj_images", "adj_set_images", "adj_patients", "adj_rank", "adj_rank_of"):
            int(row[k])
        float(row["adj_mean_auroc"])
        assert row["adj_fracture_auroc"] == "" and row["adj_mapping"] == DEFAULT_MAPPING.key
        assert row["adj_mapping_hash"] == DEFAULT_MAPPING.content_hash
    data = _json(board, "--adjudicated", adjudicated)
    for e in data["groups"][0]["entries"]:
        for f in SCORED:
            v = e[f"adj_{f.lower().replace(' ', '_')}_auroc"]
            assert isinstance(v, float) and 0 <= v <= 1
        assert isinstance(e["adj_images"], int) and isinstance(e["adj_rank"], int)


@pytest.mark.slow
def test_the_board_without_the_flag_is_unchanged(board, adjudicated, tmp_path):
    """Without --adjudicated every output is byte for byte what it was; with it, the board's own bytes stay and
    the adjudicated columns, fields and notes are only added."""

    def out(fmt, *extra):
        r = _cli("leaderboard", "--leaderboard", board, "--format", fmt, *extra)
        assert r.exit_code == 0, r.output
        return r.stdout

    plain = {fmt: out(fmt) for fmt in ("md", "csv", "json")}
    adj = {fmt: out(fmt, "--adjudicated", adjudicated) for fmt in ("md", "csv", "json")}
    assert all(plain[f] != adj[f] for f in plain)
    # CSV: every line of the plain board starts every line of the other, which only adds fields
    for a, b in zip(plain["csv"].splitlines(), adj["csv"].splitlines(), strict=True):
        assert b.startswith(a + ",")
    assert not any(k.startswith("adj_") for k in plain["csv"].splitlines()[0].split(","))
    # JSON: the other without its adjudicated parts is the plain board, byte for byte
    data = json.loads(adj["json"])
    assert data.pop("adjudicated")["rows"] == len(adjudicated.read_text().splitlines()) - 1
    for g in data["groups"]:
        g["entries"] = [{k: v for k, v in e.items() if not k.startswith("adj_")} for e in g["entries"]]
    assert json.dumps(data, indent=2, allow_nan=False) + "\n" == plain["json"]
    # Markdown: the adjudicated notes (each with its blank line) added, table rows that only gain cells
    lines = adj["md"].splitlines()
    notes = [
        i for i, x in enumerate(lines) if x.startswith(("Adjudicated labels:", "adjudicated images:", "adj. rank:"))
    ]
    assert len(notes) == 3 and all(lines[i + 1] == "" for i in notes)
    assert lines[notes[0]].startswith("Adjudicated labels: adjudicated.csv")
    kept = [x for i, x in enumerate(lines) if i not in {j for k in notes for j in (k, k + 1)}]
    for a, b in zip(plain["md"].splitlines(), kept, strict=True):
        assert a == b or (a.startswith("|") and b.startswith(a[:-1]) and len(b) > len(a))
    # --write: the files without the flag are the files as they were
    assert _cli("leaderboard", "--leaderboard", board, "--write").exit_code == 0
    first = {p: (board / p).read_bytes() for p in ("LEADERBOARD.md", "index.html")}
    assert _cli("leaderboard", "--leaderboard", board, "--write", "--adjudicated", adjudicated).exit_code == 0
    assert all((board / p).read_bytes() != b for p, b in first.items())
    assert _cli("leaderboard", "--leaderboard", board, "--write").exit_code == 0
    assert {p: (board / p).read_bytes() for p in first} == first


def test_markdown_and_html_escape_the_adjudicated_parts(board, adjudicated, tmp_path):
    hostile = tmp_path / "<b>x|y.csv"
    shutil.copy(adjudicated, hostile)
    r = _cli("leaderboard", "--leaderboard", board, "--format", "md", "--adjudicated", hostile)
    assert r.exit_code == 0, r.output
    assert "<b>" not in r.stdout and "&lt;b&gt;x\\|y.csv" in r.stdout
    assert HOSTILE not in r.stdout and "&lt;img src=x" in r.stdout
    page = tmp_path / "board.html"
    r = _cli("leaderboard", "--leaderboard", board, "--format", "html", "--out", page, "--adjudicated", hostile)
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert "<b>x" not in text and "&lt;b&gt;x|y.csv" in text and "adj. rank" in text
    assert HOSTILE not in text


def test_help_says_cis_and_coverage():
    r = _cli("leaderboard", "--help")
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "--adjudicated" in text and "95% CI" in text and "patient bootstrap" in text
    assert "cover the same images" in text and "gzipped" in text
