"""The typed objects a run's stages hand on: `Bound` (the protocol's splits on the cache) and `RunContext`
(everything `bind` resolved, passed to every later stage). Stage results live beside their stages:
`load.Images`, `fit.Trained`, `score.Scored`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.run.options import RunOptions
from cxrbench.run.timing import StageClock


@dataclass
class Bound:
    """A protocol's splits bound to cache positions, with labels, features and patients per split row."""

    store: Any  # cxrbench.cache.store.CacheStore
    metadata: Any  # cxrbench.data.metadata.Metadata of the cache's own tables
    splits: Any  # cxrbench.data.splits.Splits
    classes: tuple[str, ...]
    metadata_layout: Any  # the cache's tables as a DatasetLayout (BBox CSV, lists)
    rows: np.ndarray  # metadata rows of every image the run uses (sorted)
    positions: np.ndarray  # their cache positions
    excluded: int  # split images left out because the cache recorded them as bad

    def local(self, meta_rows: np.ndarray) -> np.ndarray:
        """Indices into `rows` of the given metadata rows (bad images dropped)."""
        loc = np.searchsorted(self.rows, meta_rows)
        ok = (loc < len(self.rows)) & (self.rows[np.minimum(loc, len(self.rows) - 1)] == meta_rows)
        return loc[ok]

    def names(self, local_rows: np.ndarray) -> list[str]:
        """Image names of local rows."""
        return [str(n) for n in self.metadata.names[self.rows[local_rows]]]

    def patients(self, local_rows: np.ndarray) -> np.ndarray:
        return self.metadata.patients[self.rows[local_rows]]


@dataclass
class PreparedModel:
    """The model `bind` built to check the weights and the CAM layer, kept for the first training with its seed:
    `rng` is the torch RNG state right after the build, so reusing it equals building it again."""

    model: Any  # torch.nn.Module on the CPU
    seed: int
    rng: Any  # torch.ByteTensor


@dataclass
class RunContext:
    """What every stage after `bind` reads: options, protocol, model spec, device, cache binding, labels and
    features of the run's images, the run folder, the DDP rank (if any) and the stage clock."""

    opts: RunOptions
    protocol: Any  # cxrbench.protocols.Protocol
    spec: Any  # cxrbench.models.ModelSpec
    lr: float
    pretrained: bool
    device: str
    store: Any  # cxrbench.cache.store.CacheStore
    bound: Bound
    labels: np.ndarray  # (n, C) float of bound.rows
    features: np.ndarray  # (n, 5) float of bound.rows
    run_id: str
    dir: Path
    weights_info: dict = field(default_factory=lambda: {"pretrained": False})
    dist: Any = None  # cxrbench.engine.distributed.Dist under DDP
    display: Any = None  # cxrbench.console.Display (rank 0 only)
    clock: StageClock = field(default_factory=StageClock)
    prepared: PreparedModel | None = None
    stage: str = "bind"  # the stage running now (for the message of an interrupted run)
    where: str = ""  # where training is now, e.g. "fold1, epoch 3/8"
    training: str | None = None  # the training running now, e.g. "fold1"

    @property
    def seed(self) -> int:
        """The training seed (--seed, else the protocol's): initialisation, shuffling, augmentation, fold seeds."""
        from cxrbench.run.options import train_seed

        return train_seed(self.opts, self.protocol)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.rank == 0

    @property
    def world(self) -> int:
        return 1 if self.dist is None else self.dist.world

    @property
    def gather(self):
        """Gathers every rank's predictions under DDP (None in one process)."""
        return None if self.dist is None else self.dist.gather

    @property
    def cuda_graphs(self) -> bool:
        """Whether training steps are captured as CUDA graphs: on a GPU, in one process, without torch.compile,
        and unless deterministic mode leaves them off (`--cuda-graphs` turns them on there too)."""
        o = self.opts
        wanted = (not o.deterministic) if o.cuda_graphs is None else o.cuda_graphs
        return self.device.startswith("cuda") and wanted and not o.compile and self.dist is None

    def train_config(self):
        """The TrainConfig of every training of this run."""
        from cxrbench.engine.train import TrainConfig

        p = self.protocol
        gpu = self.device.startswith("cuda")
        return TrainConfig(
            lr=self.lr,
            momentum=p.momentum,
            weight_decay=p.weight_decay,
            epochs=p.epochs,
            seed=self.seed,
            device=self.device,
            nonimage=self.spec.nonimage,
            amp=gpu,
            channels_last=gpu,
            cuda_graphs=self.cuda_graphs,
            compile=self.opts.compile,
        )

    def view(self, train: bool):
        """How the protocol shows images to the model (augmented for training where the protocol says so)."""
        from cxrbench.engine.loader import View

        p = self.protocol
        return View(
            p.image_size,
            p.resize,
            p.crop,
            augment=train and p.augment == "crop_flip",
            channels_last=self.device.startswith("cuda"),
        )

    def info(self, message: str) -> None:
        """A status line on rank 0's display."""
        if self.display is not None and self.is_main:
            self.display.info(message)
