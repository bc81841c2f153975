"""A new user's first ten minutes: the README's commands, run as written in a fresh folder."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _blocks(readme: str) -> list[list[str]]:
    """Shell blocks of the README, as lists of commands (comments stripped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        out.append([ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")])
    return out


def _run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(cmd)
    assert args[0] == "cxrbench", cmd
    r = subprocess.run(
        [sys.executable, "-m", "cxrbench", *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, f"{cmd}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-3000:]
    return r


@pytest.mark.long
def test_readme_quickstart_and_plugin_path(tmp_path):
    readme = (REPO / "README.md").read_text()
    blocks = _blocks(readme)
    # the by-hand setup block: the install comes before the quickstart it runs
    setup = next(b for b in blocks if any(c.startswith("pip install -e ") for c in b))
    install = next(i for i, c in enumerate(setup) if c.startswith("pip install -e "))
    quickstart = next(i for i, c in enumerate(setup) if "cxrbench quickstart" in c)
    assert install < quickstart
    plugin = next(b for b in blocks if any("--plugin examples/my_model.py" in c for c in b))
    shutil.copytree(REPO / "examples", tmp_path / "examples")  # the user is in a clone

    qs = _run("cxrbench quickstart", tmp_path)
    assert "[6/6]" in qs.stderr and "done: leaderboard" in qs.stderr
    out = tmp_path / "cxrbench-quickstart"
    assert (out / "gallery" / "index.html").exists() and (out / "leaderboard" / "index.html").exists()
    assert len(list((out / "leaderboard" / "records" / "smoke@v1").glob("*.json"))) == 2
    again = _run("cxrbench quickstart", tmp_path)  # re-running reuses what exists
    assert again.stderr.count("is finished already") == 2 and "already built" in again.stderr

    outputs = {shlex.split(cmd)[1]: _run(cmd, tmp_path) for cmd in plugin}
    board = outputs["leaderboard"].stdout
    assert "mynet" in board and "tiny_attn" in board and "a plugin model" in board
    run_dir = out / "runs" / "mynet__smoke@v1__lr0.1__seed0"
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["model"]["source"]["kind"] == "file" and rec["model"]["source"]["path"].endswith("my_model.py")
    assert (run_dir / "gallery" / "index.html").exists()
    assert len(list((out / "leaderboard" / "records" / "smoke@v1").glob("*.json"))) == 3
