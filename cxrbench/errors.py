"""One exception hierarchy: every error cxrbench raises on purpose derives from `CxrbenchError`.

The CLI prints these as a single line (no traceback unless `--debug`) and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path


class CxrbenchError(Exception):
    """Base class of every deliberate cxrbench error."""


class InputError(CxrbenchError):
    """A file the user gave (CSV, list, image, record) is missing or malformed."""

    def __init__(self, path: str | Path | None, reason: str, *, line: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        self.line = line
        where = "" if path is None else str(path)
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {reason}" if where else reason)


class ConfigError(CxrbenchError):
    """An option, protocol or model name that does not exist or does not fit."""


class CacheError(CxrbenchError):
    """A preprocessing cache that is incomplete, stale, locked or damaged."""


class ModelError(CxrbenchError):
    """A model that cannot be found, built, loaded or that misbehaves (plugins included)."""


class WeightsUnavailable(ModelError):
    """Pretrained weights were asked for but are not on this machine."""


class TrainingError(CxrbenchError):
    """A training run that cannot continue (non-finite loss, bad resume state)."""


class RecordError(CxrbenchError):
    """A run record that does not validate, or a leaderboard operation that is refused."""


class InstallError(CxrbenchError):
    """A component of the installation (torch, torchvision, numba, zarr, a decoder) is missing or broken."""
