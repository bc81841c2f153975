"""The reproduce report's verdicts test what each claim says, and a comparison has one p-value wherever it is
shown (issue 12 items 10 and 13)."""

import pytest

from cxrbench.protocols import get_protocol
from cxrbench.results.leaderboard import load, rank, submit
from cxrbench.run import RunOptions, run

from .conftest import slow_fixture

SMOKE = get_protocol("smoke@v1")


@pytest.fixture(scope="module")
@slow_fixture
def runs(synth_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("verdict_runs")
    return {
        m: run(RunOptions(model=m, protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")).parent
        for m in ("tiny", "tiny_attn")
    }


def test_reproduce_and_the_board_give_one_p_value(runs, tmp_path):
    from cxrbench.studies.paper import RunSpec, Study, evaluate

    board = tmp_path / "board"
    for d in runs.values():
        submit(d, board, allow_dirty=True)
    (g,) = rank(load(board))
    best, second = g.entries
    c = g.comparisons[second.id]
    # reproduce's paired test of the same two runs: the same p, the difference with the other sign
    bm, sm = best.record["model"]["name"], second.record["model"]["name"]
    study = Study("t", "smoke", "none", "none", bm, sm, (), (), 0.1, 0.1)
    claims = evaluate(study, {RunSpec("smoke", bm, 0.1): runs[bm], RunSpec("smoke", sm, 0.1): runs[sm]})
    ((_, t),) = next(x for x in claims if x.key == "densenet").tests
    assert t["p_value"] == c["p_value"] and t["diff"] == -c["diff"] and t["ci95"] == [-c["ci95"][1], -c["ci95"][0]]
    assert (t["resamples"], t["seed"]) == (c["resamples"], c["seed"]) == (SMOKE.bootstrap, SMOKE.seed)


def test_claim_verdicts_follow_their_numbers():
    from cxrbench.studies.paper import gain_in_range_verdict, greater_verdict, negligible_verdict

    def c(diff, lo, hi):
        return {"diff": diff, "ci95": [lo, hi], "p_value": 0.01}

    assert gain_in_range_verdict(c(0.05, 0.04, 0.06)) == "does not hold"  # significant, but above 0.02-0.03
    assert gain_in_range_verdict(c(0.008, 0.002, 0.015)) == "does not hold"  # significant, but below
    assert gain_in_range_verdict(c(-0.01, -0.03, 0.005)) == "does not hold"  # excludes the claimed gain
    assert gain_in_range_verdict(c(0.025, 0.01, 0.04)) == "holds"
    assert gain_in_range_verdict(c(0.035, 0.021, 0.05)) == "holds"  # CI consistent with 0.02-0.03
    assert gain_in_range_verdict(c(0.02, -0.01, 0.05)) == "inconclusive at 95%"
    assert gain_in_range_verdict(c(0.02, None, None)) == "inconclusive at 95%"
    assert (
        greater_verdict(c(0.02, 0.01, 0.03)) == "holds"
        and greater_verdict(c(-0.02, -0.03, -0.01)) == "does not hold"
        and greater_verdict(c(0.0, -0.01, 0.01)) == "inconclusive at 95%"
    )
    assert negligible_verdict(c(0.005, -0.01, 0.015)) == "holds"
    assert negligible_verdict(c(0.03, 0.01, 0.05)) == "does not hold"
    assert negligible_verdict(c(0.01, -0.01, 0.03)) == "inconclusive at 95%"
