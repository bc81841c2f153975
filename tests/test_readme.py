"""The README's test command is what CI runs, and its first screen has the two set-up commands."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    cmd = ci[ci.index("# --- the README's test command ---") + 1].strip()
    readme = (REPO / "README.md").read_text()
    assert f"\n{cmd}\n" in readme


def test_first_screen_has_setup_commands():
    first = "\n".join((REPO / "README.md").read_text().splitlines()[:25])
    assert "pip install -e ." in first and "cxrbench quickstart" in first and "python -m pytest" in first


def test_tests_need_nothing_outside_the_repository():
    """A plain clone has no shared data folder beside it: no test may read one (real data comes from tests/data or an env var)."""
    import re

    q, folder = chr(34), "sha" + "red"  # spelled in pieces so that this file does not match itself
    pattern = re.compile(r"\.\./" + folder + r"|parents\[[0-9]\] */ *." + folder + "." + "|" + q + folder + q)
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "tests").rglob("*.py"))
                 if pattern.search(p.read_text())]
    assert offenders == []
    ci = (REPO / ".ci" / "run").read_text()
    assert "git clone" in ci and "CXRBENCH_REAL_DATA" in ci  # CI tests a clone that stands alone
