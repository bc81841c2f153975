"""The model registry: `register_model`, `create_model`, `list_models`, with lazily loaded plugins.

A model is a factory `fn(num_classes=15, pretrained=False, **kw) -> nn.Module` registered with a small
spec: input size, whether it takes the non-image features, whether it returns attention maps, and the
layer Grad-CAM should use (`cam_layer`, a dotted module path). Built-ins load on first use; entry-point
plugins (group `cxrbench.models`) are listed without importing them and load when first needed.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from cxrbench.errors import ModelError

ENTRY_POINT_GROUP = "cxrbench.models"
BUILTIN_MODULES = (
    "cxrbench.models.densenet",
    "cxrbench.models.resnet",
    "cxrbench.models.attention",
    "cxrbench.models.nonimage",
    "cxrbench.models.tiny",
)


@dataclass(frozen=True)
class ModelSpec:
    """What the benchmark needs to know about a registered model."""

    name: str
    factory: Callable[..., Any] | None  # None for an entry point not loaded yet
    cam_layer: str = ""
    input_size: int = 224
    nonimage: bool = False  # forward(x, features) with the 5 non-image features
    attention: bool = False  # forward(..., return_attention=True) -> (logits, [maps])
    description: str = ""
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "built-in"})
    target: str | None = None  # "module:attr" of a lazy entry point

    @property
    def source_text(self) -> str:
        s = self.source
        if s["kind"] == "entry point":
            return f"entry point {s.get('distribution', '?')} {s.get('version', '')}".strip()
        if s["kind"] == "file":
            return f"file {s['path']}"
        return s["kind"]


_REGISTRY: dict[str, ModelSpec] = {}
_state = {"builtins": False, "entry_points": False}
_current_source: list[dict[str, Any]] = [{"kind": "built-in"}]


@contextmanager
def loading_source(source: dict[str, Any]) -> Iterator[None]:
    """Registrations made inside this block are attributed to `source` (a plugin being loaded)."""
    _current_source.append(source)
    try:
        yield
    finally:
        _current_source.pop()


def register_model(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    cam_layer: str = "",
    input_size: int = 224,
    nonimage: bool = False,
    attention: bool = False,
    description: str = "",
) -> Any:
    """Register a model factory (usable bare, `@register_model`, or with options); a taken name raises."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f.__name__
        src = dict(_current_source[-1])
        old = _REGISTRY.get(key)
        if old is not None and not (old.factory is None and old.source.get("kind") == src.get("kind") == "entry point"):
            who = _who(src)
            raise ModelError(f"{who} registers model {key!r}, which is already registered ({old.source_text})")
        doc = description or (f.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[key] = ModelSpec(
            name=key, factory=f, cam_layer=cam_layer, input_size=input_size, nonimage=nonimage,
            attention=attention, description=doc, source=src,
        )
        return f

    return deco(fn) if fn is not None else deco


def _who(src: dict[str, Any]) -> str:
    if src["kind"] == "file":
        return f"plugin file {src['path']}"
    if src["kind"] == "entry point":
        return f"plugin {src.get('name')} ({src.get('distribution')})"
    return "cxrbench"


def _ensure_builtins() -> None:
    if _state["builtins"]:
        return
    import importlib

    _state["builtins"] = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)


def _ensure_entry_points() -> None:
    if _state["entry_points"]:
        return
    _state["entry_points"] = True
    from cxrbench.models.plugins import discover_entry_points

    for spec in discover_entry_points():
        if spec.name in _REGISTRY:
            raise ModelError(f"plugin {spec.name} ({spec.source.get('distribution')}) registers model "
                             f"{spec.name!r}, which is already registered ({_REGISTRY[spec.name].source_text})")
        _REGISTRY[spec.name] = spec


def refresh_entry_points() -> None:
    """Forget lazily discovered entry points so that the next lookup scans again (tests, new installs)."""
    for k in [k for k, v in _REGISTRY.items() if v.source.get("kind") == "entry point"]:
        del _REGISTRY[k]
    _state["entry_points"] = False


def _all() -> dict[str, ModelSpec]:
    _ensure_builtins()
    _ensure_entry_points()
    return _REGISTRY


def list_models(pattern: str | None = None, exclude: str | None = None) -> list[str]:
    """Registered names, sorted, filtered with fnmatch patterns."""
    names = sorted(_all())
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if exclude:
        names = [n for n in names if not fnmatch.fnmatch(n, exclude)]
    return names


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model (loading its plugin if needed); unknown names suggest the closest."""
    reg = _all()
    spec = reg.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (see `cxrbench models`)")
    if spec.factory is None:
        from cxrbench.models.plugins import load_entry_point

        spec = load_entry_point(spec, _REGISTRY)
    return spec


def create_model(name: str, num_classes: int = 15, pretrained: bool | str = False, check: bool | None = None,
                 **kw: Any):
    """Build a registered model. `pretrained`: False, True (ImageNet from the local cache) or a weights path.

    Plugins are checked once (a forward pass on a batch of 2) for the (2, num_classes) output shape.
    """
    spec = get_spec(name)
    try:
        model = spec.factory(num_classes=num_classes, pretrained=pretrained, **kw)  # type: ignore[misc]
    except ModelError:
        raise
    except Exception as e:
        if spec.source["kind"] == "built-in":
            raise
        raise ModelError(f"{_who(spec.source)}: building model {name!r} failed: {type(e).__name__}: {e}") from e
    if not hasattr(model, "cxrbench_weights"):
        model.cxrbench_weights = {"pretrained": False}
    if check or (check is None and spec.source["kind"] != "built-in"):
        check_output(model, spec, num_classes)
    return model


def check_output(model, spec: ModelSpec, num_classes: int) -> None:
    """Forward a batch of 2 zero images (and features); the logits must have shape (2, num_classes)."""
    import torch

    s = spec.input_size
    x = torch.zeros(2, 3, s, s)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, torch.zeros(2, 5)) if spec.nonimage else model(x)
    except Exception as e:
        raise ModelError(f"model {spec.name!r} ({spec.source_text}) failed on a (2, 3, {s}, {s}) batch: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        model.train(was)
    if isinstance(out, (tuple, list)):
        out = out[0]
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, num_classes):
        raise ModelError(f"model {spec.name!r} ({spec.source_text}) returned output of shape {shape} for a batch "
                         f"of 2; expected (2, {num_classes})")


def count_parameters(model) -> int:
    """Number of parameters (the paper's Table 2 counts every weight and bias)."""
    return sum(p.numel() for p in model.parameters())


def with_source(spec: ModelSpec, **changes: Any) -> ModelSpec:
    return replace(spec, **changes)
