"""Training-step throughput of the paper's models (forward, backward, SGD step): images/s at 224 px, bf16
autocast and channels_last on a GPU at batch 32 and 64, eager and replayed as a CUDA graph (fp32 eager on a
CPU, batch 8, for reference only). Writes benchmarks/results/models-<machine>.json.

    python benchmarks/models.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402

MODELS = ("resnet50", "densenet121", "densenet121_attA", "densenet121_attB")


def throughput(name: str, device: str, batch: int, steps: int, warmup: int, graphs: bool) -> float:
    """Training steps/s x batch, through cxrbench's own step (GraphStep: eager, or captured as a CUDA graph)."""
    from cxrbench.engine.loader import Batch
    from cxrbench.engine.train import GraphStep, TrainConfig
    from cxrbench.models import create_model

    gpu = device.startswith("cuda")
    torch.manual_seed(0)
    m = create_model(name).to(device)
    if gpu:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    b = Batch(
        x,
        (torch.rand(batch, 15, device=device) < 0.2).float(),
        torch.zeros(batch, 5, device=device),
        torch.arange(batch),
    )
    cfg = TrainConfig(
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        epochs=1,
        device=device,
        nonimage=False,
        amp=gpu,
        channels_last=gpu,
        cuda_graphs=graphs,
    )
    step = GraphStep(m, opt, cfg) if graphs else (lambda bb: GraphStep(m, opt, cfg).eager(bb))
    for _ in range(warmup):
        step(b)
    if gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step(b)
    if gpu:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    batch, steps, warmup = (64, 30, 8) if gpu else (8, 3, 1)
    if gpu:
        torch.backends.cudnn.benchmark = True
    res = {"device": device, "precision": "bf16 autocast, channels_last" if gpu else "fp32", "images_per_s": {}}
    for name in MODELS:
        for bs in (32, 64) if gpu else (batch,):
            for graphs in (False, True) if gpu else (False,):
                r = throughput(name, device, bs, steps, warmup, graphs)
                key = f"{name} batch {bs} {'cuda-graph' if graphs else 'eager'}"
                res["images_per_s"][key] = round(r, 1)
                print(f"{key:42s} forward+backward+SGD at 224 px: {r:,.0f} images/s", flush=True)
    print(f"wrote {write_result('models', res, args.out)}")


if __name__ == "__main__":
    main()
