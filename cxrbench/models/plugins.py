"""Third-party models: the entry-point group `cxrbench.models` and `--plugin path/to/file.py`.

An entry point names a factory (`mynet = mypkg.models:mynet`) or a module whose import registers models
with `@register_model`. Entry points are listed without importing them; a plugin that fails to import,
registers a taken name or returns the wrong output shape gets an error that names it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from cxrbench.errors import ModelError
from cxrbench.models.registry import ENTRY_POINT_GROUP, ModelSpec, _REGISTRY, loading_source, with_source

_loaded_files: dict[str, str] = {}  # resolved path -> sha256


def discover_entry_points() -> list[ModelSpec]:
    """Lazy specs for every entry point in the `cxrbench.models` group (nothing imported)."""
    specs = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        src = {"kind": "entry point", "name": ep.name, "value": ep.value,
               "distribution": dist.metadata["Name"] if dist is not None else "?",
               "version": dist.version if dist is not None else ""}
        specs.append(ModelSpec(name=ep.name, factory=None, source=src, target=ep.value))
    return specs


def load_entry_point(spec: ModelSpec, registry: dict[str, ModelSpec]) -> ModelSpec:
    """Import a lazy entry point; use what its import registered, else register the object it names."""
    src = spec.source
    ep = metadata.EntryPoint(name=spec.name, value=spec.target or "", group=ENTRY_POINT_GROUP)
    placeholder = registry.pop(spec.name)
    try:
        with loading_source(src):
            obj = ep.load()
    except ModelError:
        registry.setdefault(spec.name, placeholder)
        raise
    except Exception as e:
        registry[spec.name] = placeholder
        raise ModelError(f"plugin {spec.name} ({src['distribution']}) failed to import {spec.target!r}: "
                         f"{type(e).__name__}: {e}") from e
    loaded = registry.get(spec.name)
    if loaded is None:
        if not callable(obj):
            registry[spec.name] = placeholder
            raise ModelError(f"plugin {spec.name} ({src['distribution']}): {spec.target!r} is not a model factory "
                             "and registered no model of that name")
        opts = getattr(obj, "cxrbench_spec", {})
        loaded = with_source(spec, factory=obj, target=None, **opts)
        registry[spec.name] = loaded
    return loaded


def load_plugin_file(path: str | Path) -> list[str]:
    """Import a Python file that registers models with `@register_model`; returns the names it added."""
    from cxrbench.models.registry import _ensure_builtins, _ensure_entry_points

    _ensure_builtins()
    _ensure_entry_points()
    p = Path(path).resolve()
    if not p.is_file():
        raise ModelError(f"plugin file {path}: not found")
    data = p.read_bytes()
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
        raise ModelError(f"plugin file {path} registered no model (decorate a factory with "
                         "@cxrbench.models.register_model)")
    _loaded_files[str(p)] = sha
    return added


def load_plugins(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Load every `--plugin` file given on a command line."""
    names: list[str] = []
    for p in paths:
        names += load_plugin_file(p)
    return names
