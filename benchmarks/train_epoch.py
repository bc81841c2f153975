"""One epoch of the paper-15c training loop per paper model, on a phantom training set of the paper's size
(15,249 images, resident on the device), with cxrbench's own loader and `fit` (bf16 autocast, channels_last
and CUDA-graph training steps on a GPU, SGD momentum 0.9, lr 0.01, batch 32). Reports training images/s and the
projected wall time of the whole protocol (3 folds + the final run, 8 epochs each). Writes
benchmarks/results/train_epoch-<machine>.json.

    python benchmarks/train_epoch.py --models densenet121,resnet50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402

PAPER_TRAIN = 15249
PAPER_TRAINVAL = 16944
PAPER_VAL = 1695
PAPER_TEST = 6112


def phantom_images(n: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """n images made from a few rendered phantoms (shifted and rescaled), at the cache resolution."""
    from cxrbench.data.synth import plan, render

    base = []
    ims = plan(16, seed, odd=False)
    for i, im in enumerate(ims):
        px = render(im, seed, i)
        base.append((px.reshape(size, 1024 // size, size, 1024 // size).mean((1, 3)) * 255).astype(np.uint8))
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        out[i] = np.roll(base[i % len(base)], (int(rng.integers(-16, 17)), int(rng.integers(-16, 17))), (0, 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="densenet121,resnet50,densenet121_attA,densenet121_attB")
    ap.add_argument("--n", type=int, default=PAPER_TRAIN)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from cxrbench.engine.loader import ResidentLoader, View
    from cxrbench.engine.train import TrainConfig, fit
    from cxrbench.models import create_model
    from cxrbench.protocols import get_protocol

    p = get_protocol("paper-15c")
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    if gpu:
        torch.backends.cudnn.benchmark = True
    n = args.n if gpu else min(args.n, 64)
    imgs = torch.from_numpy(phantom_images(n)).to(device)
    rng = np.random.default_rng(1)
    y = torch.from_numpy((rng.random((n, 15)) < 0.15).astype(np.float32)).to(device)
    f = torch.zeros(n, 5, device=device)
    view = View(p.image_size, p.resize, p.crop, augment=False, channels_last=gpu)
    res = {"device": device, "protocol": p.key, "train_images": n, "batch": p.batch_size, "models": {}}
    per_protocol = p.epochs * (p.n_folds * PAPER_TRAIN + PAPER_TRAINVAL)
    variants = [(m, False) for m in args.models.split(",")] + (
        [(m, True) for m in args.models.split(",")] if args.compile and gpu else []
    )
    for name, comp in variants:
        torch.manual_seed(0)
        model = create_model(name, num_classes=15).to(device)
        if gpu:
            model = model.to(memory_format=torch.channels_last)
        run_model = torch.compile(model) if comp else model
        cfg = TrainConfig(
            lr=0.01,
            momentum=p.momentum,
            weight_decay=0.0,
            epochs=1,
            device=device,
            nonimage=False,
            amp=gpu,
            channels_last=gpu,
            cuda_graphs=gpu and not comp,
        )
        loader = ResidentLoader(imgs, y, f, view, p.batch_size, device, shuffle=True, seed=0)
        # warm-up: 20 full batches and one of the epoch's last, partial size (cuDNN autotunes each shape once)
        m_warm = p.batch_size * 20 + n % p.batch_size
        warm = ResidentLoader(imgs[:m_warm], y[:m_warm], f[:m_warm], view, p.batch_size, device, shuffle=True, seed=0)
        t0 = time.perf_counter()
        fit(run_model, warm, cfg, None)  # warm-up: cuDNN autotuning (and compilation)
        warm_s = time.perf_counter() - t0
        state = fit(run_model, loader, cfg, None)
        rate = state.train_images / state.train_seconds
        key = name + (" (torch.compile)" if comp else "")
        res["models"][key] = {
            "train_images_per_s": round(rate, 1),
            "epoch_seconds": round(state.train_seconds, 2),
            "warmup_seconds": round(warm_s, 1),
            "projected_protocol_training_minutes": round(per_protocol / rate / 60, 2),
        }
        print(
            f"{key:32s} one epoch of {n:,} images: {state.train_seconds:6.1f} s, {rate:,.0f} images/s; "
            f"paper-15c training ({per_protocol:,} images) projected {per_protocol / rate / 60:.1f} min",
            flush=True,
        )
    res["protocol_training_images"] = per_protocol
    print(f"wrote {write_result('train_epoch', res, args.out)}")


if __name__ == "__main__":
    main()
