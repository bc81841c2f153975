"""A finished run's model as one self-contained TorchScript (or ONNX) file: a uint8 grey batch (B, S, S) at the
cache's size in, probabilities (B, C) out, with the run's preprocessing inside - the loader's own `Transform`
(resize, centre crop, grey to three channels, ImageNet normalisation), traced, not re-implemented - and a JSON
beside it that says what goes in and comes out. The export checks itself: the written file, loaded back, against
the PyTorch model on the run's test images, read from the run's cache, and the largest difference is stated."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrbench.errors import ConfigError, RecordError

FORMATS = ("torchscript", "onnx")
CHECK_IMAGES = 64  # test images the check runs on at most (spread over the test split)


class Packaged(nn.Module):
    """The run's model behind its preprocessing and sigmoid: uint8 (B, S, S) -> probabilities (B, C)."""

    def __init__(self, model: nn.Module, image_size: int, resize: int, crop: int) -> None:
        super().__init__()
        from cxrbench.engine.loader import Transform, View

        self.model = model
        self.transform = Transform(View(image_size, resize, crop, augment=False), torch.device("cpu"))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(self.transform(images, None))
        logits = out[0] if isinstance(out, (tuple, list)) else out
        return torch.sigmoid(logits.float())


@dataclass(frozen=True)
class Exported:
    """What `export_run` wrote and how the check went."""

    model: Path
    info: Path
    checked_images: int
    max_abs_diff: float


def check_pixels(run: Any, cache: str | None, limit: int = CHECK_IMAGES) -> tuple[list[str], np.ndarray]:
    """Up to `limit` of the run's test images (evenly spread, in test order) as the cache holds them; the cache is
    `cache` or the one in the run's run.json, and must be the cache the run recorded (its fingerprint)."""
    from cxrbench.cache.store import open_cache

    where = cache or run.settings.get("cache_path")
    if not isinstance(where, str) or not Path(where).is_dir():
        raise ConfigError(
            f"{run.path}: the export checks itself on the run's test images, and the cache the run used is not "
            "here; pass --cache with it"
        )
    store = open_cache(where)
    if store.fingerprint != run.record.data.cache_fingerprint:
        raise RecordError(
            f"{where}: this is not the cache the run used (fingerprint {store.fingerprint} vs "
            f"{run.record.data.cache_fingerprint}); pass --cache"
        )
    images = run.test.images
    pick = np.unique(np.linspace(0, len(images) - 1, min(limit, len(images))).round().astype(int))
    names = [images[i] for i in pick]
    pos_of = {str(n): i for i, n in enumerate(store.names())}
    missing = [n for n in names if n not in pos_of]
    if missing:
        raise RecordError(f"{where}: test image {missing[0]} of the run is not in this cache")
    return names, store.read(np.array([pos_of[n] for n in names], np.int64))


