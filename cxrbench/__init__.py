"""cxrbench: fast, exact and comparable chest X-ray classification benchmarks on NIH ChestX-ray14.

The Python API (`cxrbench.api`) loads on first use, so `import cxrbench` stays cheap (no torch, no pandas):

    >>> import cxrbench
    >>> run = cxrbench.load_run("runs/tiny__smoke@v1__lr0.1__seed0")
    >>> run.predictions.head()
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("Run", "load_run", "load_leaderboard", "compare")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """The API's names, imported from `cxrbench.api` when first asked for (by name, at call time: the API sits
    above the modules that read `cxrbench.__version__`, so the package root must not import it statically)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module("cxrbench.api"), name)
    raise AttributeError(f"module 'cxrbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
