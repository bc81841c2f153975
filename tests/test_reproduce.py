"""The paper's study in miniature, end to end, and its report."""

import json

import pytest
from click.testing import CliRunner

from cxrbench.cli import cli
from cxrbench.data.splits import PAPER_TABLE1
from cxrbench.studies.paper import MINI, PAPER, needed

from . import browser


def test_runs_the_full_study_needs():
    runs = needed(PAPER)
    assert len(runs) == 13
    assert sum(r.protocol == "paper-lr-grid" for r in runs) == 6
    assert {r.model for r in runs if r.protocol == "paper-15c"} == {
        "densenet121",
        "resnet50",
        "densenet121_attA",
        "densenet121_attB",
        "densenet121_nonimage",
        "densenet121_attA_nonimage",
    }
    assert [r.model for r in needed(PAPER, {"densenet121"})] == ["densenet121"] * 4
    assert len(needed(MINI)) == 9


def test_print_emits_one_command_per_run(synth_cache):
    r = CliRunner().invoke(cli, ["reproduce", "paper", "--cache", str(synth_cache), "--print"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 0 and len(lines) == 13 and all(ln.startswith("cxrbench run --model") for ln in lines)


@pytest.mark.long  # 27 tiny trainings on 1,000 images: minutes on 2 cores
def test_miniature_study_report_is_complete(synth1000_cache, tmp_path):
    out = tmp_path / "study"
    r = CliRunner().invoke(cli, ["reproduce", "paper", "--cache", str(synth1000_cache), "--out", str(out), "--mini"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["claims"]) == 6  # claims 1-5, the fourth in two parts (lr effect, attention gain)
    for c in rep["claims"]:
        assert c["rows"], c["key"]  # reproduced numbers
        assert c["tests"], c["key"]  # a test of the claimed difference
        assert c["verdict"] in ("holds", "does not hold", "inconclusive at 95%"), c["key"]
        for _, t in c["tests"]:
            assert t["ci95"][0] <= t["diff"] <= t["ci95"][1]
    assert {c["key"] for c in rep["claims"] if c["figure"]} == {"densenet", "fifteen", "lr", "attention", "nonimage"}
    assert [row[0] for row in rep["table2"]] == ["resnet50", "densenet121", "densenet121_attA", "densenet121_attB"]
    assert all(row[1] == row[2] for row in rep["table2"])  # Table 2 regenerated equals the paper's
    t1 = rep["table1"]
    assert [r[0] for r in t1["rows"]] == list(PAPER_TABLE1)  # Table 1 beside the paper's, with the difference
    assert all(r[3] == PAPER_TABLE1[r[0]] and r[4] == r[1] - r[3] for r in t1["rows"])
    assert t1["subset_rule"] == "shortfall-unselected" and len(t1["classes"]) == 15
    assert t1["classes"]["No Finding"]["target"] == 10_000 and t1["classes"]["Hernia"]["target"] == 2_000
    f = rep["attention_finding"]
    assert f["features.norm5"]["degenerate"] == f["features.norm5"]["maps"]
    assert f["features.norm5"]["peak_ratio_max"] < 1e-6 < f["features.transition3"]["peak_ratio_max"]
    md = (out / "report.md").read_text()
    assert "| paper (reported) | difference |" in md and "| class | subset | target | subset - target |" in md
    assert md.count("**Verdict:") == 6 and md.count("Paper (reported)") == 6 and "## The attention-model finding" in md
    dom, errors = browser.load(out / "report.html", tmp_path / "report.png")
    assert errors == [] and 'data-images="ok"' in dom and dom.count('class="claim"') == 6
    # a second call reuses every run and only rewrites the report
    again = CliRunner().invoke(
        cli, ["reproduce", "paper", "--cache", str(synth1000_cache), "--out", str(out), "--mini"]
    )
    assert again.exit_code == 0 and again.output.count("finished already") == 9
