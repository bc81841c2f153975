"""The installation's self-check: versions of the components cxrbench needs, a tiny check of each (a torchvision
op, a numba kernel, a zarr round trip, a forward pass of a registered model), and the fix for what is broken.

`require_torchvision` is the boundary check commands run before they write anything: one line naming what is
broken and how to fix it, instead of a traceback deep inside the first model built.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass

from cxrbench.errors import InstallError


@dataclass(frozen=True)
class Check:
    """One component: its version (or why there is none), whether its self-check passed, and the fix."""

    name: str
    version: str
    ok: bool
    detail: str = ""
    fix: str = ""


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "not installed"


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release series built for a torch release: torch 2.N goes with torchvision 0.(N+15)."""
    parts = torch_version.split("+")[0].split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return "the torchvision release built for it"
    return f"0.{minor + 15}.*" if major == 2 else "the torchvision release built for it"


def torchvision_fix() -> str:
    tv = _version("torch")
    return (
        f"install the pair built for each other: pip install 'torch=={tv.split('+')[0]}' "
        f"'torchvision=={matching_torchvision(tv)}' (the same index URL for both, e.g. "
        "--index-url https://download.pytorch.org/whl/cpu)"
    )


def _torchvision() -> str:
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    if keep.tolist() != [0]:
        raise RuntimeError(f"torchvision.ops.nms returned {keep.tolist()}, not [0]")
    return "torchvision.ops.nms"


def _torch() -> str:
    import torch

    x = torch.arange(6.0).reshape(2, 3)
    if float((x @ x.T).sum()) != 83.0:
        raise RuntimeError("a 2x3 matrix product gave a wrong sum")
    return "a matrix product"


def _numba() -> str:
    import numba
    import numpy as np

    @numba.njit(cache=False)
    def total(a):
        s = 0
        for v in a:
            s += v
        return s

    if total(np.arange(10, dtype=np.int64)) != 45:
        raise RuntimeError("a compiled sum gave a wrong result")
    return "a compiled kernel"


def _zarr() -> str:
    import tempfile

    import numpy as np
    import zarr

    with tempfile.TemporaryDirectory(prefix="cxrbench-doctor-") as tmp:
        a = zarr.open_array(tmp + "/a.zarr", mode="w", shape=(4, 8), chunks=(2, 8), dtype="uint8")
        a[:] = np.arange(32, dtype=np.uint8).reshape(4, 8)
        if not np.array_equal(zarr.open_array(tmp + "/a.zarr", mode="r")[:], a[:]):
            raise RuntimeError("an array read back differs from the one written")
    return "a write and read back"


def _model() -> str:
    import torch

    from cxrbench.models import create_model

    m = create_model("tiny", num_classes=15, pretrained=False).eval()
    with torch.no_grad():
        y = m(torch.zeros(2, 3, 64, 64))
    if tuple(y.shape) != (2, 15):
        raise RuntimeError(f"the tiny model gave shape {tuple(y.shape)}, not (2, 15)")
    return "a forward pass of `tiny`"


def _decoders() -> str:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    if not np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), np.arange(64).reshape(8, 8)):
        raise RuntimeError("a PNG read back differs")
    return "a PNG round trip (Pillow)"


def _run(name: str, version: str, check: Callable[[], str], fix: str) -> Check:
    try:
        return Check(name, version, True, check())
    except Exception as e:  # the point of a self-check: whatever breaks is reported, not raised
        return Check(name, version, False, f"{type(e).__name__}: {' '.join(str(e).split())}", fix)


def checks() -> list[Check]:
    """Every component's version and self-check."""
    reinstall = "pip install -e . (in the clone) installs it"
    out = [
        Check("python", platform.python_version(), sys.version_info >= (3, 11), "3.11 or newer"),
        _run("torch", _version("torch"), _torch, "pip install torch (see the README's setup)"),
        _run("torchvision", _version("torchvision"), _torchvision, torchvision_fix()),
        _run("numba", _version("numba"), _numba, f"numba: {reinstall}"),
        _run("zarr", _version("zarr"), _zarr, f"zarr: {reinstall}"),
        _run(
            "decoders",
            ", ".join(f"{m} {_version(m)}" for m in ("pillow", "pyspng", "imagecodecs", "opencv-python-headless")),
            _decoders,
            f"pillow: {reinstall}",
        ),
        _run("model", "tiny", _model, "the model check needs torch and torchvision working: fix those first"),
    ]
    return out


def devices() -> list[str]:
    """The devices torch sees."""
    import os

    out = [f"cpu: {os.cpu_count()} cores"]
    try:
        import torch

        for i in range(torch.cuda.device_count()):
            out.append(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
        if not torch.cuda.is_available():
            out.append("cuda: none available")
    except Exception as e:  # a broken torch is named by its own check
        out.append(f"cuda: unknown ({type(e).__name__})")
    return out


_TORCHVISION_OK: bool = False


def require_torchvision() -> None:
    """Raise InstallError (one line: what is broken, the fix) unless torch and torchvision import and work."""
    global _TORCHVISION_OK
    if _TORCHVISION_OK:
        return
    for name, check, fix in (
        ("torch", _torch, "pip install torch (see the README's setup)"),
        ("torchvision", _torchvision, None),
    ):
        try:
            check()
        except Exception as e:
            why = " ".join(str(e).split())
            raise InstallError(
                f"{name} {_version(name)} is broken ({type(e).__name__}: {why}); "
                f"{fix or torchvision_fix()}; `cxrbench doctor` checks the whole install"
            ) from e
    _TORCHVISION_OK = True
