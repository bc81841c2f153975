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
