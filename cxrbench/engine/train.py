"""The training loop: fit one fold, evaluate, checkpoint atomically, resume exactly.

A checkpoint (`cxrbench.engine.checkpoint`: temp file, fsync, rename, sha256-verified on load) holds the model,
optimizer, epoch, step, every RNG state and the history so far. It is written after the first and the
last epoch, and after any other epoch once writing it costs at most `checkpoint_budget` of the time spent since
the previous one (a 56 MB DenseNet-121 checkpoint every 1.6-s epoch would cost more than that). Batches depend
only on (seed, epoch), so a run resumed from any checkpoint sees the same batches as an unbroken run and, on
the CPU, ends with the same weights and metrics. A non-finite loss stops the run with a clear error.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextlib import nullcontext as _none
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrbench.engine.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from cxrbench.errors import TrainingError

__all__ = [
    "CHECKPOINT_VERSION",
    "EpochLog",
    "FoldState",
    "GraphStep",
    "TrainConfig",
    "fit",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "unwrap",
]

# Tests set this to an epoch number: the main process then sends itself SIGINT once that epoch's checkpoint is
# written, the Ctrl-C of a user at a point the test controls rather than one a timer guesses.
INTERRUPT_AFTER_EPOCH = "CXRBENCH_INTERRUPT_AFTER_EPOCH"


@dataclass(frozen=True)
class TrainConfig:
    """How one fold is trained (filled from a protocol and the command line)."""

    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    device: str
    nonimage: bool
    amp: bool = False  # bf16 autocast (GPU)
    channels_last: bool = False
    cuda_graphs: bool = False  # replay each full-batch training step as one captured CUDA graph (GPU)
    check_every: int = 25  # steps between non-finite checks on a GPU (every step on the CPU)
    compile: bool = False  # the model is torch.compile'd: time its compilations apart from training
    checkpoint_budget: float = 0.05  # most of the time since the last checkpoint that writing one may cost


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    seconds: float
    images_per_s: float
    val_weighted_auroc: float | None = None
    val_plain_auroc: float | None = None
    val_loss: float | None = None  # mean BCE on validation (set by the caller's epoch callback)
    lr: float | None = None  # the learning rate of the epoch


@dataclass
class FoldState:
    """A fold's training so far; the seconds exclude compilation, which `compile_seconds` holds."""

    history: list[EpochLog] = field(default_factory=list)
    step: int = 0
    train_images: int = 0
    train_seconds: float = 0.0
    validate_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    compile_seconds: float = 0.0
    checkpoints: int = 0  # checkpoint writes (all sessions)
    last_checkpoint_epoch: int | None = None
    capture_seconds: float = 0.0  # CUDA graphs: the warm-up steps and the capture
    setup_seconds: float = 0.0  # this session: optimizer, checkpoint load (the first optimizer imports torch's
    #                             compiler stack, seconds on a CPU)
    before: dict[str, float] = field(default_factory=dict)  # seconds per part (train, validate, checkpoint,
    #                             compile, capture) that the checkpoint resumed from brought: earlier sessions'


