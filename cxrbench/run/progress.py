"""What a run shows while it trains, and says when it is stopped.

One progress bar covers every epoch of every training still to run (in images, over every rank), so its rate
and time left are the whole run's; each epoch also prints a line. `RunInterrupted` carries the message for
Ctrl-C: where the run stopped, its last checkpoint, and that `--resume` continues from there.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from cxrbench.run.context import RunContext


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with a message saying where it stopped and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TrainingBar:
    """The handle `train.fit` advances: prefixes the training's name, counts images over every rank, keeps
    `ctx.state.where` current for the interruption message, and shows the rate the record gives (`train_images /
    train_seconds` over every training: `timing.train_images_per_s`, the run's summary line)."""

    def __init__(self, ctx: RunContext, handle) -> None:
        self.ctx = ctx
        self.handle = handle
        self._done = (0.0, 0.0)  # images and training seconds of the trainings before this one
        self._current = (0.0, 0.0)

    def start(self, name: str) -> None:
        self.ctx.state.training = name
        self.ctx.state.where = name
        self._done = (self._done[0] + self._current[0], self._done[1] + self._current[1])
        self._current = (0.0, 0.0)
        self._set(description=name)

    def advance(self, images: int) -> None:
        if self.handle is not None:
            self.handle.advance(images * self.ctx.world)

    def update(
        self,
        description: str | None = None,
        status: str | None = None,
        work: tuple[float, float, float, float] | None = None,
    ) -> None:
        if description is not None:
            self.ctx.state.where = f"{self.ctx.state.training} {description}"
            self._set(description=self.ctx.state.where)
        if status is not None:
            self._set(status=status)
        if work is not None:  # before this epoch (every rank), then this epoch's images on this rank
            images, seconds, seen, epoch_seconds = work
            self._current = (images + seen * self.ctx.world, seconds + epoch_seconds)
            self._set(work=(self._done[0] + self._current[0], self._done[1] + self._current[1]))

    def _set(self, **kw) -> None:
        if self.handle is not None:
            self.handle.update(**kw)


def training_bar(ctx: RunContext, total_images: int):
    """A context yielding the run's `TrainingBar` (a bar on rank 0's display, bookkeeping elsewhere)."""
    from contextlib import contextmanager

    @contextmanager
    def bar():
        display = ctx.display if ctx.is_main and total_images > 0 else None
        with display.progress("training", total=total_images, unit="images") if display else nullcontext() as h:
            yield TrainingBar(ctx, h)

    return bar()


def interrupted_message(ctx: RunContext, checkpoint: Path | None, checkpoint_epoch: int | None) -> str:
    """Where a run stopped (stage, training and epoch, last checkpoint) and how to continue it."""
    resume = "run the same command with --resume to continue from there"
    if ctx.state.stage == "fit" and ctx.state.training is None:
        return f"interrupted before the first training started; {resume}"
    if ctx.state.stage == "fit":
        if checkpoint is not None and checkpoint_epoch is not None:
            saved = f"last checkpoint {checkpoint} (after epoch {checkpoint_epoch + 1})"
        else:
            saved = f"no checkpoint of {ctx.state.training} yet, so it starts again from its first epoch"
        return f"interrupted in {ctx.state.where or 'training'}; {saved}; {resume}"
    if ctx.state.stage in ("score", "explain", "record"):
        return (
            f"interrupted while {_DOING[ctx.state.stage]}: every model is trained and checkpointed in {ctx.dir}; "
            "run the same command with --resume to finish the record without training again"
        )
    stage = ctx.state.stage
    return f"interrupted while {_DOING.get(stage, stage)}, before any training: run the command again"


_DOING = {
    "bind": "preparing the run",
    "folder": "preparing the run folder",
    "load": "loading images",
    "score": "scoring the test set",
    "explain": "computing Grad-CAM localisation",
    "record": "writing the record",
}
