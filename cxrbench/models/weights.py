"""ImageNet weights for the torchvision backbones: from torchvision's local cache, a file, or a download.

Nothing is fetched when `CXRBENCH_OFFLINE=1`; where the weights are absent and cannot be downloaded the
error says where to put the file and how to run without them (`--no-pretrained`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cxrbench.errors import ModelError, WeightsUnavailable
from cxrbench.hashing import file_sha256

_ARCH_WEIGHTS = {
    "densenet121": ("DenseNet121_Weights", "IMAGENET1K_V1"),
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V1"),
}
# torchvision's DenseNet checkpoints use old key names such as 'norm.1'; torchvision remaps them likewise.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _weights_enum(arch: str):
    import torchvision.models as tvm

    cls, member = _ARCH_WEIGHTS[arch]
    return getattr(getattr(tvm, cls), member)


def cache_path(arch: str) -> tuple[Path, str]:
    """Where torchvision keeps the ImageNet file of `arch`, and its download URL."""
    import torch

    url = _weights_enum(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _download(url: str, dst: Path) -> None:
    import socket

    import torch

    dst.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        torch.hub.download_url_to_file(url, str(dst), progress=True)
    finally:
        socket.setdefaulttimeout(old)


def imagenet_state_dict(arch: str, weights: bool | str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state_dict, provenance) of ImageNet weights for `arch`; `weights` is True or a file path."""
    import torch

    if weights is True:
        path, url = cache_path(arch)
        if not path.is_file():
            if os.environ.get("CXRBENCH_OFFLINE") == "1":
                reason = "downloads are off (CXRBENCH_OFFLINE=1)"
            else:
                try:
                    _download(url, path)
                    reason = ""
                except Exception as e:  # no network, proxy, disk full...
                    reason = f"the download failed ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
            if not path.is_file():
                raise WeightsUnavailable(
                    f"ImageNet weights for {arch} are not on this machine and {reason}; put {url} at {path} "
                    f"(or pass --weights FILE), or train from scratch with --no-pretrained"
                )
        origin = f"torchvision {_weights_enum(arch)}"
    elif weights is False:  # a caller's mistake: no weights were asked for
        raise ValueError("imagenet_state_dict: weights must be True or a file path")
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailable(f"weights file {path} not found; pass an existing file or --no-pretrained")
        origin = "file"
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"weights file {path} could not be read: {type(e).__name__}: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelError(f"weights file {path} holds no state dict")
    if arch == "densenet121":
        sd = {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in sd.items()}
    return sd, {"pretrained": True, "origin": origin, "path": str(path), "sha256": file_sha256(path)}


def load_backbone(module, arch: str, weights: bool | str | Path, prefix: str, skip: tuple[str, ...]) -> dict[str, Any]:
    """Load ImageNet weights into `module` (keys under `prefix` of the torchvision model, minus `skip`).

    Returns the provenance dict recorded with every run; every backbone tensor must match.
    """
    sd, prov = imagenet_state_dict(arch, weights)
    sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix) and not k.startswith(skip)}
    own = module.state_dict()
    # old checkpoints (torchvision's DenseNet file among them) carry no BatchNorm step counters
    for k in own:
        if k.endswith("num_batches_tracked") and k not in sub:
            sub[k] = own[k]
    missing = [k for k in own if k not in sub]
    unexpected = [k for k in sub if k not in own]
    bad = [k for k in sub if k in own and tuple(sub[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ModelError(
            f"weights {prov['path']} do not fit {arch}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(bad)} mis-shaped tensors (first: {(missing + unexpected + bad)[0]})"
        )
    module.load_state_dict(sub, strict=True)
    return prov
