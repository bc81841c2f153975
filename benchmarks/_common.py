"""Shared helpers for the benchmark scripts: machine description, result files, timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    return None


def machine() -> dict:
    """What ran the benchmark (recorded with every result)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_tag() -> str:
    """Short name for result files: the GPU if any, else cores + architecture."""
    g = gpu_name()
    if g:
        return "".join(c if c.isalnum() else "-" for c in g.lower()).strip("-").replace("--", "-")
    return f"{platform.machine()}-{os.cpu_count()}cpu"


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except Exception:
        return None


def write_result(name: str, data: dict, out_dir: Path | None = None) -> Path:
    """Write `<name>-<machine>.json` (results folder by default) with machine and commit attached."""
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{machine_tag()}.json"
    payload = {
        "benchmark": name,
        "machine": machine(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        **data,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


class Timer:
    def __enter__(self) -> Timer:
        self.t = time.perf_counter()
        return self

    def __exit__(self, *a: object) -> None:
        self.seconds = time.perf_counter() - self.t