def rng_state() -> dict[str, Any]:
    """Every RNG state a run touches (torch CPU and CUDA, numpy's and Python's global generators)."""
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(map(_py, random.getstate()))}
    np_state = np.random.get_state(legacy=False)  # MT19937: {"state": {"key", "pos"}, "has_gauss", "gauss"}
    st["numpy"] = {
        "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "pos": int(np_state["state"]["pos"]),
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _py(x):
    return list(x) if isinstance(x, tuple) else x


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    v, key, gauss = st["python"]
    random.setstate((v, tuple(key), gauss))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def load_model_state(model: torch.nn.Module, state: Any, path: Path) -> None:
    """`model.load_state_dict(state)`, where a checkpoint of another model (other layers or shapes) is a
    TrainingError naming the file, not a traceback."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        first = " ".join(str(e).split())[:200]
        raise TrainingError(
            f"{path}: this checkpoint holds another model's weights ({first}); remove it to train this part "
            "again, or start the run in another --out"
        ) from None


@contextmanager
def resume_state(path: Path) -> Iterator[None]:
    """Restoring a checkpoint's optimizer, RNG and history: a checkpoint that does not fit this run (another
    model's, another optimizer's, another version's fields) is a TrainingError naming the file."""
    try:
        yield
    except TrainingError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        first = " ".join(str(e).split())[:200]
        raise TrainingError(
            f"{path}: this checkpoint does not fit this run ({type(e).__name__}: {first}); remove it to train "
            "this part again, or start the run in another --out"
        ) from None


class StepClock:
    """Wall time of the steps that are not steady-state work, counted apart from training and validation time:
    under torch.compile the steps that meet a batch shape (and train/eval mode) for the first time (compilation
    happens there); with CUDA graphs the warm-up steps up to the capture (every key is new there). Timed steps
    are synchronised on a GPU."""

    def __init__(self, active: bool, device: torch.device) -> None:
        self.active = active
        self.device = device
        self.seen: set[tuple] = set()
        self.seconds = 0.0

    @contextmanager
    def step(self, key: tuple) -> Iterator[None]:
        if not self.active or key in self.seen:
            yield
            return
        self.seen.add(key)
        self._sync()
        t0 = time.perf_counter()
        yield
        self._sync()
        self.seconds += time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, inside any DistributedDataParallel or torch.compile wrapper."""
    m = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(m, "_orig_mod", m)  # torch.compile


def forward(model, batch, cfg: TrainConfig) -> torch.Tensor:
    out = model(batch.x, batch.features) if cfg.nonimage else model(batch.x)
    return out[0] if isinstance(out, (tuple, list)) else out


def autocast(cfg: TrainConfig, cache: bool = True):
    if cfg.amp and cfg.device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    from contextlib import nullcontext

    return nullcontext()


@torch.no_grad()
def predict(
    model, loader, cfg: TrainConfig, gather: Callable | None = None, clock: StepClock | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities (N, C) float32 in split order, and the split positions they belong to."""
    was = model.training
    model.eval()
    probs, index = [], []
    clock = clock or StepClock(False, torch.device("cpu"))
    try:
        for batch in loader:
            with clock.step(("eval", batch.y.shape[0])), autocast(cfg):
                logits = forward(model, batch, cfg)
            probs.append(torch.sigmoid(logits.float()))
            index.append(batch.index.to(probs[-1].device))
        p = torch.cat(probs) if probs else torch.zeros(0)
        i = torch.cat(index) if index else torch.zeros(0, dtype=torch.long)
        if gather is not None:
            p, i = gather(p, i)
    finally:
        model.train(was)
    order = torch.argsort(i.cpu())
    return p.cpu().numpy()[order.numpy()].astype(np.float32), i.cpu().numpy()[order.numpy()]


class GraphStep:
    """A full-batch training step (forward, loss, backward, SGD step) captured once as a CUDA graph and replayed:
    the same kernels as the eager step without the per-kernel launch cost, which otherwise dominates
    DenseNet-121 at batch 32. Batches of another size (the last one) run eagerly. On the CPU the capture is
    emulated (the step re-runs on the static buffers), so this logic is tested where there is no GPU."""

    WARMUP = 3  # eager full-batch steps before capture (cuDNN autotuning, momentum buffers, allocator)

    def __init__(self, model, opt, cfg: TrainConfig) -> None:
        self.model, self.opt, self.cfg = model, opt, cfg
        self.cuda = cfg.device.startswith("cuda")
        self.replay: Callable[[], None] | None = None
        self.warm = 0
        self.size: int | None = None

    def eager(self, batch) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        return self._step(batch).detach()  # keep no autograd graph alive across the capture

    def _step(self, batch) -> torch.Tensor:
        with autocast(self.cfg, cache=False):
            logits = forward(self.model, batch, self.cfg)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch.y)
        loss.backward()
        self.opt.step()
        return loss

    def __call__(self, batch) -> torch.Tensor:
        n = batch.y.shape[0]
        if self.size is None:
            self.size = n
        if n != self.size:
            return self.eager(batch)
        if self.replay is None:
            if self.cuda:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    loss = self.eager(batch)
                torch.cuda.current_stream().wait_stream(side)
            else:
                loss = self.eager(batch)
            self.warm += 1
            if self.warm >= self.WARMUP:
                self._capture(batch)
            return loss
        self.static.x.copy_(batch.x)
        self.static.y.copy_(batch.y)
        self.static.features.copy_(batch.features)
        self.replay()
        return self.loss

    def _capture(self, batch) -> None:
        """Record the step on static buffers (nothing runs now; each replay runs it on their contents)."""
        from cxrbench.engine.loader import Batch

        self.static = Batch(batch.x.clone(), batch.y.clone(), batch.features.clone(), batch.index)
        self.opt.zero_grad(set_to_none=True)
        if self.cuda:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self.loss = self._step(self.static)
            self.replay = g.replay
        else:

            def replay() -> None:
                self.loss = self.eager(self.static)

            self.replay = replay


