"""Where a run's time goes: wall seconds per named stage (`timing.stages` in the record) and the one-line
breakdown printed at the end of a run.

Stage names are flat: `bind`, `load`, `<training>.<part>` for each training (`fold0.build`: model, loaders
and optimizer; `fold0.compile`: torch.compile's compilations; `fold0.capture`: the CUDA-graph warm-up and
capture; `fold0.train`: the other training steps; `fold0.validate`, `fold0.checkpoint`, `fold0.results`;
`final.*`), `score.predict`, `score.write`, `score.bootstrap`, `explain`, `record`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

# the breakdown line's groups in pipeline order: (label, a stage name or `*.part`: that part of every training)
_GROUPS = (
    ("bind", "bind"),
    ("load", "load"),
    ("model set-up", "*.build"),
    ("compile", "*.compile"),
    ("graph capture", "*.capture"),
    ("training", "*.train"),
    ("validation", "*.validate"),
    ("checkpoints", "*.checkpoint"),
    ("fold results", "*.results"),
    ("test predictions", "score.predict"),
    ("predictions file", "score.write"),
    ("bootstrap", "score.bootstrap"),
    ("Grad-CAM localisation", "explain"),
    ("record", "record"),
)
_ALWAYS = ("bind", "load", "training")
_ALONGSIDE = ("bootstrap", "score.bootstrap")  # a background thread while Grad-CAM and the record run: not a part
_TRAINING = re.compile(r"^(?:fold\d+|final)\.(\w+)$")


class StageClock:
    """Accumulates wall seconds per stage name for one session of a run."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as `name` (added to what `name` already holds)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def wall(self) -> float:
        """Seconds since the clock started (this session)."""
        return time.perf_counter() - self.t0


def rounded(stages: dict[str, float]) -> dict[str, float]:
    """Stage seconds as recorded: milliseconds, in the order they happened."""
    return {k: round(v, 3) for k, v in stages.items()}


def breakdown(
    stages: dict[str, float], wall: float, train_seconds: float, before: dict[str, float] | None = None
) -> str:
    """One line: this session's wall time, then each stage group with its seconds (they add up to the wall
    time), training's share of it, and what a resumed run's trainings spent before the resume (`before`, in the
    record's totals but not in this session's wall time)."""
    parts = []
    counted = 0.0
    for label, key in _GROUPS:
        s = group_seconds(stages, key)
        if (label, key) == _ALONGSIDE:
            continue
        if s >= 0.05 or label in _ALWAYS:
            parts.append(f"{label} {s:,.1f} s")
        counted += s
    other = wall - counted
    if other >= 0.05:
        parts.append(f"other {other:,.1f} s")
    share = f"; training is {100 * train_seconds / wall:.0f}% of the wall time" if wall > 0 else ""
    if (b := group_seconds(stages, _ALONGSIDE[1])) >= 0.05:
        share += f"; the {_ALONGSIDE[0]} ran alongside Grad-CAM and the record for {b:,.1f} s"
    earlier = [f"{label} {s:,.1f} s" for label, key in _GROUPS if (s := group_seconds(before or {}, key)) >= 0.05]
    resumed = f"; before the resume (not in this wall time): {', '.join(earlier)}" if earlier else ""
    return f"time: {wall:,.1f} s wall = " + ", ".join(parts) + share + resumed


def group_seconds(stages: dict[str, float], key: str) -> float:
    """Seconds of a stage name, or of one part summed over every training (`*.train`)."""
    if not key.startswith("*."):
        return stages.get(key, 0.0)
    part = key[2:]
    return sum(v for k, v in stages.items() if (m := _TRAINING.match(k)) and m.group(1) == part)
