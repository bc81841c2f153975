"""Stage 3, fit folds: train the model on every train/val fold of the protocol (scored on its validation
split) and, where the protocol says so, once more on train+val (`final`). Each finished training leaves its
result (`fold{k}.json`, its validation predictions `fold{k}-val.csv.gz`) beside its checkpoint, so a resumed
run trains only what is missing; the model that scores the test set (`final`, else fold 0) comes from memory
when it was trained in this session, else from its verified checkpoint - never from training it again."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cxrbench.numbers import finite_or_none, rounded
from cxrbench.run.context import RunContext
from cxrbench.run.load import Images, epoch_images

if TYPE_CHECKING:
    import torch


@dataclass
class Training:
    """One model to train: its name, rows (indices into the run's images) and seed."""

    name: str  # "fold0", ..., "final"
    train_rows: np.ndarray
    val_rows: np.ndarray | None
    seed: int

    def checkpoint(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.pt"

    def result_file(self, run_dir: Path) -> Path:
        return run_dir / f"{self.name}.json"


@dataclass
class Trained:
    """What fit folds hands to scoring: every training's result, the model that scores the test set and
    the seconds each training's parts took (earlier sessions included)."""

    folds: list[dict]  # validation results of the folds, as recorded
    trainings: list[dict]  # every training's result (folds, then final): images and seconds
    model: Any  # the scoring model (torch.nn.Module), possibly wrapped for DDP or torch.compile
    scorer: str  # "final" or "fold0"
    stages: dict[str, float] = field(default_factory=dict)
    trained_now: list[str] = field(default_factory=list)  # trainings that ran in this session
    before: dict[str, float] = field(default_factory=dict)  # the part of `stages` of trained_now spent in
    #                                                         sessions before a resume (from their checkpoints)


def plan(ctx: RunContext) -> list[Training]:
    """The protocol's trainings in order: every fold, then the final run on train+val if it has one."""
    b, p = ctx.bound, ctx.protocol
    s = ctx.seed  # the training seed: every fold's seed derives from it
    out = [Training(f"fold{k}", b.local(f.train), b.local(f.val), s + k) for k, f in enumerate(b.splits.folds)]
    if p.final_run:
        out.append(Training("final", b.local(b.splits.trainval), None, s + 100))
    return out


def fit_folds(ctx: RunContext, images: Images) -> Trained:
    """Train every training not finished yet; returns the results and the scoring model."""
    from cxrbench.engine.checkpoint import checkpoint_epoch
    from cxrbench.run.folder import read_result
    from cxrbench.run.progress import training_bar

    trainings = plan(ctx)
    scorer = "final" if ctx.protocol.final_run else "fold0"
    todo = [t.name for t in trainings if not finished(ctx, t)]
    epochs = ctx.protocol.epochs
    total = 0
    for t in (t for t in trainings if t.name in todo):  # images still to train on (for the whole-run bar)
        done = checkpoint_epoch(t.checkpoint(ctx.dir)) if ctx.opts.resume else None
        total += (epochs - (0 if done is None else done + 1)) * epoch_images(len(t.train_rows), ctx.world)
    results: dict[str, dict] = {}
    stages: dict[str, float] = {}
    before: dict[str, float] = {}
    model = None
    with training_bar(ctx, total) as bar:
        for t in trainings:
            if t.name not in todo:
                results[t.name], st = read_result(t.result_file(ctx.dir))
                stages.update({f"{t.name}.{k}": v for k, v in st.items()})
                continue
            bar.start(t.name)
            result, st, trained, earlier = train_one(ctx, images, t, bar)
            results[t.name] = result
            stages.update({f"{t.name}.{k}": v for k, v in st.items()})
            before.update({f"{t.name}.{k}": v for k, v in earlier.items() if k in st})
            if t.name == scorer:
                model = trained
            del trained
    if model is None:
        model = scoring_model(ctx)
    if ctx.is_main:
        from cxrbench.results.history import HISTORY, write_history

        write_history(ctx.dir / HISTORY, [(t.name, results[t.name]) for t in trainings])
        if ctx.opts.tensorboard is not None:
            _tensorboard(ctx, [(t.name, results[t.name]) for t in trainings])
    folds = [results[t.name] for t in trainings if t.name != "final"]
    return Trained(
        folds=folds,
        trainings=[results[t.name] for t in trainings],
        model=model,
        scorer=scorer,
        stages=stages,
        trained_now=todo,
        before=before,
    )


def _tensorboard(ctx: RunContext, trainings: list[tuple[str, dict]]) -> None:
    """history.csv's figures as TensorBoard event files in --tensorboard DIR/<run id>: a side output, so a
    folder that cannot be written is a warning, never a failed run."""
    from cxrbench.errors import CxrbenchError
    from cxrbench.results.events import write_events

    folder = Path(str(ctx.opts.tensorboard)) / ctx.dir.name
    try:
        write_events(folder, trainings)
    except (CxrbenchError, OSError) as e:
        if ctx.display is not None:
            ctx.display.warn(f"the TensorBoard event files were not written: {e}")
        return
    ctx.info(f"training curves as TensorBoard event files in {folder}")


def finished(ctx: RunContext, t: Training) -> bool:
    """Whether a training is finished: its result file exists and the validation predictions it names are
    there, a regular file with the sha256 the result gives (a deleted or truncated one is made again: the
    training resumes from its checkpoint and is scored again)."""
    import hashlib

    from cxrbench.errors import CxrbenchError
    from cxrbench.files import read_regular
    from cxrbench.results.record import MAX_PREDICTIONS_BYTES
    from cxrbench.run.folder import read_result

    if not t.result_file(ctx.dir).exists():
        return False
    result, _ = read_result(t.result_file(ctx.dir))
    named = result.get("predictions")
    if not isinstance(named, dict):
        return True  # a final run (or an older cxrbench's fold) names no predictions
    path = ctx.dir / str(named.get("path"))
    try:
        digest = hashlib.sha256(read_regular(path, MAX_PREDICTIONS_BYTES, "validation predictions")).hexdigest()
        ok = digest == named.get("sha256")
    except CxrbenchError:
        ok = False
    if not ok:
        ctx.info(f"{path} is missing or not what {t.result_file(ctx.dir).name} names: {t.name} is done again")
    return ok


def build_model(ctx: RunContext, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model, the model as trained: wrapped for torch.compile and DDP when asked) of a training with `seed`.
    The model `bind` built is reused for the seed it was built with (same weights, same RNG state after)."""
    import torch

    from cxrbench.run.bind import new_model, pretrained_arg

    prepared = ctx.state.prepared
    if prepared is not None and prepared.seed == seed:
        ctx.state.prepared = None
        torch.manual_seed(seed)  # every device's generator as a fresh build leaves it...
        torch.set_rng_state(prepared.rng)  # ...and the CPU one as it was right after the build
        model = prepared.model
    else:
        torch.manual_seed(seed)
        model = new_model(ctx, pretrained_arg(ctx))
    model.to(ctx.device)
    if ctx.device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    wrapped = model
    if ctx.opts.compile:  # torch.compile of a Module is an OptimizedModule (its stub says "a callable")
        wrapped = cast(torch.nn.Module, torch.compile(wrapped))
    if ctx.dist is not None:
        wrapped = ctx.dist.wrap(wrapped)
    return model, wrapped


def train_one(
    ctx: RunContext, images: Images, t: Training, bar
) -> tuple[dict, dict[str, float], Any, dict[str, float]]:
    """Train (or finish training) one model; write its result file; returns (result, stage seconds, model, the
    part of those seconds spent before a resume)."""
    import time

    import torch

    from cxrbench.engine.train import StepClock, fit, predict
    from cxrbench.metrics.auroc import per_class_auroc, plain_mean, weighted_mean
    from cxrbench.run.folder import write_result

    cfg = ctx.train_config()
    t_build = time.perf_counter()
    _, model = build_model(ctx, t.seed)
    train_loader = images.loader(ctx, t.train_rows, train=True)
    val_loader = images.loader(ctx, t.val_rows, train=False) if t.val_rows is not None else None
    build_seconds = time.perf_counter() - t_build
    yv = ctx.labels[t.val_rows] if t.val_rows is not None else None
    clock = StepClock(cfg.compile, torch.device(ctx.device))
    last: dict[str, Any] = {}  # the latest validation pass: its epoch and predictions

    def evaluate(m, epoch):
        assert yv is not None  # evaluate is given to fit only with a validation split
        p, _ = predict(m, val_loader, cfg, ctx.gather, clock)
        last.update(epoch=epoch, probs=p)
        if not ctx.is_main:
            return None, None
        a = per_class_auroc(yv, p)
        last["loss"] = bce(yv, p)
        return finite_or_none(weighted_mean(a, yv)), finite_or_none(plain_mean(a))

    def on_epoch(log):
        if last.get("epoch") == log.epoch and "loss" in last:  # before the checkpoint keeps the history
            log.val_loss = last["loss"]
        v = (
            ""
            if log.val_weighted_auroc is None
            else f", validation AUROC {_f(log.val_weighted_auroc)} weighted, {_f(log.val_plain_auroc)} plain"
        )
        ctx.info(
            f"{t.name} epoch {log.epoch + 1}/{cfg.epochs}: training loss {log.train_loss:.4f}, "
            f"{log.images_per_s:,.0f} images/s, {log.seconds:,.1f} s{v}"
        )

    state = fit(
        model,
        train_loader,
        cfg,
        t.checkpoint(ctx.dir),
        resume=ctx.opts.resume,
        evaluate=evaluate if val_loader is not None else None,
        on_epoch=on_epoch,
        progress=bar,
        is_main=ctx.is_main,
        barrier=None if ctx.dist is None else ctx.dist.barrier,
        reduce=None if ctx.dist is None else ctx.dist.reduce_sum,
        clock=clock,
    )
    result: dict[str, Any] = {
        "history": [asdict(h) for h in state.history],
        "train_images": state.train_images,
        "train_seconds": state.train_seconds,
    }
    validate = state.validate_seconds
    t_results = time.perf_counter()
    if val_loader is not None:
        if last.get("epoch") == cfg.epochs - 1:  # the last epoch's pass scored the model as trained
            probs = last["probs"]
        else:  # resumed after the last epoch: score it now
            t_val = time.perf_counter()
            probs, _ = predict(model, val_loader, cfg, ctx.gather, clock)
            validate += time.perf_counter() - t_val
            t_results = time.perf_counter()
        if ctx.is_main and t.val_rows is not None:
            result.update(validation_result(ctx, t.name, t.val_rows, probs))
    stages = {
        "build": build_seconds + state.setup_seconds,
        "train": state.train_seconds,
        "validate": validate,
        "checkpoint": state.checkpoint_seconds,
    }
    if cfg.compile:
        stages["compile"] = state.compile_seconds
    if cfg.cuda_graphs:
        stages["capture"] = state.capture_seconds
    if ctx.is_main:
        stages["results"] = time.perf_counter() - t_results
        write_result(t.result_file(ctx.dir), result, stages)
    return result, stages, model, state.before


def validation_result(ctx: RunContext, name: str, rows: np.ndarray, probs: np.ndarray) -> dict:
    """A fold's validation scores on its validation `rows`, and its predictions written beside it
    (`fold{k}-val.csv.gz`)."""
    from cxrbench.metrics.auroc import per_class_auroc, plain_mean, weighted_mean
    from cxrbench.results.record import write_predictions

    y = ctx.labels[rows]
    a = per_class_auroc(y, probs)
    path = f"{name}-val.csv.gz"
    sha = write_predictions(
        ctx.dir / path, ctx.bound.names(rows), ctx.bound.patients(rows), y, probs, ctx.bound.classes
    )
    return {
        "per_class": {c: finite_or_none(a[i]) for i, c in enumerate(ctx.bound.classes)},
        "weighted_auroc": finite_or_none(weighted_mean(a, y)),
        "plain_auroc": finite_or_none(plain_mean(a)),
        "predictions": {"path": path, "sha256": sha},
    }


def scoring_model(ctx: RunContext):
    """The model that scores the test set (the final run's, else fold 0's) from its verified checkpoint: with
    `bind(opts, build_model=False)` this rebuilds a finished run without loading its images (galleries)."""
    trainings = plan(ctx)
    return load_trained(ctx, trainings[-1] if ctx.protocol.final_run else trainings[0])


def load_trained(ctx: RunContext, t: Training):
    """The model of a finished training, from its verified checkpoint, on the run's device."""
    import torch

    from cxrbench.engine.train import load_checkpoint, load_model_state
    from cxrbench.run.bind import new_model

    ck = load_checkpoint(t.checkpoint(ctx.dir))
    if ck["epoch"] != ctx.protocol.epochs - 1:
        from cxrbench.errors import TrainingError

        raise TrainingError(
            f"{t.checkpoint(ctx.dir)} holds epoch {ck['epoch'] + 1} of {ctx.protocol.epochs}, but "
            f"{t.result_file(ctx.dir).name} says {t.name} is finished; remove both to train it again"
        )
    model = ctx.state.prepared.model if ctx.state.prepared is not None else new_model(ctx, False)
    ctx.state.prepared = None
    load_model_state(model, ck["model"], t.checkpoint(ctx.dir))
    model.to(ctx.device)
    if ctx.device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    return model


def _f(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.4f}"


def bce(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mean binary cross-entropy of probabilities `p` against labels `y` (the training loss, from the sigmoid's
    output; probabilities clipped to [1e-7, 1 - 1e-7]); None for no rows."""
    if len(y) == 0:
        return None
    q = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    yy = np.asarray(y, np.float64)
    return rounded(-(yy * np.log(q) + (1 - yy) * np.log1p(-q)).mean())
