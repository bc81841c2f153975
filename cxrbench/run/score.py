"""Stage 4, score: the scoring model's probabilities on the test split, the test predictions file
(`predictions.csv.gz`) with its sha256, and per-class and mean AUROCs with patient-level bootstrap CIs.

The bootstrap (1,000 resamples at paper size, a numba kernel that releases the GIL) runs in a background
thread while the next stage computes Grad-CAM localisation; `Scored.scores` waits for it. The figures are
the same as computed in line: the kernel is a pure function of the predictions and the seed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrbench.run.context import RunContext
from cxrbench.run.fit import Trained
from cxrbench.run.load import Images


@dataclass
class Scored:
    """The test split's rows and probabilities; on rank 0 also the predictions' sha256 and the scores."""

    test_rows: np.ndarray  # indices into the run's images
    probs: np.ndarray  # (N, C) float32
    predictions_sha256: str | None = None
    pending: Future | None = field(default=None, repr=False)  # the bootstrap, running

    @property
    def scores(self) -> Any:
        """cxrbench.metrics.auroc.Scores (waits for the bootstrap)."""
        return None if self.pending is None else self.pending.result()


def score(ctx: RunContext, images: Images, trained: Trained) -> Scored:
    """Predict the test split with the scoring model (every rank under DDP); on rank 0 write the predictions
    and start the bootstrap."""
    from cxrbench.engine.train import predict
    from cxrbench.results.record import PREDICTIONS, write_predictions

    b = ctx.bound
    rows = b.local(b.splits.test)
    with ctx.state.clock.stage("score.predict"):
        probs, _ = predict(trained.model, images.loader(ctx, rows, train=False), ctx.train_config(), ctx.gather)
    if not ctx.is_main:
        return Scored(rows, probs)
    y, patients = ctx.labels[rows], b.patients(rows)
    with ctx.state.clock.stage("score.write"):
        sha = write_predictions(ctx.dir / PREDICTIONS, b.names(rows), patients, y, probs, b.classes)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxrbench-bootstrap")
    pending = pool.submit(_bootstrap, ctx, y, probs, patients)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return Scored(rows, probs, sha, pending)


def _bootstrap(ctx: RunContext, y: np.ndarray, probs: np.ndarray, patients: np.ndarray):
    from cxrbench.metrics.auroc import score as bootstrap_scores

    p = ctx.protocol
    with ctx.state.clock.stage("score.bootstrap"):
        return bootstrap_scores(y, probs, patients, resamples=p.bootstrap, seed=p.seed)
