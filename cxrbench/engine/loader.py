"""Batches from the cache: a split's uint8 images kept resident (GPU memory on a GPU, else RAM) and every
batch made on the device by an index gather, a crop (centre, or random + horizontal flip), grayscale to 3
channels and ImageNet normalisation. Seeded: the same (seed, epoch) gives the same batches on any device.

A split too large for the device is streamed from zarr chunk by chunk with a background prefetch thread
(`StreamingLoader`); its order is shuffled at chunk level and within a buffer, also seeded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class View:
    """How images are shown to a model: optional resize, crop size, augmentation."""

    image_size: int
    resize: int
    crop: int
    augment: bool  # random crop + horizontal flip (else centre crop)
    channels_last: bool = False
    dtype: torch.dtype = torch.float32


@dataclass
class Batch:
    x: torch.Tensor  # (B, 3, crop, crop) normalised
    y: torch.Tensor  # (B, C) float
    features: torch.Tensor  # (B, 5) float
    index: torch.Tensor  # (B,) positions within the split


def _generator(seed: int, epoch: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919) % (2**63 - 1))
    return g


class Transform:
    """uint8 (B, S, S) on the device -> normalised float (B, 3, crop, crop); random draws come from a CPU
    generator so that CPU and GPU see the same crops and flips."""

    def __init__(self, view: View, device: torch.device) -> None:
        self.view = view
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0)

    def __call__(self, imgs: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        v = self.view
        b = imgs.shape[0]
        x = imgs
        if v.resize != v.image_size:
            x = F.interpolate(x.unsqueeze(1).float(), size=(v.resize, v.resize), mode="area").squeeze(1)
        side = x.shape[-1]
        if v.augment and gen is not None:
            oy = torch.randint(0, side - v.crop + 1, (b,), generator=gen)
            ox = torch.randint(0, side - v.crop + 1, (b,), generator=gen)
            flip = torch.rand(b, generator=gen) < 0.5
            ar = torch.arange(v.crop)
            rows = (oy[:, None] + ar[None, :]).to(self.device)
            cols = ox[:, None] + ar[None, :]
            cols = torch.where(flip[:, None], cols.flip(1), cols).to(self.device)
            bi = torch.arange(b, device=self.device)
            x = x[bi[:, None, None], rows[:, :, None], cols[:, None, :]]
        else:
            o = (side - v.crop) // 2
            x = x[:, o : o + v.crop, o : o + v.crop]
        x = (x.unsqueeze(1).to(torch.float32) - self.mean) * self.inv_std  # (B, 3, crop, crop)
        if v.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(v.dtype) if v.dtype != torch.float32 else x


class ResidentLoader:
    """All images of a split as one uint8 tensor on the device; a batch is an index gather plus `Transform`."""

    mode = "resident"

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        features: np.ndarray | torch.Tensor,
        view: View,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool,
        seed: int,
        rows: np.ndarray | None = None,
        index_map: np.ndarray | None = None,
        limit: int | None = None,
    ) -> None:
        """`images`, `labels`, `features` may be shared by several loaders (already on the device); `rows`
        picks this split's rows from them (default: all). `index_map` translates loader positions into the
        indices a batch reports (a rank's shard -> split positions); `limit` caps the samples per epoch (equal
        batch counts on every rank)."""
        self.device = torch.device(device)
        self.images = torch.as_tensor(images).to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.float32).to(self.device)
        self.features = torch.as_tensor(features, dtype=torch.float32).to(self.device)
        self.rows = None if rows is None else torch.as_tensor(np.asarray(rows, np.int64))
        self.index_map = None if index_map is None else torch.as_tensor(np.asarray(index_map, np.int64))
        self.limit = limit
        self.view = view
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = Transform(view, self.device)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.order(0))
        return (n + self.batch_size - 1) // self.batch_size

    @property
    def n(self) -> int:
        return int(self.images.shape[0] if self.rows is None else len(self.rows))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of an epoch: a seeded permutation (or 0..n-1), cut to `limit`."""
        idx = torch.randperm(self.n, generator=_generator(self.seed, epoch)) if self.shuffle else torch.arange(self.n)
        return idx if self.limit is None else idx[: self.limit]

    def __iter__(self) -> Iterator[Batch]:
        gen = _generator(self.seed, 10_000 + self.epoch)
        order = self.order(self.epoch)
        for i in range(0, len(order), self.batch_size):
            idx_cpu = order[i : i + self.batch_size]
            src = idx_cpu if self.rows is None else self.rows[idx_cpu]
            idx = src.to(self.device, non_blocking=True)
            x = self.transform(self.images.index_select(0, idx), gen if self.view.augment else None)
            reported = idx_cpu if self.index_map is None else self.index_map[idx_cpu]
            yield Batch(x, self.labels.index_select(0, idx), self.features.index_select(0, idx), reported)


