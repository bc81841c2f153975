"""The model registry: `register_model`, `create_model`, `list_models`, with lazily loaded plugins.

A model is a factory `fn(num_classes=15, pretrained=False, **kw) -> nn.Module` registered with a small
spec: input size, whether it takes the non-image features, whether it returns attention maps, and the
layer Grad-CAM should use (`cam_layer`, a dotted module path). Built-ins load on first use; entry-point
plugins (group `cxrbench.models`) are listed without importing them and load when first needed.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cxrbench.errors import CxrbenchError, ModelError
from cxrbench.models.entry_points import discover_entry_points, load_entry_point
from cxrbench.models.spec import ENTRY_POINT_GROUP, ModelSpec, current_source, loading_source, who

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "check_model",
    "count_parameters",
    "create_model",
    "get_spec",
    "list_models",
    "loading_source",
    "refresh_entry_points",
    "register_model",
]

BUILTIN_MODULES = (
    "cxrbench.models.densenet",
    "cxrbench.models.resnet",
    "cxrbench.models.attention",
    "cxrbench.models.nonimage",
    "cxrbench.models.tiny",
)

_REGISTRY: dict[str, ModelSpec] = {}
_state = {"builtins": False, "entry_points": False}


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
        src = current_source()
        old = _REGISTRY.get(key)
        if old is not None and not (old.factory is None and old.source.get("kind") == src.get("kind") == "entry point"):
            raise ModelError(f"{who(src)} registers model {key!r}, which is already registered ({old.source_text})")
        doc = description or (f.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[key] = ModelSpec(
            name=key,
            factory=f,
            cam_layer=cam_layer,
            input_size=input_size,
            nonimage=nonimage,
            attention=attention,
            description=doc,
            source=src,
        )
        return f

    return deco(fn) if fn is not None else deco


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
    for spec in discover_entry_points():
        if spec.name in _REGISTRY:
            raise ModelError(
                f"plugin {spec.name} ({spec.source.get('distribution')}) registers model "
                f"{spec.name!r}, which is already registered ({_REGISTRY[spec.name].source_text})"
            )
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
    if spec is None and name.startswith("timm/"):  # any timm architecture, made on first use
        from cxrbench.models.timm_models import timm_spec

        spec = _REGISTRY[name] = timm_spec(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (see `cxrbench models`)")
    if spec.factory is None:
        spec = load_entry_point(spec, _REGISTRY)
    return spec


def create_model(
    name: str, num_classes: int = 15, pretrained: bool | str = False, check: bool | None = None, **kw: Any
):
    """Build a registered model. `pretrained`: False, True (ImageNet from the local cache) or a weights path.

    Plugins are checked as they are built (`check_model`: output shape and CAM layer); built-ins are held by
    tests instead, unless `check=True`.
    """
    spec = get_spec(name)
    try:
        model = spec.factory(num_classes=num_classes, pretrained=pretrained, **kw)  # type: ignore[misc]
    except ModelError:
        raise
    except Exception as e:
        if spec.source["kind"] == "built-in":
            raise
        raise ModelError(f"{who(spec.source)}: building model {name!r} failed: {type(e).__name__}: {e}") from e
    if not hasattr(model, "cxrbench_weights"):
        model.cxrbench_weights = {"pretrained": False}
    if check or (check is None and spec.source["kind"] != "built-in"):
        check_model(model, spec, num_classes)
    if spec.source["kind"] != "built-in":
        guard_outputs(model, spec, num_classes)
    return model


def guard_outputs(model, spec: ModelSpec, num_classes: int) -> None:
    """Check every forward of a plugin's model, not only `check_model`'s batch of 2: logits of another shape
    than (batch, num_classes) are a ModelError naming the plugin (a forward hook, so any batch size)."""

    def hook(module, inp, out) -> None:
        logits = out[0] if isinstance(out, (tuple, list)) and out else out
        batch = inp[0].shape[0] if inp and hasattr(inp[0], "shape") and len(inp[0].shape) else None
        shape = tuple(getattr(logits, "shape", ()))
        if batch is not None and shape != (batch, num_classes):
            raise ModelError(
                f"model {spec.name!r} ({spec.source_text}) returned output of shape {shape} for a batch of "
                f"{batch}; expected ({batch}, {num_classes})"
            )

    model.register_forward_hook(hook)


def _code_files(spec: ModelSpec) -> set[str]:
    """The files a model's own code lives in: its plugin file and the module of its factory."""
    import inspect

    files = {str(spec.source["path"])} if spec.source.get("path") else set()
    try:
        files.add(str(Path(inspect.getfile(spec.factory)).resolve()))  # type: ignore[arg-type]
    except (TypeError, OSError):
        pass
    return {str(Path(f).resolve()) for f in files}


