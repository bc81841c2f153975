"""Loader throughput: the reference pipeline against cxrbench's loader on the same images, in one run.

  reference  PIL decode of each PNG, Resize(256), CenterCrop(224), ToTensor, Normalize, in a torch
             DataLoader with 2 workers, batch 32 (what the reference paper's code does every epoch)
  cxrbench   the same images from a cxrbench cache, resident as uint8, batch 32: gather + centre crop +
             3 channels + ImageNet normalisation on the device (CPU here; GPU where present)
On a GPU it also times the resident loader alone with augmentation (random crop + flip) at batch 256.
Prints images/s and the ratio; writes benchmarks/results/loader-<machine>.json.

    python benchmarks/loader.py --n 1000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import Timer, write_result  # noqa: E402
from benchmarks.cache_build import make_dataset  # noqa: E402


class ReferenceDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        from torchvision import transforms

        self.paths = paths
        self.tf = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), torch.zeros(15)


def reference_rate(paths: list[Path], workers: int) -> float:
    dl = torch.utils.data.DataLoader(ReferenceDataset(paths), batch_size=32, num_workers=workers, shuffle=True)
    n = 0
    with Timer() as t:
        for x, _ in dl:
            n += x.shape[0]
    return n / t.seconds


def cxrbench_rate(store, device: str, augment: bool, batch: int, min_seconds: float = 3.0) -> float:
    from cxrbench.engine.loader import ResidentLoader, View

    n = store.n_images
    imgs = torch.from_numpy(store.read(np.arange(n))).to(device)
    y = torch.zeros(n, 15, device=device)
    f = torch.zeros(n, 5, device=device)
    view = View(256, 256, 224, augment=augment, channels_last=device.startswith("cuda"))
    ld = ResidentLoader(imgs, y, f, view, batch, device, shuffle=True, seed=0)
    for _ in ld:  # warm-up
        pass
    seen, epoch = 0, 0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    with Timer() as t:
        while True:
            ld.set_epoch(epoch)
            for b in ld:
                seen += b.x.shape[0]
            epoch += 1
            sync()
            import time

            if time.perf_counter() - t.t > min_seconds:
                break
    return seen / t.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images (jittered replicas of the real PNGs)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference pipeline")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from cxrbench.cache.build import build_cache
    from cxrbench.cache.store import open_cache

    work = args.work or Path(tempfile.mkdtemp(prefix="cxr-loader-"))
    paths = make_dataset(work, args.n, 0)[: args.n]
    cache = work / "loader-cache"
    if not cache.exists():
        build_cache(work / "real", cache)
    store = open_cache(cache)
    ref = reference_rate(paths, args.workers)
    print(f"reference pipeline (PIL + torchvision, DataLoader {args.workers} workers): {ref:,.0f} images/s", flush=True)
    res = {"images": args.n, "reference_workers": args.workers, "reference_images_per_s": round(ref, 1)}
    cpu = cxrbench_rate(store, "cpu", augment=False, batch=32)
    res["cxrbench_cpu_images_per_s"] = round(cpu, 1)
    res["cpu_vs_reference"] = round(cpu / ref, 1)
    print(
        f"cxrbench resident loader on the CPU (centre crop, normalised float32, batch 32): {cpu:,.0f} images/s "
        f"-> {cpu / ref:.1f}x the reference",
        flush=True,
    )
    if torch.cuda.is_available():
        for aug, batch in ((False, 32), (True, 32), (True, 256)):
            r = cxrbench_rate(store, "cuda", augment=aug, batch=batch)
            key = f"cxrbench_gpu_{'augmented' if aug else 'centre'}_batch{batch}_images_per_s"
            res[key] = round(r, 1)
            print(
                f"cxrbench resident loader on the GPU ({'random crop + flip' if aug else 'centre crop'}, "
                f"batch {batch}): {r:,.0f} images/s -> {r / ref:.0f}x the reference",
                flush=True,
            )
    print(f"wrote {write_result('loader', res, args.out)}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
