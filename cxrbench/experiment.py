"""`cxrbench run`: a model under a protocol, end to end - splits from the cache's own tables, resident
images, every fold trained and scored on validation, the final (or fold-0) model scored on test with
bootstrap CIs, predictions and a sealed run record written. Interrupted runs resume with `resume=True`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrbench.errors import CacheError, ConfigError


@dataclass
class RunOptions:
    model: str
    protocol: str
    cache: str
    device: str = "auto"
    out: str = "runs"
    lr: float | None = None
    plugins: tuple[str, ...] = ()
    resume: bool = False
    run_id: str | None = None
    pretrained: bool | None = None  # None: what the protocol says
    weights: str | None = None
    loader: str = "auto"  # auto | resident | stream
    compile: bool = False
    cuda_graphs: bool = True  # capture full-batch training steps as CUDA graphs on a GPU


@dataclass
class Bound:
    """A protocol's splits bound to cache positions, with labels, features and patients per split row."""

    store: Any
    metadata: Any
    splits: Any
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


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA device is available here")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown --device {device!r} (auto, cpu, cuda or cuda:N)")
    return device


def bind(store, protocol) -> Bound:
    """Splits of `protocol` from the cache's stored tables, mapped to cache positions."""
    from cxrbench.data.dataset import open_dataset, splits_for
    from cxrbench.data.labels import class_names

    ds = open_dataset(store.tables_dir())
    s = splits_for(ds.metadata, ds.layout, protocol)
    if protocol.image_size != store.size:
        raise CacheError(f"{store.path}: images are {store.size} px, protocol {protocol.key} needs "
                         f"{protocol.image_size} px (cache build --size {protocol.image_size})")
    from cxrbench.cache.resample import manifest_resample

    if protocol.resample != manifest_resample(store.manifest["params"]):
        raise CacheError(f"{store.path}: images were resampled with {manifest_resample(store.manifest['params'])}, "
                         f"protocol {protocol.key} needs {protocol.resample} (cache build --resample "
                         f"{protocol.resample})")
    need = np.union1d(s.trainval, s.test)
    names = ds.metadata.names
    pos_of = {n: i for i, n in enumerate(store.names())}
    bad = store.bad()
    keep = np.array([names[r] not in bad for r in need], dtype=bool)
    rows = need[keep]
    missing = [names[r] for r in rows if names[r] not in pos_of]
    if missing:
        raise CacheError(f"{store.path}: {len(missing)} images that protocol {protocol.key} needs are not in this "
                         f"cache (e.g. {missing[0]}); it was built with --subset "
                         f"{store.manifest['params']['subset']} - rebuild with --subset all")
    positions = np.array([pos_of[names[r]] for r in rows], dtype=np.int64)
    return Bound(store, ds.metadata, s, class_names(protocol.num_classes), ds.layout, rows, positions,
                 int((~keep).sum()))


def split_hashes(b: Bound) -> dict:
    from cxrbench.results.record import split_hashes as hashes

    return hashes(b.metadata.names, b.splits)


