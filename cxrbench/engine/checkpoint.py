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


def _fix(path: Path) -> str:
    return (
        f"remove {path} to train that part again from its start (a run resumes with --resume), or put back an "
        "intact copy"
    )


def read_payload(path: Path) -> bytes:
    """The verified payload bytes of a checkpoint file, or a TrainingError saying what is wrong and what to do."""
    try:
        raw = read_regular(path, MAX_CHECKPOINT_BYTES, "the checkpoint", TrainingError, follow=True)
    except TrainingError as e:
        raise TrainingError(f"{e}; {_fix(path)}") from None
    if not raw.startswith(MAGIC):
        what = (
            "it has no checksum (written by an older cxrbench), so it cannot be verified"
            if raw[:4] == b"PK\x03\x04"
            else "it is not a cxrbench checkpoint (no header)"
        )
        raise TrainingError(f"checkpoint {path} is refused: {what}; {_fix(path)}")
    end = raw.find(b"\n", len(MAGIC), len(MAGIC) + _HEADER_MAX)
    try:
        header = json.loads(raw[len(MAGIC) : end]) if end > 0 else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if (
        not isinstance(header, dict)
        or not isinstance(header.get("bytes"), int)
        or not isinstance(header.get("sha256"), str)
    ):
        raise TrainingError(f"checkpoint {path} is refused: its header is damaged; {_fix(path)}")
    if header.get("format") != FILE_FORMAT:
        raise TrainingError(
            f"checkpoint {path} has file format {header.get('format')!r}; this cxrbench reads "
            f"{FILE_FORMAT}; {_fix(path)}"
        )
    data = raw[end + 1 :]
    if len(data) != header["bytes"]:
        raise TrainingError(
            f"checkpoint {path} is refused: it is truncated or was extended ({len(data):,} bytes of "
            f"payload, {header['bytes']:,} written); {_fix(path)}"
        )
    if hashlib.sha256(data).hexdigest() != header["sha256"]:
        raise TrainingError(
            f"checkpoint {path} is refused: its content does not match its sha256 (the file was "
            f"damaged or changed after it was written); {_fix(path)}"
        )
    return data


CHECKPOINT_VERSION = 2  # the payload layout a training checkpoint has (engine/train.py writes it)


def load_checkpoint(path: Path, version: int | None = CHECKPOINT_VERSION) -> dict[str, Any]:
    """The one checkpoint loader: a verified checkpoint's payload (`torch.load(weights_only=True)` on CPU)
    whose own `version` field equals `version` (the training checkpoint's unless told; None skips the check)."""
    import torch

    data = read_payload(path)
    try:
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {e}); {_fix(path)}") from e
    if not isinstance(ck, dict):
        raise TrainingError(f"checkpoint {path} holds no checkpoint dictionary; {_fix(path)}")
    if version is not None and ck.get("version") != version:
        raise TrainingError(f"checkpoint {path} has version {ck.get('version')}, expected {version}; {_fix(path)}")
    return ck


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint's header names (unverified: for progress and messages only), or None."""
    try:
        head = read_regular(path, len(MAGIC) + _HEADER_MAX, "the checkpoint", TrainingError, follow=True, head=True)
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
