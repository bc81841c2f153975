"""The test tiers: a test on a fixture marked `slow_fixture` is slow, every long test is slow, and `-m "not slow"`
selects neither."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _collected(marks: str, *paths: str) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", marks, *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode in (0, 5), r.stdout[-2000:] + r.stderr[-2000:]  # 5: nothing selected
    return [line for line in r.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_slow_fixtures_and_long_tests_are_out_of_the_fast_loop():
    trust, seeds = "tests/test_board_trust.py", "tests/test_seeds.py"
    everything = _collected("not long", trust, seeds)
    fast = _collected("not slow", trust, seeds)
    on_runs = {t for t in everything if t.startswith(trust) and "test_submit_refuses_unsafe_run_ids" in t}
    assert on_runs and not on_runs & set(fast)  # they use the module's trained runs (a slow fixture)
    assert "tests/test_seeds.py::test_bad_seed_is_refused" in fast  # no trained run: in the fast loop
    long = _collected("long", seeds)
    assert long == ["tests/test_seeds.py::test_miniature_study_with_three_seeds"]
    assert long[0] in _collected("slow", seeds) and long[0] not in everything
