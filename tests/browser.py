"""Headless Chromium for page tests: load a local page, return its DOM after load, its console errors and a
screenshot. Uses Debian's chromium (CI installs it); without it the tests skip, except under CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CXRBENCH_CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    return exe


def _run(page: Path, extra: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as prof:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={prof}", *extra, page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )


def console_errors(stderr: str) -> list[str]:
    """Console messages of level error and uncaught exceptions, as Chromium logs them."""
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and re.search(r"Uncaught|ERROR:CONSOLE|error", ln)]


def load(page: Path, screenshot: Path | None = None, size: str = "1300,1600") -> tuple[str, list[str]]:
    """(DOM after load, console errors); also a screenshot when asked."""
    r = _run(page, ["--dump-dom"])
    if r.returncode != 0:
        raise RuntimeError(f"chromium failed: {r.stderr[-2000:]}")
    errors = console_errors(r.stderr)
    if screenshot is not None:
        s = _run(page, [f"--screenshot={screenshot}", f"--window-size={size}"])
        errors += console_errors(s.stderr)
        assert screenshot.exists(), s.stderr[-2000:]
    return r.stdout, errors
