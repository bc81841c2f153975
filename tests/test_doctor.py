"""`cxrbench doctor` and the install check at the boundary of every command that builds models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli(args, tmp_path, broken=False):
    env = dict(os.environ, COLUMNS="80")
    if broken:  # a torchvision built for another torch: importing it raises, as the machine did
        fake = tmp_path / "fake" / "torchvision"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "cxrbench", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )


@pytest.mark.slow
def test_doctor_on_a_working_install(tmp_path):
    r = _cli(["doctor"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("python", "torch", "torchvision", "numba", "zarr", "decoders", "model", "device cpu"):
        assert name in r.stdout
    assert "BROKEN" not in r.stdout and max(len(x) for x in r.stdout.splitlines()) <= 80


@pytest.mark.slow
def test_a_broken_torchvision_is_one_line_before_anything_is_written(tmp_path, synth_cache):
    r = _cli(["doctor"], tmp_path, broken=True)
    assert r.returncode == 1 and "BROKEN" in r.stdout and "Traceback" not in r.stderr
    assert "torchvision::nms does not exist" in r.stderr and "pip install 'torch==" in r.stderr
    assert "'torchvision==0." in r.stderr  # the matching pair, not just "reinstall"
    out = tmp_path / "out"
    for args in (
        ["models"],
        ["run", "--model", "tiny", "--protocol", "smoke", "--cache", str(synth_cache), "--out", str(out)],
        ["sweep", "--models", "tiny", "--protocol", "smoke", "--cache", str(synth_cache), "--out", str(out)],
        ["reproduce", "paper", "--mini", "--cache", str(synth_cache), "--out", str(out)],
    ):
        r = _cli(args, tmp_path, broken=True)
        assert r.returncode == 2, (args, r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert "torchvision" in r.stderr and "cxrbench doctor" in r.stderr
        assert not out.exists(), args
    assert _cli(["run", "--help"], tmp_path, broken=True).returncode == 0  # help needs no torchvision
