"""`--tensorboard DIR`: a run's training curves as TensorBoard event files, the figures of its history.csv.

A side output, not part of the run: nothing of it enters the record, run.json or the run's identity. Each
training of a run (fold0, ..., final) gets its own folder, DIR/<run id>/<training>, so that TensorBoard shows
one curve per training and per run; every scalar is stored in double precision at step = epoch (from 1), so
that it reads back equal to history.csv. TensorBoard is an optional extra (`pip install 'cxrbench[tensorboard]'`).
"""

from __future__ import annotations

from pathlib import Path

from cxrbench.errors import InstallError

EXTRA = "pip install 'cxrbench[tensorboard]'"


def require_tensorboard() -> None:
    """Check that TensorBoard's writer can be imported, before a run starts: an InstallError in one line naming
    the extra to install otherwise."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise InstallError(f"--tensorboard needs TensorBoard, which is not installed here: {EXTRA}") from None


def write_events(folder: Path, trainings: list[tuple[str, dict]]) -> list[Path]:
    """Event files in `folder`/<training> for every training's history rows (as history.csv has them: per
    epoch train_loss, val_loss, val_weighted_auroc, val_plain_auroc, lr, images_per_s, seconds; unmeasured
    figures left out). Returns the training folders written."""
    from torch.utils.tensorboard import SummaryWriter

    from cxrbench.files import make_dirs
    from cxrbench.results.history import HISTORY_COLUMNS

    written = []
    for name, result in trainings:
        sub = make_dirs(folder / name)
        with SummaryWriter(log_dir=str(sub)) as w:
            for h in result.get("history", []):
                step = int(h["epoch"]) + 1
                for tag in HISTORY_COLUMNS[2:]:
                    v = h.get(tag)
                    if v is not None:
                        w.add_scalar(tag, float(v), step, new_style=True, double_precision=True)
        written.append(sub)
    return written
