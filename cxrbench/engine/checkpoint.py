"""Checkpoint files: written atomically, checksummed, verified before anything in them is used.

A file is a short text header and the `torch.save` payload:

    CXRBENCH-CHECKPOINT
    {"format": 2, "bytes": N, "sha256": "<hex of the payload>", "epoch": E}
    <N bytes: torch.save(...)>

`load_checkpoint` refuses a file whose payload does not match its sha256 (one flipped byte), a truncated
file and a file without the header (written by cxrbench before checksums), each with the reason and what to
do; the payload then loads with `torch.load(weights_only=True)`, so a checkpoint never runs code. The header's
epoch is only a hint for progress displays (`checkpoint_epoch`); the verified payload is what a resume uses.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from cxrbench.errors import TrainingError
from cxrbench.files import atomic_open, make_dirs, read_regular

MAGIC = b"CXRBENCH-CHECKPOINT\n"
FILE_FORMAT = 2
_HEADER_MAX = 4096  # bytes of the JSON header line at most
MAX_CHECKPOINT_BYTES = 16 << 30  # a regular file, never a FIFO; the largest registered model is far below


def save_checkpoint(path: Path, payload: dict[str, Any], epoch: int | None = None) -> None:
    """Atomic: write header + payload to a temp file beside `path`, fsync it, rename over `path`, fsync the
    folder. A failure at any point leaves the previous checkpoint as it was."""
    import torch

    make_dirs(path.parent)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
    header = {"format": FILE_FORMAT, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if epoch is not None:
        header["epoch"] = int(epoch)
    # a full disk or a read-only folder is one WriteError line naming the file; the previous checkpoint stays
    with atomic_open(path) as fh:
        fh.write(MAGIC)
        fh.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        fh.write(data)


def _fix(path: Path, advice: bool = True) -> str:
    """What the run's owner can do about a refused checkpoint (only `cxrbench run` gives it: someone predicting
    with another's run folder has no run to resume)."""
    if not advice:
        return ""
    return (
        f"; remove {path} to train that part again from its start (a run resumes with --resume), or put back an "
        "intact copy"
    )


def _header(path: Path, advice: bool) -> tuple[dict[str, Any], int]:
    """The checked header of a checkpoint file and the file size it implies (magic, header line, payload),
    read from the file's first bytes only: a file of another size is refused before its payload is read."""
    head = read_regular(path, len(MAGIC) + _HEADER_MAX, "the checkpoint", TrainingError, head=True)
    fix = _fix(path, advice)
    if not head.startswith(MAGIC):
        what = (
            "it has no checksum (written by an older cxrbench), so it cannot be verified"
            if head[:4] == b"PK\x03\x04"
            else "it is not a cxrbench checkpoint (no header)"
        )
        raise TrainingError(f"checkpoint {path} is refused: {what}{fix}")
    end = head.find(b"\n", len(MAGIC), len(MAGIC) + _HEADER_MAX)
    try:
        header = json.loads(head[len(MAGIC) : end]) if end > 0 else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    n = header.get("bytes") if isinstance(header, dict) else None
    if (
        not isinstance(header, dict)
        or not isinstance(n, int)
        or isinstance(n, bool)
        or n < 0
        or not isinstance(header.get("sha256"), str)
    ):
        raise TrainingError(f"checkpoint {path} is refused: its header is damaged{fix}")
    if header.get("format") != FILE_FORMAT:
        raise TrainingError(
            f"checkpoint {path} has file format {header.get('format')!r}; this cxrbench reads {FILE_FORMAT}{fix}"
        )
    return header, end + 1 + n


def read_payload(path: Path, file_sha256: str | None = None, *, advice: bool = True) -> bytes:
    """The verified payload bytes of a checkpoint file (never through a link), or a TrainingError saying what is
    wrong (and, with `advice`, what the run's owner can do). The header is read first and the file must have
    exactly the size it states, so a file grown to gigabytes is refused without reading it. With
    `file_sha256` (the sha256 a run record gives for the whole file), other bytes are a RecordError."""
    from cxrbench.files import read_regular_stat

    header, size = _header(path, advice)
    fix = _fix(path, advice)
    try:
        raw, _ = read_regular_stat(path, min(size, MAX_CHECKPOINT_BYTES), "the checkpoint", TrainingError)
    except TrainingError as e:
        raise TrainingError(f"{e} (its header gives {size:,} bytes){fix}") from None
    if len(raw) != size:
        raise TrainingError(
            f"checkpoint {path} is refused: it is truncated or was extended ({len(raw):,} bytes, its header "
            f"gives {size:,}){fix}"
        )
    if file_sha256 is not None and hashlib.sha256(raw).hexdigest() != file_sha256:
        from cxrbench.errors import RecordError

        raise RecordError(
            f"checkpoint {path} is not the one the run record names (its sha256 differs): it was replaced or "
            "changed after the run"
        )
    data = raw[size - header["bytes"] :]
    if hashlib.sha256(data).hexdigest() != header["sha256"]:
        raise TrainingError(
            f"checkpoint {path} is refused: its content does not match its sha256 (the file was "
            f"damaged or changed after it was written){fix}"
        )
    return data


def checkpoint_sha256(path: Path) -> str:
    """The sha256 of a whole checkpoint file (what a run record names), read as a regular file."""
    h = hashlib.sha256(read_regular(path, MAX_CHECKPOINT_BYTES, "the checkpoint", TrainingError))
    return h.hexdigest()


CHECKPOINT_VERSION = 2  # the payload layout a training checkpoint has (engine/train.py writes it)


def load_checkpoint(
    path: Path, version: int | None = CHECKPOINT_VERSION, file_sha256: str | None = None, *, advice: bool = True
) -> dict[str, Any]:
    """The one checkpoint loader: a verified checkpoint's payload (`torch.load(weights_only=True)` on CPU)
    whose own `version` field equals `version` (the training checkpoint's unless told; None skips the check);
    `file_sha256` and `advice` as in `read_payload`."""
    import torch

    data = read_payload(path, file_sha256, advice=advice)
    fix = _fix(path, advice)
    try:
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        first = " ".join(str(e).split())[:200]
        raise TrainingError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {first}){fix}") from None
    if not isinstance(ck, dict):
        raise TrainingError(f"checkpoint {path} holds no checkpoint dictionary{fix}")
    if version is not None and ck.get("version") != version:
        raise TrainingError(f"checkpoint {path} has version {ck.get('version')!r}, expected {version}{fix}")
    return ck


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint's header names (unverified: for progress and messages only), or None."""
    try:
        head = read_regular(path, len(MAGIC) + _HEADER_MAX, "the checkpoint", TrainingError, head=True)
    except TrainingError:
        return None
    if not head.startswith(MAGIC):
        return None
    end = head.find(b"\n", len(MAGIC))
    try:
        epoch = json.loads(head[len(MAGIC) : end]).get("epoch")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return epoch if isinstance(epoch, int) else None