@contextmanager
def plugin_errors(spec: ModelSpec, stage: str) -> Iterator[None]:
    """An exception raised inside a plugin's code (at any batch size, in training, scoring or explaining)
    becomes a ModelError naming the model, its plugin and where it failed; built-in models pass through."""
    try:
        yield
    except (CxrbenchError, KeyboardInterrupt):
        raise
    except Exception as e:
        if spec.source["kind"] == "built-in":
            raise
        files = _code_files(spec)
        tb, where = e.__traceback__, None
        while tb is not None:
            f = str(Path(tb.tb_frame.f_code.co_filename).resolve())
            if f in files:
                where = f"{Path(f).name}:{tb.tb_lineno}"
            tb = tb.tb_next
        if where is None:
            raise
        msg = " ".join(str(e).split())[:300]
        raise ModelError(
            f"model {spec.name!r} ({spec.source_text}) failed while {stage} ({type(e).__name__} at {where}: {msg})"
        ) from e


def check_model(model, spec: ModelSpec, num_classes: int) -> None:
    """Forward a batch of 2 zero images (and features): the logits must have shape (2, num_classes), and the
    declared `cam_layer` must be a module of the model whose output is a (2, channels, h, w) feature map, so
    that Grad-CAM and localisation cannot fail after training."""
    import torch

    layer = _cam_module(model, spec)
    seen: list = []
    handle = layer.register_forward_hook(lambda mod, inp, out: seen.append(out))
    s = spec.input_size
    x = torch.zeros(2, 3, s, s)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, torch.zeros(2, 5)) if spec.nonimage else model(x)
    except Exception as e:
        raise ModelError(
            f"model {spec.name!r} ({spec.source_text}) failed on a (2, 3, {s}, {s}) batch: {type(e).__name__}: {e}"
        ) from e
    finally:
        handle.remove()
        model.train(was)
    if isinstance(out, (tuple, list)):
        out = out[0]
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, num_classes):
        raise ModelError(
            f"model {spec.name!r} ({spec.source_text}) returned output of shape {shape} for a batch "
            f"of 2; expected (2, {num_classes})"
        )
    act = seen[-1] if seen else None
    act_shape = tuple(act.shape) if isinstance(act, torch.Tensor) else None
    if act_shape is None or len(act_shape) != 4 or act_shape[0] != 2:
        what = "was not called" if not seen else f"gave {act_shape or type(act).__name__}"
        raise ModelError(
            f"model {spec.name!r} ({spec.source_text}): its cam_layer {spec.cam_layer!r} {what} on a "
            "batch of 2; Grad-CAM needs a layer whose output is a (batch, channels, height, width) "
            "feature map that reaches the logits (fix cam_layer in @register_model)"
        )


def _cam_module(model, spec: ModelSpec):
    """The module `spec.cam_layer` names, or a ModelError naming the closest module names."""
    where = f"model {spec.name!r} ({spec.source_text})"
    if not spec.cam_layer:
        raise ModelError(
            f"{where} declares no cam_layer; Grad-CAM needs one: @register_model(cam_layer=...) "
            "with the dotted name of a feature-map module"
        )
    try:
        return model.get_submodule(spec.cam_layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(spec.cam_layer, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelError(
            f"{where} declares cam_layer {spec.cam_layer!r}, which is not a module of the built "
            f"model{hint} (fix cam_layer in @register_model)"
        ) from None


def count_parameters(model) -> int:
    """Number of parameters (the paper's Table 2 counts every weight and bias)."""
    return sum(p.numel() for p in model.parameters())


def parameters_of(name: str, num_classes: int) -> int:
    """The parameter count of registered model `name`, built on the meta device (no memory, no initialisation,
    no weights, no checks): what a record's `model.parameters` is compared with before anything is built."""
    import torch

    with torch.device("meta"):
        return count_parameters(create_model(name, num_classes=num_classes, pretrained=False, check=False))
