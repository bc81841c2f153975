"""The README's test command is what CI runs, and its first screen has the two set-up commands."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    cmd = ci[ci.index("# --- the README's test command ---") + 1].strip()
    readme = (REPO / "README.md").read_text()
    assert f"\n{cmd}\n" in readme


def test_ci_checks_lint_format_and_types_before_the_tests_as_the_readme_shows():
    """CI runs ruff (lint, format) and mypy before the tests; the README's Development block shows each check as
    CI runs it, and every module that pyproject.toml checks strictly exists (a renamed one would drop out)."""
    import tomllib

    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    before_tests = ci[: ci.index("# --- the README's test command ---")]
    checks = [
        "ruff check cxrbench tests benchmarks tools",
        "ruff format --check cxrbench tests benchmarks tools",
        "mypy",
    ]
    assert all(c in before_tests for c in checks)
    readme = (REPO / "README.md").read_text()
    dev = readme[readme.index("## Development") :]
    dev = dev[dev.index("```bash") + len("```bash") : dev.index("```", dev.index("```bash") + 1)]
    shown = {part.split("#")[0].strip() for line in dev.splitlines() for part in line.split("&&")}
    assert all(c in shown for c in checks)
    mypy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = [m for o in mypy["overrides"] if o.get("disallow_untyped_defs") for m in o["module"]]
    assert "cxrbench.api" in strict and "cxrbench.results.types" in strict
    assert all((REPO / (m.replace(".", "/") + ".py")).is_file() for m in strict)


def test_first_screen_has_setup_commands():
    """The first screen: the two commands (setup + quickstart, the tests), each one line, and the plain pip route."""
    lines = (REPO / "README.md").read_text().splitlines()[:30]
    block = lines[lines.index("```bash") + 1 :]
    block = block[: block.index("```")]
    assert [c.split("#")[0].strip() for c in block] == [
        "bash tools/setup.sh",
        '. .venv/bin/activate && python -m pytest -q -n 2 -m "not long"',
    ]
    first = "\n".join(lines)
    assert 'pip install -e ".[test]"' in first and "cxrbench quickstart" in first


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


def _setup(tmp_path, env, *args):
    import os
    import subprocess

    return subprocess.run(
        ["bash", str(REPO / "tools" / "setup.sh"), *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_setup_refuses_an_old_python_and_makes_nothing(tmp_path):
    """The README's first command checks the interpreter before it makes anything."""
    old = tmp_path / "python3.10"
    old.write_text("#!/bin/sh\n[ \"$1\" = -V ] && echo 'Python 3.10.12' && exit 0\nexit 1\n")
    old.chmod(0o755)
    r = _setup(tmp_path, {"PYTHON": str(old), "CXRBENCH_VENV": str(tmp_path / "venv")})
    assert r.returncode == 1, r.stderr
    assert (
        r.stderr.strip()
        == f"setup: cxrbench needs Python 3.11 or newer; {old} is Python 3.10.12 (set PYTHON=python3.11 or newer)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python3.10"]


@pytest.mark.long
def test_setup_in_an_installed_environment_checks_it_and_runs_the_quickstart(tmp_path):
    """tools/setup.sh on an environment that has torch reuses it: installs cxrbench, runs the doctor and the
    quickstart (its arguments passed on) in the folder it is called from."""
    import sys

    r = _setup(tmp_path, {"CXRBENCH_VENV": sys.prefix}, "--out", "qs", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "installing torch" not in r.stderr and "installing cxrbench" in r.stderr
    assert "torchvision" in r.stdout and (tmp_path / "qs" / "leaderboard" / "index.html").is_file()
