"""The model that scored a finished run, rebuilt from its run folder: one function for every reader (predict,
export, `load_run().model()`, the gallery, the paper study's figures) so that the checkpoint chosen, its checks
and the device placement agree. A run folder may be someone else's: the checkpoint must be the file the record
names (its sha256), the model the record names must have the record's size before it is built for real, and a
checkpoint that does not fit the model is a RecordError naming the file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from cxrbench.errors import RecordError

CHECKPOINT_FIELD = "scoring_checkpoint"  # the record's {"path", "sha256"} of the checkpoint that scored the test set
_untied_said: set[Path] = set()  # run folders already warned about (once per process)


def scoring_checkpoint(run_dir: Path, final_run: bool) -> Path:
    """The checkpoint whose model scored the test split: `final.pt` under a final-run protocol, else fold 0's."""
    return Path(run_dir) / ("final.pt" if final_run else "fold0.pt")


def expected_sha256(run_dir: Path, record: Mapping[str, Any], final_run: bool) -> str | None:
    """The sha256 the record gives for the scoring checkpoint, None for a record made before records named it
    (said once, as a warning); a record naming another file is a RecordError."""
    path = scoring_checkpoint(run_dir, final_run)
    tied = record.get(CHECKPOINT_FIELD)
    if tied is None:
        if path not in _untied_said:
            from cxrbench.console import get_display

            _untied_said.add(path)
            get_display().warn(
                f"{Path(run_dir) / 'record.json'} names no checkpoint (made before records did): {path.name} is "
                "not tied to the record, only checked against its own header"
            )
        return None
    if tied["path"] != path.name:
        raise RecordError(
            f"{Path(run_dir) / 'record.json'}: field {CHECKPOINT_FIELD}.path is {tied['path']!r}; the model that "
            f"scored this protocol's test set is {path.name}"
        )
    return str(tied["sha256"])


def load_scored_model(
    run_dir: Path,
    record: Mapping[str, Any],
    model: str,
    num_classes: int,
    final_run: bool,
    device: str = "cpu",
) -> nn.Module:
    """The registered `model` with the weights of the run's scoring checkpoint, on `device`, in eval mode.
    `record` is the run's validated record: the checkpoint file must have the sha256 it names (when it names
    one), and the model, built first without memory (meta device), must have its `model.parameters`. The
    checkpoint is verified (header sha256, version); any problem is a CxrbenchError naming the file."""
    from cxrbench.engine.checkpoint import load_checkpoint

    path = scoring_checkpoint(run_dir, final_run)
    want = expected_sha256(run_dir, record, final_run)
    _check_size(run_dir, record, model, num_classes)
    ck = load_checkpoint(path, file_sha256=want, advice=False)
    state = ck.get("model")
    if not isinstance(state, dict):
        raise RecordError(f"checkpoint {path} holds no model weights (no 'model' dictionary)")
    from cxrbench.models import create_model

    net = create_model(model, num_classes=num_classes, pretrained=False)
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        first = " ".join(str(e).split())[:200]
        raise RecordError(f"checkpoint {path} does not hold the weights of model {model} ({first})") from None
    return net.to(device).eval()


def _check_size(run_dir: Path, record: Mapping[str, Any], model: str, num_classes: int) -> None:
    """The model the record names, built on the meta device (no memory, no weights), has the record's parameter
    count: a record naming a far larger architecture is refused before it is built for real."""
    want = record.get("model", {}).get("parameters")
    if not isinstance(want, int):
        return
    from cxrbench.models.registry import parameters_of

    try:
        got = parameters_of(model, num_classes)
    except Exception:  # a model that cannot be built without memory is checked by its weights alone
        return
    if got != want:
        raise RecordError(
            f"{Path(run_dir) / 'record.json'}: field model.parameters is {want:,}, but model {model} with "
            f"{num_classes} classes has {got:,}"
        )
