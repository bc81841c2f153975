"""The typed objects a run's stages hand on: `Bound` (the protocol's splits on the cache) and `RunContext`
(everything `bind` resolved, frozen, passed to every later stage, with the small `RunState` the stages fill
in as the run goes). Stage results live beside their stages: `load.Images`, `fit.Trained`, `score.Scored`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrbench.run.options import RunOptions
from cxrbench.run.timing import StageClock

if TYPE_CHECKING:
    import torch

    from cxrbench.cache.store import CacheStore
    from cxrbench.console import Display
    from cxrbench.data.layout import DatasetLayout
    from cxrbench.data.metadata import Metadata
    from cxrbench.data.splits import SplitSet
    from cxrbench.engine.distributed import Dist
    from cxrbench.engine.loader import View
    from cxrbench.engine.train import TrainConfig
    from cxrbench.models.spec import ModelSpec
    from cxrbench.protocols import Protocol


@dataclass(frozen=True)
class Bound:
    """A protocol's splits bound to cache positions, with labels, features and patients per split row."""

    store: CacheStore
    metadata: Metadata  # of the cache's own tables
    splits: SplitSet
    classes: tuple[str, ...]
    metadata_layout: DatasetLayout  # the cache's tables (BBox CSV, lists)
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


@dataclass(frozen=True)
class PreparedModel:
    """The model `bind` built to check the weights and the CAM layer, kept for the first training with its seed:
    `rng` is the torch RNG state right after the build, so reusing it equals building it again."""

    model: torch.nn.Module  # on the CPU
    seed: int
    rng: torch.Tensor  # torch.get_rng_state(): a ByteTensor


@dataclass
class RunState:
    """What the stages fill in as the run goes: their seconds, the model `bind` built until a training takes
    it, and where the run is now (for the message of an interrupted run)."""

    clock: StageClock = field(default_factory=StageClock)
    prepared: PreparedModel | None = None
    stage: str = "bind"  # the stage running now
    where: str = ""  # where training is now, e.g. "fold1, epoch 3/8"
    training: str | None = None  # the training running now, e.g. "fold1"


@dataclass(frozen=True)
class RunContext:
    """What every stage after `bind` reads: options, protocol, model spec, device, cache binding, labels and
    features of the run's images, the run folder, the DDP rank (if any) and the display - fixed once `bind`
    made it - and the `state` the stages fill in."""

    opts: RunOptions
    protocol: Protocol
    spec: ModelSpec
    lr: float
    pretrained: bool
    device: str
    store: CacheStore
    bound: Bound
    labels: np.ndarray  # (n, C) float of bound.rows
    features: np.ndarray  # (n, 5) float of bound.rows
    run_id: str
    dir: Path
    weights_info: dict[str, Any] = field(default_factory=lambda: {"pretrained": False})
    dist: Dist | None = None  # under DDP
    display: Display | None = None  # rank 0 only
    state: RunState = field(default_factory=RunState)

    @property
    def seed(self) -> int:
        """The training seed (--seed, else the protocol's): initialisation, shuffling, augmentation, fold seeds."""
        from cxrbench.run.options import train_seed

        return train_seed(self.opts, self.protocol)

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.rank == 0

    @property
    def rank(self) -> int:
        """This process's rank under DDP (0 in one process)."""
        return 0 if self.dist is None else self.dist.rank

    @property
    def world(self) -> int:
        return 1 if self.dist is None else self.dist.world

    @property
    def gather(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
        """Gathers every rank's predictions under DDP (None in one process)."""
        return None if self.dist is None else self.dist.gather

    @property
    def cuda_graphs(self) -> bool:
        """Whether training steps are captured as CUDA graphs: on a GPU, in one process, without torch.compile,
        and unless deterministic mode leaves them off (`--cuda-graphs` turns them on there too)."""
        o = self.opts
        wanted = (not o.deterministic) if o.cuda_graphs is None else o.cuda_graphs
        return self.device.startswith("cuda") and wanted and not o.compile and self.dist is None

    def train_config(self) -> TrainConfig:
        """The TrainConfig of every training of this run."""
        from cxrbench.engine.train import TrainConfig

        p = self.protocol
        gpu = self.device.startswith("cuda")
        return TrainConfig(
            lr=self.lr,
            momentum=p.momentum,
            weight_decay=p.weight_decay,
            epochs=p.epochs,
            device=self.device,
            nonimage=self.spec.nonimage,
            amp=gpu,
            channels_last=gpu,
            cuda_graphs=self.cuda_graphs,
            compile=self.opts.compile,
        )

    def view(self, train: bool) -> View:
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
