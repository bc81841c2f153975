"""Where a result came from: code version and git state of cxrbench's own source, and the environment."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def package_git() -> dict:
    """Commit and dirty flag of the git checkout that holds cxrbench's source (not the working directory)."""
    import cxrbench

    src = Path(cxrbench.__file__).resolve().parent
    out: dict[str, str | bool | None] = {
        "cxrbench_version": cxrbench.__version__,
        "git_commit": None,
        "git_dirty": None,
    }
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return out
        status = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        out["git_commit"] = commit.stdout.strip()
        out["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def environment(device: str) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "device": device,
        "device_name": platform.processor() or "cpu",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    else:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    env["device_name"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return env
