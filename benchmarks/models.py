"""Forward + backward throughput of the paper's models: images/s at 224 px, batch 64, bf16 autocast and
channels_last on a GPU (fp32 on a CPU, batch 8, for reference only). Writes benchmarks/results/models-<machine>.json.

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


def throughput(name: str, device: str, batch: int, steps: int, warmup: int) -> float:
    from cxrbench.models import create_model

    gpu = device.startswith("cuda")
    m = create_model(name).to(device)
    if gpu:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 15, device=device) < 0.2).float()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu):
            out = m(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
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
    res = {"device": device, "batch": batch, "precision": "bf16 autocast, channels_last" if gpu else "fp32",
           "images_per_s": {}}
    for name in MODELS:
        r = throughput(name, device, batch, steps, warmup)
        res["images_per_s"][name] = round(r, 1)
        print(f"{name:18s} forward+backward at 224 px, batch {batch}: {r:,.0f} images/s", flush=True)
    print(f"wrote {write_result('models', res, args.out)}")


if __name__ == "__main__":
    main()