def default_run_id(model: str, protocol, lr: float) -> str:
    """model__protocol@vN__lrX__seedS, with anything but letters, digits and ._+- in the model name made `_`."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", model)
    return f"{safe}__{protocol.key}__lr{lr:g}__seed{protocol.seed}"


class Runner:
    """Everything one `cxrbench run` needs, built once; `execute()` does the work."""

    def __init__(self, opts: RunOptions, display=None) -> None:
        from cxrbench.cache.store import open_cache
        from cxrbench.models import get_spec
        from cxrbench.models.plugins import load_plugins
        from cxrbench.protocols import get_protocol

        self.opts = opts
        self.display = display
        load_plugins(opts.plugins)
        self.protocol = get_protocol(opts.protocol)
        self.lr = self.protocol.lr(opts.lr)
        self.spec = get_spec(opts.model)
        self.device = resolve_device(opts.device)
        self.store = open_cache(opts.cache)
        self.bound = bind(self.store, self.protocol)
        self.pretrained = self.protocol.pretrained if opts.pretrained is None else opts.pretrained
        self.run_id = opts.run_id or default_run_id(opts.model, self.protocol, self.lr)
        self.dir = Path(opts.out) / self.run_id
        self.dist = None  # set by the DDP launcher

    # ----------------------------------------------------------------- setup

    def attach(self, dist) -> None:
        """Make this runner one rank of a DDP job."""
        from cxrbench.distributed import check_batch

        check_batch(self.protocol.batch_size, dist.world)
        self.dist = dist
        self.device = dist.device

    def config(self) -> dict:
        return {"model": self.opts.model, "protocol": self.protocol.key, "protocol_hash": self.protocol.content_hash,
                "lr": self.lr, "pretrained": bool(self.pretrained), "weights": self.opts.weights,
                "cache_fingerprint": self.store.fingerprint, "model_source": self.spec.source}

    def prepare_dir(self) -> None:
        from cxrbench.cache.store import atomic_write_json

        if not self.is_main:  # rank 0 checks and creates the folder; the others wait for it
            self.dist.barrier()
            return
        cfg_path = self.dir / "run.json"
        if self.dir.exists() and any(self.dir.iterdir()):
            if not self.opts.resume:
                raise ConfigError(f"{self.dir} already exists; continue it with --resume, or give another --run-id")
            old = json.loads(cfg_path.read_text()) if cfg_path.exists() else None
            if old is not None:
                old.pop("cache_path", None)
            if old is not None and old != self.config():
                diff = [k for k in self.config() if old.get(k) != self.config()[k]]
                raise ConfigError(f"{self.dir} was started with other settings ({', '.join(diff)}); it cannot be "
                                  "resumed with these - give another --run-id")
            if (self.dir / "record.json").exists():
                raise ConfigError(f"{self.dir} is already finished (record.json exists)")
        self.dir.mkdir(parents=True, exist_ok=True)
        # where the cache was (not part of what must match on resume: a cache may move)
        atomic_write_json(cfg_path, {**self.config(), "cache_path": str(Path(self.opts.cache).resolve())})
        if self.dist is not None:
            self.dist.barrier()

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.rank == 0

    def train_config(self):
        from cxrbench.train import TrainConfig

        p = self.protocol
        gpu = self.device.startswith("cuda")
        graphs = gpu and self.opts.cuda_graphs and not self.opts.compile and self.dist is None
        return TrainConfig(lr=self.lr, momentum=p.momentum, weight_decay=p.weight_decay, epochs=p.epochs,
                           seed=p.seed, device=self.device, nonimage=self.spec.nonimage, amp=gpu, channels_last=gpu,
                           cuda_graphs=graphs)

    def load_images(self):
        """All images the run uses, once: resident on the device when they fit, else None (streaming)."""
        import torch

        from cxrbench.loader import fits_on

        b = self.bound
        nbytes = len(b.positions) * self.store.size ** 2
        mode = self.opts.loader
        world = 1 if self.dist is None else self.dist.world
        if mode == "auto":
            mode = "resident" if fits_on(torch.device(self.device), nbytes // world) else "stream"
        if mode == "stream" and self.dist is not None:
            raise ConfigError("streaming from the cache is not available under DDP: each rank keeps its shard "
                              "resident; use more processes (smaller shards) or devices with more memory")
        self.loader_mode = mode
        self.load_images_meta_only()
        y, f = self.y_all, self.f_all
        if mode == "stream":
            return None
        if self.display:
            self.display.info(f"loading {len(b.positions):,} images ({nbytes / 2**30:.2f} GiB) from the cache into "
                              f"{'GPU memory' if self.device.startswith('cuda') else 'RAM'}")
        if self.dist is not None:
            return "sharded"  # each loader reads this rank's shard of its own split (see make_loader)
        imgs = torch.from_numpy(self.store.read(b.positions)).to(self.device)
        return imgs, torch.as_tensor(y, dtype=torch.float32).to(self.device), \
            torch.as_tensor(f, dtype=torch.float32).to(self.device)

    def load_images_meta_only(self) -> None:
        """Labels and features of the run's images, without loading pixels (galleries read what they show)."""
        b = self.bound
        self.y_all = b.metadata.labels(self.protocol.num_classes)[b.rows]
        self.f_all = b.metadata.features()[b.rows]

    def make_loader(self, resident, local_rows: np.ndarray, train: bool):
        import torch

        from cxrbench.loader import ResidentLoader, StreamingLoader, View

        p = self.protocol
        gpu = self.device.startswith("cuda")
        view = View(p.image_size, p.resize, p.crop, augment=train and p.augment == "crop_flip", channels_last=gpu)
        world = 1 if self.dist is None else self.dist.world
        # the protocol's batch for training; scoring batches change nothing but speed (eval-mode BatchNorm)
        bs = p.batch_size // world if train or not gpu else 256
        if resident is None:
            return StreamingLoader(self.store, self.bound.positions[local_rows], self.y_all[local_rows],
                                   self.f_all[local_rows], view, bs, self.device, shuffle=train, seed=p.seed)
        if self.dist is None:
            imgs, y, f = resident
            return ResidentLoader(imgs, y, f, view, bs, self.device, shuffle=train, seed=p.seed, rows=local_rows)
        # DDP: this rank keeps every world-th image of the split resident (shards differ by at most one image;
        # training takes the same number from each, so every rank runs the same number of steps)
        local_rows = np.asarray(local_rows)
        mine = np.arange(self.dist.rank, len(local_rows), world)
        rows = local_rows[mine]
        imgs = torch.from_numpy(self.store.read(self.bound.positions[rows])).to(self.device)
        return ResidentLoader(imgs, self.y_all[rows], self.f_all[rows], view, bs, self.device, shuffle=train,
                              seed=p.seed + 7919 * self.dist.rank, index_map=mine,
                              limit=len(local_rows) // world if train else None)

    def build_model(self, fold_seed: int):
        import torch

        from cxrbench.models import create_model

        torch.manual_seed(fold_seed)
        pre = self.opts.weights if (self.pretrained and self.opts.weights) else bool(self.pretrained)
        model = create_model(self.opts.model, num_classes=self.protocol.num_classes, pretrained=pre)
        model.to(self.device)
        if self.device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        self.weights_info = getattr(model, "cxrbench_weights", {"pretrained": False})
        wrapped = model
        if self.opts.compile:
            wrapped = torch.compile(wrapped)
        if self.dist is not None:
            wrapped = self.dist.wrap(wrapped)
        return model, wrapped

    # ----------------------------------------------------------------- work

    def _fold(self, name: str, train_rows: np.ndarray, val_rows: np.ndarray | None, resident, seed: int):
        """Train one model; returns (its result: history, images, seconds, validation scores; the model as trained,
        wrapped for DDP/compile when it was)."""
        from cxrbench.metrics import per_class_auroc, plain_mean, weighted_mean
        from cxrbench.train import fit, predict

        cfg = self.train_config()
        _, model = self.build_model(seed)
        train_loader = self.make_loader(resident, train_rows, train=True)
        val_loader = self.make_loader(resident, val_rows, train=False) if val_rows is not None else None
        yv = self.y_all[val_rows] if val_rows is not None else None
        gather = None if self.dist is None else self.dist.gather

        def evaluate(m, epoch):
            p, _ = predict(m, val_loader, cfg, gather)
            if not self.is_main:
                return None, None
            a = per_class_auroc(yv, p)
            return _none(weighted_mean(a, yv)), _none(plain_mean(a))

        d = self.display

        def on_epoch(log):
            if d is not None and self.is_main:
                v = "" if log.val_weighted_auroc is None else \
                    f", val AUROC {log.val_weighted_auroc:.4f} (weighted) {log.val_plain_auroc:.4f} (plain)"
                d.info(f"{name} epoch {log.epoch + 1}/{cfg.epochs}: train loss {log.train_loss:.4f}, "
                       f"{log.images_per_s:,.0f} images/s{v}")

        from contextlib import nullcontext

        ctx = d.progress(name, total=len(train_loader), unit="batches") if (d and self.is_main) else nullcontext()
        with ctx as bar:
            state = fit(model, train_loader, cfg, self.dir / f"{name}.pt", resume=self.opts.resume,
                        evaluate=evaluate if val_loader is not None else None, on_epoch=on_epoch, progress=bar,
                        is_main=self.is_main, barrier=None if self.dist is None else self.dist.barrier,
                        reduce=None if self.dist is None else self.dist.reduce_sum)
        result: dict[str, Any] = {"history": [asdict(h) for h in state.history], "train_images": state.train_images,
                                  "train_seconds": state.train_seconds}
        if val_loader is not None:
            p, _ = predict(model, val_loader, cfg, gather)
            if self.is_main:
                a = per_class_auroc(yv, p)
                result.update(per_class={c: _none(a[i]) for i, c in enumerate(self.bound.classes)},
                              weighted_auroc=_none(weighted_mean(a, yv)), plain_auroc=_none(plain_mean(a)))
        return result, model

    def execute(self) -> Path | None:
        """Run every fold and the test scoring; returns the record path (rank 0), None elsewhere."""
        import torch

        from cxrbench.cache.store import atomic_write_json
        from cxrbench.metrics import score
        from cxrbench.results.record import PREDICTIONS, write_predictions, write_record
        from cxrbench.train import predict

        t0 = time.perf_counter()
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # static shapes: autotune each convolution once
        self.prepare_dir()
        resident = self.load_images()
        b, p = self.bound, self.protocol
        folds = []
        fold0_model = None
        for k, fold in enumerate(b.splits.folds):
            done = self.dir / f"fold{k}.json"
            if done.exists() and not (k == 0 and not p.final_run):
                folds.append(json.loads(done.read_text()))
                continue
            res, model = self._fold(f"fold{k}", b.local(fold.train), b.local(fold.val), resident, p.seed + k)
            if self.is_main:
                atomic_write_json(done, res)
            folds.append(res)
            if k == 0:
                fold0_model = model
        if p.final_run:
            final, model = self._fold("final", b.local(b.splits.trainval), None, resident, p.seed + 100)
            trainings = folds + [final]
        else:
            model = fold0_model
            trainings = folds
        test_rows = b.local(b.splits.test)
        probs, _ = predict(model, self.make_loader(resident, test_rows, train=False), self.train_config(),
                           None if self.dist is None else self.dist.gather)
        if not self.is_main:
            return None
        y = self.y_all[test_rows]
        patients = b.metadata.patients[b.rows[test_rows]]
        names = [str(n) for n in b.metadata.names[b.rows[test_rows]]]
        scores = score(y, probs, patients, resamples=p.bootstrap, seed=p.seed)
        sha = write_predictions(self.dir / PREDICTIONS, names, patients, y, probs, b.classes)
        localization = self.localization(model, test_rows)
        train_images = sum(t["train_images"] for t in trainings)
        train_seconds = sum(t["train_seconds"] for t in trainings)
        record = self._record(model, folds, trainings, scores, sha, time.perf_counter() - t0, train_images,
                              train_seconds)
        if localization is not None:
            record["localization"] = localization
        return write_record(self.dir, record)

    def boxes(self, local_rows: np.ndarray) -> list[tuple[int, str, float, float, float, float]]:
        """(index into local_rows, finding, x, y, w, h) for every box on these images (cache BBox table)."""
        from cxrbench.data.lists import read_bbox

        bbox_csv = self.bound.metadata_layout.bbox_csv
        if bbox_csv is None:
            return []
        table = read_bbox(bbox_csv)
        names = self.bound.metadata.names[self.bound.rows[local_rows]]
        where = {str(n): i for i, n in enumerate(names)}
        return [(where[r.image], r.label, r.x, r.y, r.w, r.h) for r in table.itertuples() if r.image in where]

    def localization(self, model, local_rows: np.ndarray) -> dict | None:
        """Grad-CAM pointing game and IoBB on the test images that have boxes (None when none have)."""
        import torch

        from cxrbench.explain.localization import localize
        from cxrbench.loader import View
        from cxrbench.train import unwrap

        boxes = self.boxes(local_rows)
        if not boxes:
            return None
        rows = sorted({b[0] for b in boxes})
        remap = {r: i for i, r in enumerate(rows)}
        imgs = torch.from_numpy(self.store.read(self.bound.positions[local_rows[rows]]))
        feats = torch.as_tensor(self.f_all[local_rows[rows]], dtype=torch.float32)
        p = self.protocol
        view = View(p.image_size, p.resize, p.crop, augment=False, channels_last=self.device.startswith("cuda"))
        res = localize(unwrap(model), self.spec, imgs, feats,
                       [(remap[r], *rest) for r, *rest in boxes], view, self.bound.classes, self.device)
        res["images"] = len(rows)
        return res

    def _record(self, model, folds, trainings, scores, pred_sha, wall, train_images, train_seconds) -> dict:
        from datetime import datetime, timezone

        from cxrbench.models import count_parameters
        from cxrbench.results.provenance import environment, package_git
        from cxrbench.results.record import PREDICTIONS, SCHEMA_VERSION

        p, b = self.protocol, self.bound
        deviations = []
        if p.pretrained and not self.pretrained:
            deviations.append("trained without the ImageNet weights the protocol asks for (--no-pretrained)")
        if self.loader_mode == "stream":
            deviations.append("images streamed from the cache (chunk-level shuffle), not resident")
        if b.excluded:
            deviations.append(f"{b.excluded} images excluded (recorded as undecodable by the cache build)")
        from cxrbench.cache.resample import PAPER_RESAMPLE, RESAMPLES

        if p.resample != PAPER_RESAMPLE:
            deviations.append(f"images resampled with {p.resample} ({RESAMPLES[p.resample]}), not with the reference "
                              f"paper's {PAPER_RESAMPLE} ({RESAMPLES[PAPER_RESAMPLE]})")
        env = environment(self.device)
        env.update(processes=1 if self.dist is None else self.dist.world,
                   backend=None if self.dist is None else self.dist.backend, loader=self.loader_mode,
                   compile=self.opts.compile, cuda_graphs=self.train_config().cuda_graphs)
        val_w = [f["weighted_auroc"] for f in folds if f.get("weighted_auroc") is not None]
        val_p = [f["plain_auroc"] for f in folds if f.get("plain_auroc") is not None]
        from cxrbench.train import unwrap

        params = count_parameters(unwrap(model))
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "protocol": {"id": p.id, "version": p.version, "hash": p.content_hash, "settings": p.to_dict()},
            "model": {"name": self.opts.model, "source": self.spec.source, "parameters": params,
                      "pretrained": bool(self.weights_info.get("pretrained")), "weights": self.weights_info},
            "lr": float(self.lr),
            "deviations": deviations,
            "data": {"metadata_csv_sha256": b.metadata.sha256, "split_hashes": split_hashes(b),
                     "cache_fingerprint": self.store.fingerprint, "classes": list(b.classes),
                     "split_source": b.splits.source, "n_trainval": int(len(b.splits.trainval)),
                     "n_test": int(len(b.splits.test)), "excluded_bad_images": b.excluded},
            "seeds": {"train": p.seed, "subset": p.subset_seed, "split": p.split_seed, "bootstrap": p.seed},
            "code": package_git(),
            "environment": env,
            "timing": {"wall_seconds": round(wall, 2), "train_seconds": round(train_seconds, 2),
                       "train_images": int(train_images),
                       "train_images_per_s": round(train_images / train_seconds, 1) if train_seconds else 0.0},
            "validation": {"folds": folds, "mean_weighted_auroc": _mean(val_w), "mean_plain_auroc": _mean(val_p)},
            "test": scores.to_dict(b.classes),
            "predictions": {"path": PREDICTIONS, "sha256": pred_sha},
        }


def _none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _mean(xs: list[float]) -> float | None:
    return round(float(np.mean(xs)), 6) if xs else None


def run(opts: RunOptions, display=None) -> Path | None:
    """Build and execute a run; returns the record path."""
    return Runner(opts, display).execute()


def run_or_reuse(opts: RunOptions, display=None) -> Path | None:
    """The run's record: reused when the run finished before, else made (a stopped run is resumed)."""
    from dataclasses import replace

    from cxrbench.protocols import get_protocol

    p = get_protocol(opts.protocol)
    run_dir = Path(opts.out) / (opts.run_id or default_run_id(opts.model, p, p.lr(opts.lr)))
    if (run_dir / "record.json").exists():
        if display is not None:
            display.info(f"      {run_dir} is finished already")
        return run_dir / "record.json"
    return Runner(replace(opts, resume=run_dir.exists()), display).execute()
