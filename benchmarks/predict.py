"""`predict`'s speed on real 1024x1024 originals: cxrbench's path against the usual Pillow + torchvision one,
with the same DenseNet-121 on the CPU, in one run; and the start-up of `cxrbench predict` on one image.

    CXRBENCH_REAL_DATA=/data/nih/real python benchmarks/predict.py --n 100 --note "idle"

Both paths score the same PNG files in batches of `--batch` with the same model (densenet121, 15 classes,
random initialisation under a fixed seed: the speed of a forward pass does not depend on the weights, and no
ImageNet weights need to be on the machine):

- cxrbench: `Run.decode` (the cache build's PNG decode and bilinear resize to 256) then `Run.probabilities`
  (the loader's centre crop to 224, grey to three channels, ImageNet normalisation, the model, the sigmoid) -
  the methods of `cxrbench.api.Run` that `cxrbench predict` calls, under paper-15c@v2's preprocessing;
- baseline: `Image.open(...).convert("RGB")`, `Resize(256)`, `CenterCrop(224)`, `ToTensor()`, `Normalize` per
  image, `torch.stack`, the model, the sigmoid.

Batches of the two paths alternate, so machine noise falls on both. Each path's time is split into its
decode + preprocessing share and its model share. The start-up is a `cxrbench predict RUN one.png` subprocess
on a densenet121 run folder trained under `smoke` (64-pixel crops; made here on 24 real originals), its wall
time, and, in another subprocess, the time of its parts: imports, `load_run` (verification), model load, one
prediction.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import RESULTS, git_commit, machine, machine_tag  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

STARTUP = r"""
import sys, time
t0 = time.perf_counter()
import torch
from cxrbench.api import load_run
t1 = time.perf_counter()
r = load_run(sys.argv[1])
t2 = time.perf_counter()
net = r.model("cpu")
t3 = time.perf_counter()
r.predict(sys.argv[2], model=net)
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, without decoding it."""
    head = path.read_bytes()[:24]
    return struct.unpack(">II", head[16:24])


def originals(n: int) -> list[Path]:
    """The first `n` 1024x1024 PNG originals of CXRBENCH_REAL_DATA/images (as MANIFEST.tsv lists them)."""
    env = os.environ.get("CXRBENCH_REAL_DATA")
    if not env:
        raise SystemExit("set CXRBENCH_REAL_DATA to a folder with MANIFEST.tsv and images/ (the real NIH originals)")
    root = Path(env)
    names = [line.split("\t", 1)[0] for line in (root / "MANIFEST.tsv").read_text().splitlines()[1:] if line]
    found = [root / "images" / x for x in names if png_size(root / "images" / x) == (1024, 1024)]
    if len(found) < n:
        raise SystemExit(f"only {len(found)} 1024x1024 originals in {root / 'images'}, {n} asked for")
    return found[:n]


def throughput(paths: list[Path], batch: int) -> dict:
    """Both paths over `paths`, batch by batch alternating; seconds per path and part."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from cxrbench.api import Preprocess, Run
    from cxrbench.models import create_model
    from cxrbench.protocols import get_protocol

    p = get_protocol("paper-15c")
    torch.manual_seed(0)
    net = create_model("densenet121", num_classes=p.num_classes, pretrained=False).eval()
    # the methods of cxrbench.api.Run that `cxrbench predict` calls, on what they read of a run: its protocol,
    # preprocessing, model name and classes (a finished densenet121 run needs hours of training on this CPU)
    run = SimpleNamespace(
        protocol=p,
        transform=Preprocess(p.image_size, p.resize, p.crop),
        record=SimpleNamespace(model=SimpleNamespace(name="densenet121")),
        classes=tuple(f"class{i}" for i in range(p.num_classes)),
    )
    baseline_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])

    def ours(chunk):
        t0 = time.perf_counter()
        import numpy as np

        pixels = np.stack([Run.decode(run, x) for x in chunk])  # type: ignore[arg-type]
        t1 = time.perf_counter()
        probs = Run.probabilities(run, net, pixels, "cpu", batch)  # type: ignore[arg-type]
        return t1 - t0, time.perf_counter() - t1, probs

    def theirs(chunk):
        t0 = time.perf_counter()
        x = torch.stack([baseline_tf(Image.open(f).convert("RGB")) for f in chunk])
        t1 = time.perf_counter()
        with torch.no_grad():
            probs = torch.sigmoid(net(x)).numpy()
        return t1 - t0, time.perf_counter() - t1, probs

    ours(paths[:1]), theirs(paths[:1])  # warm-up: first calls, allocator
    acc = {"cxrbench": [0.0, 0.0], "baseline": [0.0, 0.0]}
    shapes = set()
    for i in range(0, len(paths), batch):
        chunk = paths[i : i + batch]
        for name, fn in (
            (("cxrbench", ours), ("baseline", theirs))
            if (i // batch) % 2 == 0
            else (
                ("baseline", theirs),
                ("cxrbench", ours),
            )
        ):
            d, m, probs = fn(chunk)
            acc[name][0] += d
            acc[name][1] += m
            shapes.add(probs.shape[1])
    assert shapes == {p.num_classes}
    out = {}
    for name, (d, m) in acc.items():
        out[name] = {
            "seconds": round(d + m, 2),
            "decode_preprocess_seconds": round(d, 2),
            "model_seconds": round(m, 2),
            "images_per_s": round(len(paths) / (d + m), 3),
            "decode_share": round(d / (d + m), 4),
            "decode_images_per_s": round(len(paths) / d, 1),
        }
    return out


def train_run(workdir: Path) -> tuple[Path, float]:
    """A densenet121 run under smoke on 24 real originals in `workdir`: (run folder, seconds it took)."""
    from benchmarks.paper_size import default_sources, lay_out
    from cxrbench.cache.build import build_cache
    from cxrbench.run import RunOptions, run

    lay_out(workdir / "nih", default_sources(), n=24)
    build_cache(workdir / "nih", workdir / "cache", workers=1)
    t = time.perf_counter()
    opts = RunOptions(
        model="densenet121", protocol="smoke", cache=str(workdir / "cache"), out=str(workdir / "runs"), device="cpu"
    )
    rec = run(opts)
    if rec is None:
        raise SystemExit("the densenet121 smoke run wrote no record")
    return rec.parent, time.perf_counter() - t


def startup(run_dir: Path, image: Path, trained: float | None) -> dict:
    """`cxrbench predict RUN_DIR IMAGE` as a subprocess (median wall time of 3, after one to warm the page cache)
    and, in another, the time of its parts."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "cxrbench", "predict", str(run_dir), str(image)]
    subprocess.run(cmd, capture_output=True, check=True, env=env)  # once to warm the page cache
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env)
        walls.append(time.perf_counter() - t)
    parts = subprocess.run(
        [sys.executable, "-c", STARTUP, str(run_dir), str(image)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    python = time.perf_counter() - t
    imports, load, model, one = (float(x) for x in parts)
    return {
        "run": "densenet121 under smoke@v1 (random init, 64-pixel crops) on 24 real originals"
        + ("" if trained is None else f", trained by this script in {trained:.0f} s"),
        "image": "one 1024x1024 real original",
        "cxrbench_predict_one_image_wall_seconds_median_of_3": round(sorted(walls)[1], 2),
        "parts_seconds": {
            "python_start": round(python, 3),
            "import_torch_and_cxrbench_api": round(imports, 2),
            "load_run_verify": round(load, 2),
            "model_load_checkpoint": round(model, 2),
            "one_prediction": round(one, 2),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="1024x1024 originals to score (each path once)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--note", default="", help="the machine's state, recorded (e.g. 'loaded by other jobs')")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    ap.add_argument(
        "--run", type=Path, default=None, help="a finished densenet121 smoke run for the start-up (default: train one)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from cxrbench.files import atomic_write_json

    load_before = [round(x, 2) for x in os.getloadavg()]
    paths = originals(args.n)
    res = throughput(paths, args.batch)
    start = None
    if not args.no_startup:
        with tempfile.TemporaryDirectory() as tmp:
            folder, trained = (args.run, None) if args.run is not None else train_run(Path(tmp))
            start = startup(folder, paths[0], trained)
    ratio = res["cxrbench"]["images_per_s"] / res["baseline"]["images_per_s"]
    decode_ratio = res["baseline"]["decode_preprocess_seconds"] / res["cxrbench"]["decode_preprocess_seconds"]
    result = {
        "benchmark": "predict",
        "machine": {
            **machine(),
            "torch_threads": torch.get_num_threads(),
            "state": args.note,
            "load_average_1_5_15_min_before": load_before,
            "load_average_1_5_15_min_after": [round(x, 2) for x in os.getloadavg()],
        },
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "inputs": f"{len(paths)} real NIH ChestX-ray14 originals, 1024x1024 PNG, from $CXRBENCH_REAL_DATA/images",
        "model": "densenet121, 15 classes, random initialisation (seed 0; no ImageNet weights on this machine), "
        "eval mode, CPU, float32",
        "batch": args.batch,
        "preprocessing": "cxrbench: paper-15c@v2 (decode, bilinear resize to 256, centre crop 224); baseline: "
        "Pillow open + convert RGB, Resize(256), CenterCrop(224), ToTensor, Normalize",
        "paths": res,
        "ratio_cxrbench_vs_baseline_images_per_s": round(ratio, 3),
        "ratio_cxrbench_vs_baseline_decode_preprocess_images_per_s": round(decode_ratio, 2),
        "startup": start,
    }
    path = args.out or RESULTS / f"predict-{machine_tag()}.json"
    atomic_write_json(path, result)
    for name, r in res.items():
        print(
            f"{name:9s} {r['images_per_s']:.2f} images/s ({r['seconds']:.1f} s for {len(paths)}; decode + "
            f"preprocessing {r['decode_share']:.1%} of it, {r['decode_images_per_s']:.0f} images/s alone)"
        )
    print(f"cxrbench / baseline: {ratio:.3f}x end to end, {decode_ratio:.2f}x for decode + preprocessing alone")
    if start is not None:
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in start["parts_seconds"].items())
        wall = start["cxrbench_predict_one_image_wall_seconds_median_of_3"]
        print(f"cxrbench predict on one image: {wall:.2f} s ({parts})")
    print(f"load average {os.getloadavg()[0]:.1f} (before: {load_before[0]:.1f}); wrote {path}")


if __name__ == "__main__":
    main()