def export_run(
    run: Any, out: str | Path, fmt: str = "torchscript", cache: str | None = None, check_images: int = CHECK_IMAGES
) -> Exported:
    """Export `run` (a `cxrbench.api.Run`) to `out` (the model) and `out` with suffix .json (what it is), then
    load the file back and compare it with the PyTorch model on the run's test images."""
    from cxrbench import __version__
    from cxrbench.files import atomic_write_text
    from cxrbench.models import get_spec

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "onnx":
        _onnx_modules()  # asked for before anything is built or written
    if get_spec(run.record.model.name).nonimage:
        raise ConfigError(
            f"model {run.record.model.name} also takes the non-image features; an image-only export of it is "
            "not available"
        )
    out = Path(out)
    if out.suffix == ".json":
        raise ConfigError(f"{out}: the model file's name must not end in .json (the description goes there)")
    info_path = out.with_suffix(".json")
    _replaceable(info_path)
    names, pixels = check_pixels(run, cache, check_images)  # before anything is written
    p = run.protocol
    net = run.model("cpu")
    packaged = Packaged(net, p.image_size, p.resize, p.crop).eval()
    example = torch.from_numpy(pixels[: min(2, len(pixels))].copy())
    if fmt == "onnx":
        got = _onnx(packaged, example, out, pixels)
    else:
        got = _torchscript(packaged, example, out, pixels)
    want = run.probabilities(net, pixels, "cpu")
    diff = float(np.abs(got - want).max())
    rec = run.record
    info = {
        "format": fmt,
        "file": out.name,
        "run_id": rec.run_id,
        "record_sha256": rec.record_sha256,
        "model": rec.model.name,
        "protocol": p.key,
        "protocol_hash": rec.protocol.hash,
        "classes": list(run.classes),
        "input": {
            "dtype": "uint8",
            "shape": ["batch", p.image_size, p.image_size],
            "pixels": f"grey X-ray decoded and resized to {p.image_size} px as the cxrbench cache does "
            f"({p.resample} resampling); cxrbench.api.Run.decode makes them from PNG, JPEG or DICOM files",
        },
        "output": {
            "dtype": "float32",
            "shape": ["batch", len(run.classes)],
            "values": "sigmoid probabilities per class, in the order of classes",
        },
        "preprocessing_inside": {"resize": p.resize, "crop": p.crop, "normalisation": "ImageNet mean/std"},
        "check": {"test_images": len(names), "max_abs_diff_vs_pytorch": diff},
        "cxrbench_version": __version__,
    }
    if fmt == "onnx":
        info["onnx"] = {"opset": ONNX_OPSET, "input_name": "images", "output_name": "probabilities"}
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    return Exported(out, info_path, len(names), diff)


ONNX_OPSET = 17
_DESCRIPTION_KEYS = {"format", "file", "run_id", "record_sha256", "classes", "input", "output", "cxrbench_version"}


def _replaceable(path: Path) -> None:
    """An existing file at the description's name is replaced only when it is an earlier export's description
    (a JSON object with its keys); anything else there is someone's file: a ConfigError, before any write."""
    from cxrbench.files import read_regular

    if not path.exists() and not path.is_symlink():
        return
    try:
        got = json.loads(read_regular(path, 1 << 20, "the export description", ConfigError))
    except (ConfigError, ValueError):
        got = None
    if not isinstance(got, dict) or not set(got) >= _DESCRIPTION_KEYS:
        raise ConfigError(
            f"{path}: the export's description goes here, and this file is not an earlier export's description; "
            "move it away or give --out another name"
        )


def _batches(fn, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])


def _torchscript(packaged: Packaged, example: torch.Tensor, out: Path, pixels: np.ndarray) -> np.ndarray:
    """Trace, save (atomically), load back; the loaded file's probabilities on `pixels`."""
    from cxrbench.files import atomic_open

    with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; it is what loads without Python code
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(packaged, example, check_trace=False)
        with atomic_open(out) as fh:
            torch.jit.save(traced, fh)
        loaded = torch.jit.load(str(out), map_location="cpu")
    with torch.no_grad():
        return _batches(lambda x: loaded(torch.from_numpy(x.copy())).numpy(), pixels)


def _onnx_modules():
    """(onnx, onnxruntime), or a ConfigError that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'cxrbench[onnx]'") from None
    return onnx, onnxruntime


def _onnx(packaged: Packaged, example: torch.Tensor, out: Path, pixels: np.ndarray) -> np.ndarray:
    """Export with a dynamic batch (torch's TorchScript-based exporter), check the graph, save it atomically and
    run it with onnxruntime on `pixels`."""
    import io

    from cxrbench.files import atomic_write

    onnx, ort = _onnx_modules()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(
            packaged,
            (example,),
            buf,  # type: ignore[arg-type]  # the exporter writes to a file object too (torch's stub says path)
            dynamo=False,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    raw = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(raw))
    atomic_write(out, raw)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return _batches(lambda x: session.run(None, {"images": np.ascontiguousarray(x)})[0], pixels)
