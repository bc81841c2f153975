"""Models from installed packages: the entry-point group `cxrbench.models`, listed without importing them.

An entry point names a factory (`mynet = mypkg.models:mynet`) or a module whose import registers models with
`@register_model`. It is imported on first use; a failure names the plugin and its distribution.
"""

from __future__ import annotations

from importlib import metadata

from cxrbench.errors import ModelError
from cxrbench.models.spec import ENTRY_POINT_GROUP, ModelSpec, loading_source


def discover_entry_points() -> list[ModelSpec]:
    """Lazy specs for every entry point in the `cxrbench.models` group (nothing imported)."""
    specs = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        src = {
            "kind": "entry point",
            "name": ep.name,
            "value": ep.value,
            "distribution": dist.metadata["Name"] if dist is not None else "?",
            "version": dist.version if dist is not None else "",
        }
        specs.append(ModelSpec(name=ep.name, factory=None, source=src, target=ep.value))
    return specs


def load_entry_point(spec: ModelSpec, registry: dict[str, ModelSpec]) -> ModelSpec:
    """Import a lazy entry point; use what its import registered, else register the object it names."""
    from dataclasses import replace

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
        raise ModelError(
            f"plugin {spec.name} ({src['distribution']}) failed to import {spec.target!r}: {type(e).__name__}: {e}"
        ) from e
    loaded = registry.get(spec.name)
    if loaded is None:
        if not callable(obj):
            registry[spec.name] = placeholder
            raise ModelError(
                f"plugin {spec.name} ({src['distribution']}): {spec.target!r} is not a model factory "
                "and registered no model of that name"
            )
        opts = getattr(obj, "cxrbench_spec", {})
        loaded = replace(spec, factory=obj, target=None, **opts)
        registry[spec.name] = loaded
    return loaded
