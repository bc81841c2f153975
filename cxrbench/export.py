"""A finished run's model as one self-contained TorchScript file: a uint8 grey batch (B, S, S) at the cache's size
in, probabilities (B, C) out, with the run's preprocessing inside - the loader's own `Transform` (resize, centre
crop, grey to three channels, ImageNet normalisation), traced, not re-implemented - and a JSON beside it that says
what goes in and comes out. The export checks itself: the loaded file against the PyTorch model on the run's test
images, read from the run's cache, and the largest difference is stated."""

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

FORMATS = ("torchscript",)
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
    from cxrbench.files import atomic_open, atomic_write_text
    from cxrbench.models import get_spec

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    if get_spec(run.record.model.name).nonimage:
        raise ConfigError(
            f"model {run.record.model.name} also takes the non-image features; an image-only export of it is "
            "not available"
        )
    out = Path(out)
    if out.suffix == ".json":
        raise ConfigError(f"{out}: the model file's name must not end in .json (the description goes there)")
    names, pixels = check_pixels(run, cache, check_images)  # before anything is written
    p = run.protocol
    net = run.model("cpu")
    packaged = Packaged(net, p.image_size, p.resize, p.crop).eval()
    example = torch.from_numpy(pixels[: min(2, len(pixels))].copy())
    with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; it is what loads without Python code
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(packaged, example, check_trace=False)
        with atomic_open(out) as fh:
            torch.jit.save(traced, fh)
        loaded = torch.jit.load(str(out), map_location="cpu")
    with torch.no_grad():
        got = np.concatenate(
            [loaded(torch.from_numpy(pixels[i : i + 16].copy())).numpy() for i in range(0, len(pixels), 16)]
        )
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
    info_path = out.with_suffix(".json")
    atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
    return Exported(out, info_path, len(names), diff)
