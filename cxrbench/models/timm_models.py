"""Any timm model by name: `--model timm/<architecture>` (e.g. `timm/resnet18`, `timm/convnext_tiny`).

The spec is made when the name is first asked for: the Grad-CAM layer is the module of the model's last
feature stage (timm's `feature_info`, found on a model built on the meta device, so nothing is allocated), the
source recorded is `{"kind": "timm", "architecture": ..., "timm_version": ...}`. ImageNet weights come from the
local Hugging Face cache timm uses, or from a `--weights FILE`; a download is tried only when the file is not
cached and `CXRBENCH_OFFLINE=1` is not set, and a missing file is the same WeightsUnavailable as for
torchvision's weights. timm is an optional extra (`pip install 'cxrbench[timm]'`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cxrbench.errors import ModelError, WeightsUnavailable
from cxrbench.models.spec import ModelSpec

PREFIX = "timm/"
EXTRA = "pip install 'cxrbench[timm]'"


def timm_version() -> str | None:
    """The installed timm's version, found without importing timm (an import takes seconds); None where timm is
    not installed."""
    import importlib.metadata
    import importlib.util

    try:
        if importlib.util.find_spec("timm") is None:
            return None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return None
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:  # importable but without its package metadata
        return "version unknown"


def timm_note() -> str:
    """How timm backbones are named, and whether timm is here: the line `cxrbench models` ends with."""
    v = timm_version()
    here = f"timm {v} is installed" if v is not None else f"timm is not installed ({EXTRA})"
    return (
        f"timm backbones: --model {PREFIX}<name> (e.g. {PREFIX}resnet18, {PREFIX}convnext_tiny, "
        f"{PREFIX}efficientnet_b0), any timm architecture, not listed above; {here}."
    )


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError(f"timm models need timm: {EXTRA}") from None
    return timm


def timm_spec(name: str) -> ModelSpec:
    """The spec of `timm/<architecture>`; an unknown architecture is a ModelError naming close ones."""
    import torch

    timm = _timm()
    arch = name[len(PREFIX) :]
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(PREFIX + c) for c in close)}?" if close else ""
        raise ModelError(f"unknown timm model {arch!r}{hint} (timm {timm.__version__})")
    with torch.device("meta"):
        probe = timm.create_model(arch, pretrained=False, num_classes=2)
    info = getattr(probe, "feature_info", None) or []
    layer = str(info[-1]["module"]) if info and info[-1].get("module") else ""
    if not layer:
        raise ModelError(f"timm model {arch!r} declares no feature stages: no Grad-CAM layer can be chosen")
    size = int((getattr(probe, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])

    def factory(num_classes: int = 15, pretrained: bool | str = False) -> Any:
        return build(arch, num_classes, pretrained)

    return ModelSpec(
        name=name,
        factory=factory,
        cam_layer=layer,
        input_size=size,
        description=f"timm {arch} (Grad-CAM on {layer})",
        source={"kind": "timm", "architecture": arch, "timm_version": timm.__version__},
    )


def _cached_file(hub_id: str | None) -> str | None:
    """The weights file of a Hugging Face repo in the local cache, without touching the network."""
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, fname)
        if isinstance(found, str) and Path(found).is_file():
            return found
    return None


def build(arch: str, num_classes: int, pretrained: bool | str) -> Any:
    """timm's `arch` with a `num_classes` classifier; ImageNet weights (True) or a weights file (a path) for
    everything but the classifier. `model.cxrbench_weights` records where the weights came from."""
    from cxrbench.hashing import file_sha256

    timm = _timm()
    if not pretrained:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
        model.cxrbench_weights = {"pretrained": False}
        return model
    if pretrained is True:
        cfg = timm.models.get_pretrained_cfg(arch)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        path = _cached_file(hub_id)
        origin = f"timm {hub_id}"
        if path is None:
            if os.environ.get("CXRBENCH_OFFLINE") == "1":
                reason = "downloads are off (CXRBENCH_OFFLINE=1)"
            else:
                try:
                    timm.create_model(arch, pretrained=True)  # fills the Hugging Face cache
                    reason = ""
                except Exception as e:  # no network, no such weights...
                    reason = f"the download failed ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
                path = _cached_file(hub_id)
            if path is None:
                raise WeightsUnavailable(
                    f"ImageNet weights for timm/{arch} ({hub_id}) are not in the local Hugging Face cache and "
                    f"{reason or 'could not be found after a download'}; pass --weights FILE, or train from "
                    "scratch with --no-pretrained"
                )
    else:
        path = str(pretrained)
        origin = "file"
        if not Path(path).is_file():
            raise WeightsUnavailable(f"weights file {path} not found; pass an existing file or --no-pretrained")
    try:
        model = timm.create_model(arch, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": path})
    except Exception as e:
        raise ModelError(f"weights {path} do not fit timm/{arch}: {type(e).__name__}: {e}") from e
    model.cxrbench_weights = {"pretrained": True, "origin": origin, "path": path, "sha256": file_sha256(Path(path))}
    return model