class StreamingLoader:
    """For splits that do not fit the device: read zarr chunks in a background thread (prefetch), shuffle
    at chunk level and within a buffer of chunks, transfer and transform batches on the device."""

    mode = "stream"

    def __init__(
        self,
        store,
        positions: np.ndarray,
        labels: np.ndarray,
        features: np.ndarray,
        view: View,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool,
        seed: int,
        buffer_chunks: int = 8,
    ) -> None:
        self.store = store
        self.positions = np.asarray(positions, np.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.view = view
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_chunks = buffer_chunks
        self.transform = Transform(view, self.device)
        self.epoch = 0
        c = store.chunk_images
        chunk_of = self.positions // c
        self._groups = [np.flatnonzero(chunk_of == k) for k in np.unique(chunk_of)]

    @property
    def n(self) -> int:
        return len(self.positions)

    def __len__(self) -> int:
        n = self.n
        return (n + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        return [
            self._groups[i] for i in (rng.permutation(len(self._groups)) if self.shuffle else range(len(self._groups)))
        ]

    def __iter__(self) -> Iterator[Batch]:
        plan = self._plan()
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        gen = _generator(self.seed, 10_000 + self.epoch)
        q: queue.Queue = queue.Queue(maxsize=self.buffer_chunks)
        stop = threading.Event()

        def reader() -> None:
            try:
                for g in plan:
                    imgs = torch.from_numpy(self.store.read(self.positions[g]))
                    while not stop.is_set():
                        try:
                            q.put((g, imgs), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # surfaced in the consumer
                q.put(e)
                return
            q.put(None)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        size = self.view.image_size
        carry_idx = np.zeros(0, np.int64)
        carry_img = torch.zeros((0, size, size), dtype=torch.uint8)
        done = False
        try:
            while not done:
                idxs, imgs = [carry_idx], [carry_img]
                for _ in range(self.buffer_chunks):  # fill a shuffle buffer of chunks
                    item = q.get()
                    if item is None:
                        done = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    idxs.append(item[0])
                    imgs.append(item[1])
                idx = np.concatenate(idxs)
                img = torch.cat(imgs)
                perm = rng.permutation(len(idx)) if self.shuffle else np.arange(len(idx))
                full = (len(idx) // self.batch_size) * self.batch_size
                last = len(idx) if done else full
                for i in range(0, last, self.batch_size):
                    sel = torch.from_numpy(perm[i : min(i + self.batch_size, last)])
                    x = img[sel].to(self.device, non_blocking=True)
                    si = torch.from_numpy(idx[sel.numpy()])
                    yield Batch(
                        self.transform(x, gen if self.view.augment else None),
                        self.labels[si].to(self.device),
                        self.features[si].to(self.device),
                        si,
                    )
                rest = torch.from_numpy(perm[full:])
                carry_idx, carry_img = idx[rest.numpy()], img[rest]
        finally:
            stop.set()
            t.join(timeout=5)


def fits_on(device: torch.device, nbytes: int, fraction: float = 0.5) -> bool:
    """Whether `nbytes` of images fit in `fraction` of the device's free memory (RAM for the CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes < fraction * free
    import os

    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return True
    return nbytes < fraction * avail
