"""cxrbench: fast, exact and comparable chest X-ray classification benchmarks on NIH ChestX-ray14.

The Python API (`cxrbench.api`) loads on first use, so `import cxrbench` stays cheap (no torch, no pandas):

    >>> import cxrbench
    >>> run = cxrbench.load_run("runs/tiny__smoke@v1__lr0.1__seed0")
    >>> run.predictions.head()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("Run", "load_run", "load_leaderboard", "compare")
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from cxrbench.api import Run as Run
    from cxrbench.api import compare as compare
    from cxrbench.api import load_leaderboard as load_leaderboard
    from cxrbench.api import load_run as load_run


def __getattr__(name: str) -> Any:
    """The API's names, imported from `cxrbench.api` when first asked for."""
    if name in _API:
        from cxrbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxrbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
