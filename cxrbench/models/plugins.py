"""Third-party models from a file: `--plugin path/to/file.py` on any command that takes `--model`.

The file registers models with `@register_model` when it is imported; its path and sha256 become each model's
source (recorded with every run). A plugin that fails to import or registers a taken name gets an error that
names it; a model it registers is checked when built (`registry.check_model`: output shape and CAM layer).
Installed packages use the entry-point group instead (`cxrbench.models.entry_points`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from cxrbench.errors import ModelError
from cxrbench.files import read_regular
from cxrbench.models.registry import _REGISTRY, _ensure_builtins, _ensure_entry_points, loading_source

MAX_PLUGIN_BYTES = 16 << 20  # a plugin is Python source
_loaded_files: dict[str, str] = {}  # resolved path -> sha256


def load_plugin_file(path: str | Path) -> list[str]:
    """Import a Python file that registers models with `@register_model`; returns the names it added."""
    _ensure_builtins()
    _ensure_entry_points()
    try:
        p = Path(path).resolve()
    except (RuntimeError, OSError):  # a link that points to itself (Python < 3.13 raises RuntimeError)
        raise ModelError(f"plugin file {path}: a link that never reaches a file (a symlink loop)") from None
    if not p.is_file():
        raise ModelError(f"plugin file {path}: not found")
    data = read_regular(p, MAX_PLUGIN_BYTES, "plugin file", error=ModelError)
    sha = hashlib.sha256(data).hexdigest()
    if _loaded_files.get(str(p)) == sha:
        return [k for k, v in _REGISTRY.items() if v.source.get("path") == str(p)]
    before = set(_REGISTRY)
    modname = f"cxrbench_plugin_{p.stem}_{sha[:8]}"
    src: dict[str, Any] = {"kind": "file", "path": str(p), "sha256": sha}
    spec = importlib.util.spec_from_file_location(modname, p)
    if spec is None or spec.loader is None:
        raise ModelError(f"plugin file {path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        with loading_source(src):
            sys.modules[modname] = module
            spec.loader.exec_module(module)
    except ModelError:
        sys.modules.pop(modname, None)
        raise
    except BaseException as e:  # a plugin's SystemExit or KeyboardInterrupt-free failure must not kill us silently
        sys.modules.pop(modname, None)
        for k in set(_REGISTRY) - before:
            del _REGISTRY[k]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ModelError(f"plugin file {path} failed to import: {type(e).__name__}: {e}") from e
    added = sorted(set(_REGISTRY) - before)
    if not added:
        raise ModelError(
            f"plugin file {path} registered no model (decorate a factory with @cxrbench.models.register_model)"
        )
    _loaded_files[str(p)] = sha
    return added


def load_plugins(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Load every `--plugin` file given on a command line."""
    names: list[str] = []
    for p in paths:
        names += load_plugin_file(p)
    return names
