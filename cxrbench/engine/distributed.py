"""Multi-process runs with DistributedDataParallel, launched by torchrun (`torchrun --nproc_per_node=K -m
cxrbench run ...`, or `cxrbench run --nproc K`, which re-executes itself under torchrun).

Each rank keeps its shard of the run's images resident (image i of the run belongs to rank i mod K); the
protocol's global batch and learning rate are kept (per-rank batch = batch / K, an error if it does not
divide); every rank trains on the same number of batches per epoch (shards are equalised to the smallest,
which drops at most K-1 images an epoch); evaluation gathers predictions on rank 0; only rank 0 writes
checkpoints and the record, which states the number of processes and the backend. BatchNorm statistics
are per rank, as usual with DDP, so results agree with one process within a tolerance, not bit for bit.

This module is the layer below the run's stages (`cxrbench.run`): they call it, it imports none of them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from cxrbench.errors import ConfigError


@dataclass
class Dist:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int
    backend: str
    device: str

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.device.startswith("cuda"):
            return DDP(model, device_ids=[self.local_rank], output_device=self.local_rank)
        return DDP(model)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def gather(self, probs: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's (probabilities, split positions), concatenated (each rank gets the whole)."""
        import torch.distributed as dist

        n = torch.tensor([probs.shape[0]], device=probs.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        m = int(max(s.item() for s in sizes))
        c = probs.shape[1] if probs.dim() == 2 else 0
        pad_p = torch.zeros((m, c), dtype=probs.dtype, device=probs.device)
        pad_i = torch.full((m,), -1, dtype=torch.long, device=probs.device)
        pad_p[: probs.shape[0]] = probs
        pad_i[: index.shape[0]] = index.to(probs.device)
        all_p = [torch.zeros_like(pad_p) for _ in range(self.world)]
        all_i = [torch.zeros_like(pad_i) for _ in range(self.world)]
        dist.all_gather(all_p, pad_p)
        dist.all_gather(all_i, pad_i)
        p = torch.cat([a[: int(s.item())] for a, s in zip(all_p, sizes)])
        i = torch.cat([a[: int(s.item())] for a, s in zip(all_i, sizes)])
        return p, i

    def reduce_sum(self, *values: float) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return [float(v) for v in t.tolist()]


def init_from_env(device: str) -> Dist:
    """Join the torchrun job described by RANK / WORLD_SIZE / LOCAL_RANK (NCCL on GPUs, gloo on CPUs)."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return Dist(rank, world, local, backend, device)


def check_batch(batch_size: int, world: int) -> int:
    """Per-rank batch; the global batch must split evenly."""
    if batch_size % world:
        raise ConfigError(
            f"the protocol's batch of {batch_size} does not divide into {world} processes; use a "
            f"process count that divides it"
        )
    return batch_size // world


def exec_torchrun(nproc: int) -> None:
    """Replace this process by `torchrun --nproc_per_node=K -m cxrbench <same arguments minus --nproc>`."""
    args = []
    skip = False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "cxrbench", *args]
    os.execv(sys.executable, cmd)
