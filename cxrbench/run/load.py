"""Stage 2, load: the run's images, read from the cache once. The result says how batches will be made:
`Resident` (every image of the run in device memory, the default where they fit), `Streamed` (chunks read
from the cache as batches are needed) or `Sharded` (DDP: each loader keeps this rank's share of its split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cxrbench.errors import ConfigError
from cxrbench.run.context import RunContext


@dataclass
class Images:
    """How a run's images reach its models; `loader(ctx, rows, train)` gives the batches of some of them."""

    mode: ClassVar[str] = ""

    def loader(self, ctx: RunContext, local_rows: np.ndarray, train: bool):
        raise NotImplementedError

    def pixels(self, ctx: RunContext, local_rows: np.ndarray):
        """uint8 images (N, S, S) of the given rows, as a torch tensor (on the device where resident)."""
        import torch

        return torch.from_numpy(ctx.store.read(ctx.bound.positions[local_rows]))


def batch_size(ctx: RunContext, train: bool) -> int:
    """The protocol's batch for training (split over the ranks); scoring batches change nothing but speed
    (eval-mode BatchNorm), so they are larger on a GPU."""
    if train or not ctx.device.startswith("cuda"):
        return ctx.protocol.batch_size // ctx.world
    return 256


@dataclass
class Resident(Images):
    """Every image of the run as one uint8 tensor on the device, with labels and features beside it."""

    mode: ClassVar[str] = "resident"
    images: Any  # torch.Tensor (n, S, S) uint8
    labels: Any  # torch.Tensor (n, C) float32
    features: Any  # torch.Tensor (n, 5) float32

    def loader(self, ctx: RunContext, local_rows: np.ndarray, train: bool):
        from cxrbench.engine.loader import ResidentLoader

        return ResidentLoader(
            self.images,
            self.labels,
            self.features,
            ctx.view(train),
            batch_size(ctx, train),
            ctx.device,
            shuffle=train,
            seed=ctx.seed,
            rows=local_rows,
        )

    def pixels(self, ctx: RunContext, local_rows: np.ndarray):
        import torch

        return self.images.index_select(0, torch.as_tensor(np.asarray(local_rows, np.int64), device=self.images.device))


@dataclass
class Streamed(Images):
    """Nothing held: each loader streams its split's chunks from the cache (chunk-level shuffle)."""

    mode: ClassVar[str] = "stream"

    def loader(self, ctx: RunContext, local_rows: np.ndarray, train: bool):
        from cxrbench.engine.loader import StreamingLoader

        return StreamingLoader(
            ctx.store,
            ctx.bound.positions[local_rows],
            ctx.labels[local_rows],
            ctx.features[local_rows],
            ctx.view(train),
            batch_size(ctx, train),
            ctx.device,
            shuffle=train,
            seed=ctx.seed,
        )


@dataclass
class Sharded(Images):
    """DDP: this rank keeps every world-th image of a split resident, read when its loader is made (shards
    differ by at most one image; training takes the same number from each, so every rank runs the same number
    of steps)."""

    mode: ClassVar[str] = "sharded"

    def loader(self, ctx: RunContext, local_rows: np.ndarray, train: bool):
        import torch

        from cxrbench.engine.loader import ResidentLoader

        world, rank = ctx.world, ctx.rank
        local_rows = np.asarray(local_rows)
        mine = np.arange(rank, len(local_rows), world)
        rows = local_rows[mine]
        imgs = torch.from_numpy(ctx.store.read(ctx.bound.positions[rows])).to(ctx.device)
        return ResidentLoader(
            imgs,
            ctx.labels[rows],
            ctx.features[rows],
            ctx.view(train),
            batch_size(ctx, train),
            ctx.device,
            shuffle=train,
            seed=ctx.seed + 7919 * rank,
            index_map=mine,
            limit=len(local_rows) // world if train else None,
        )


def load(ctx: RunContext) -> Images:
    """Read the run's images as `--loader` says (auto: resident where half the free device memory holds them)."""
    import torch

    from cxrbench.engine.loader import fits_on

    b = ctx.bound
    nbytes = len(b.positions) * ctx.store.size**2
    mode = ctx.opts.loader
    if mode == "auto":
        mode = "resident" if fits_on(torch.device(ctx.device), nbytes // ctx.world) else "stream"
    if mode == "stream" and ctx.dist is not None:
        raise ConfigError(
            "streaming from the cache is not available under DDP: each rank keeps its shard "
            "resident; use more processes (smaller shards) or devices with more memory"
        )
    if mode == "stream":
        return Streamed()
    ctx.info(
        f"loading {len(b.positions):,} images ({nbytes / 2**30:.2f} GiB) from the cache into "
        f"{'GPU memory' if ctx.device.startswith('cuda') else 'RAM'}"
    )
    if ctx.dist is not None:
        return Sharded()
    return Resident(
        torch.from_numpy(ctx.store.read(b.positions)).to(ctx.device),
        torch.as_tensor(ctx.labels, dtype=torch.float32).to(ctx.device),
        torch.as_tensor(ctx.features, dtype=torch.float32).to(ctx.device),
    )


def epoch_images(n_rows: int, world: int, train: bool = True) -> int:
    """Images one epoch trains on over every rank: all rows in one process, an equal share per rank under DDP."""
    return n_rows if world == 1 or not train else (n_rows // world) * world