def fit(
    model: torch.nn.Module,
    train_loader,
    cfg: TrainConfig,
    ckpt: Path | None,
    *,
    resume: bool = False,
    evaluate: Callable[[torch.nn.Module, int], tuple[float, float]] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    progress=None,
    is_main: bool = True,
    barrier: Callable[[], None] | None = None,
    reduce: Callable[..., list[float]] | None = None,
    clock: StepClock | None = None,
) -> FoldState:
    """Train for cfg.epochs (continuing from `ckpt` with `resume`); returns the per-epoch history and timings.

    `progress` (optional) gets `advance(images)` per batch and `update(description=..., status=..., work=...)`
    (`work`: images and training seconds before this epoch, then this epoch's on this rank: what the training
    rate, `train_images / train_seconds`, is computed from); `evaluate`
    runs after every epoch (its time is `validate_seconds`); `clock` times compilation apart (torch.compile), and
    the CUDA-graph warm-up and capture are timed apart too (`capture_seconds`).
    """
    t_setup = time.perf_counter()
    device = torch.device(cfg.device)
    base = unwrap(model)
    clock = clock or StepClock(cfg.compile, device)
    capture = StepClock(True, device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = FoldState()
    start = 0
    if resume and ckpt is not None and ckpt.exists():
        ck = load_checkpoint(ckpt)
        with resume_state(ckpt):
            load_model_state(base, ck["model"], ckpt)
            opt.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"])
            state = FoldState(
                [EpochLog(**h) for h in ck["history"]],
                ck["step"],
                ck["train_images"],
                ck["train_seconds"],
                **ck["timing"],
                last_checkpoint_epoch=ck["epoch"],
            )
            state.before = {"train": state.train_seconds} | {
                k.removesuffix("_seconds"): float(v) for k, v in ck["timing"].items() if k.endswith("_seconds")
            }
            start = ck["epoch"] + 1
    model.train()
    graph = GraphStep(model, opt, cfg) if cfg.cuda_graphs else None  # emulated on the CPU (tests)
    compiled_before, clock_start = state.compile_seconds, clock.seconds
    state.setup_seconds = time.perf_counter() - t_setup
    last_save = time.perf_counter()
    save_cost: float | None = None  # seconds the last checkpoint write took (this session)
    for epoch in range(start, cfg.epochs):
        train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        seen = 0
        bad = torch.zeros((), dtype=torch.bool, device=device)
        t0 = time.perf_counter()
        compiling, capturing = clock.seconds, capture.seconds
        if progress is not None:
            progress.update(description=f"epoch {epoch + 1}/{cfg.epochs}")
        for i, batch in enumerate(train_loader):
            warming = graph is not None and graph.replay is None
            timed = capture.step(("warm", state.step)) if warming else _none()
            with clock.step(("train", batch.y.shape[0])), timed:
                if graph is not None:
                    loss = graph(batch)
                else:
                    with autocast(cfg):
                        logits = forward(model, batch, cfg)
                    loss = F.binary_cross_entropy_with_logits(logits.float(), batch.y)
                bad |= ~torch.isfinite(loss)
                if (device.type == "cpu" or (i + 1) % cfg.check_every == 0) and bool(bad):
                    raise TrainingError(
                        f"the training loss became non-finite ({loss.item()}) in epoch "
                        f"{epoch + 1}, step {i + 1}; the run stops and writes no result "
                        "(try a lower --lr)"
                    )
                if graph is None:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            n = batch.y.shape[0]
            loss_sum += loss.detach() * n
            seen += n
            state.step += 1
            if progress is not None:
                progress.advance(n)
                if device.type == "cpu" or (i + 1) % cfg.check_every == 0:
                    so_far = time.perf_counter() - t0 - (clock.seconds - compiling) - (capture.seconds - capturing)
                    progress.update(
                        status=f"loss {loss_sum.item() / max(seen, 1):.4f}",
                        work=(state.train_images, state.train_seconds, seen, so_far),
                    )
        if bool(bad):
            raise TrainingError(
                f"the training loss became non-finite in epoch {epoch + 1}; the run stops and "
                "writes no result (try a lower --lr)"
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0 - (clock.seconds - compiling) - (capture.seconds - capturing)
        state.capture_seconds += capture.seconds - capturing
        total_loss = float(loss_sum.item())
        if reduce is not None:  # every rank's share of the epoch
            total_loss, seen_f = reduce(total_loss, float(seen))
            seen = int(seen_f)
        log = EpochLog(epoch, total_loss / max(seen, 1), seconds, seen / max(seconds, 1e-9), lr=cfg.lr)
        state.train_images += seen
        state.train_seconds += seconds
        if evaluate is not None:
            t_val, compiling = time.perf_counter(), clock.seconds
            log.val_weighted_auroc, log.val_plain_auroc = evaluate(model, epoch)
            state.validate_seconds += time.perf_counter() - t_val - (clock.seconds - compiling)
        state.compile_seconds = compiled_before + clock.seconds - clock_start
        state.history.append(log)
        if on_epoch is not None:
            on_epoch(log)
        last = epoch == cfg.epochs - 1
        if (
            ckpt is not None
            and is_main
            and (last or save_cost is None or save_cost <= cfg.checkpoint_budget * (time.perf_counter() - last_save))
        ):
            t_save = time.perf_counter()
            state.checkpoints += 1
            state.last_checkpoint_epoch = epoch
            save_checkpoint(
                ckpt,
                {
                    "version": CHECKPOINT_VERSION,
                    "model": base.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch,
                    "step": state.step,
                    "rng": rng_state(),
                    "history": [asdict(h) for h in state.history],
                    "train_images": state.train_images,
                    "train_seconds": state.train_seconds,
                    "config": asdict(cfg),
                    "timing": {
                        "validate_seconds": state.validate_seconds,
                        "checkpoint_seconds": state.checkpoint_seconds,
                        "compile_seconds": state.compile_seconds,
                        "capture_seconds": state.capture_seconds,
                        "checkpoints": state.checkpoints,
                    },
                },
                epoch=epoch,
            )
            save_cost = time.perf_counter() - t_save
            state.checkpoint_seconds += save_cost
            last_save = time.perf_counter()
        if is_main and os.environ.get(INTERRUPT_AFTER_EPOCH) == str(epoch):
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C at a point a test controls (see INTERRUPT_AFTER_EPOCH)
        if barrier is not None:
            barrier()
    return state
