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
    """A plain clone has no shared data folder beside it: no test may read one (real data comes from tests/data or
    an env var)."""
    import re

    q, folder = chr(34), "sha" + "red"  # spelled in pieces so that this file does not match itself
    pattern = re.compile(r"\.\./" + folder + r"|parents\[[0-9]\] */ *." + folder + "." + "|" + q + folder + q)
    offenders = [
        str(p.relative_to(REPO)) for p in sorted((REPO / "tests").rglob("*.py")) if pattern.search(p.read_text())
    ]
    assert offenders == []
    ci = (REPO / ".ci" / "run").read_text()
    assert "git clone" in ci and "CXRBENCH_REAL_DATA" in ci  # CI tests a clone that stands alone


def _readme_tables():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "tools" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_tables_match_the_registries():
    """The protocol and model tables are what `cxrbench protocols` and `cxrbench models` know, row for row."""
    from cxrbench.models import get_spec, list_models
    from cxrbench.protocols import PROTOCOLS

    text = (REPO / "README.md").read_text()
    assert _readme_tables().render(text) == text, "run python tools/readme_tables.py"
    for key in PROTOCOLS:
        assert f"| `{key}` |" in text
    built_in = [m for m in list_models() if get_spec(m).source.get("kind") == "built-in"]  # not other tests' plugins
    assert len(built_in) >= 11
    for name in built_in:
        assert f"| `{name}` |" in text


def test_readme_cites_only_what_the_repository_holds():
    """Every relative link and every repository path the README names exists; nothing outside it is cited."""
    import re

    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    local = [x for x in links if not x.startswith(("http://", "https://"))]
    assert local and all((REPO / x).exists() for x in local), [x for x in local if not (REPO / x).exists()]
    paths = set(re.findall(r"`((?:docs|benchmarks|tests|tools|examples|cxrbench)/[^`\s]*)`", text))
    assert paths
    missing = [p for p in paths if not any(REPO.glob(p.replace("{train,val,test}", "*")))]
    assert missing == []
    for outside in ("DESIGN.md", "STYLE.md", "reference-paper.md", "../"):
        assert outside not in text
    assert "{{" not in text and "TODO" not in text  # no placeholder where a measured figure belongs
