"""sha256 of files: as stored, and of their content with gzip undone (so x.csv and x.csv.gz agree)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_sha256(path: Path) -> str:
    """sha256 of a file's content, gzip transparently undone."""
    from cxrbench.data.metadata import read_text_maybe_gz

    return hashlib.sha256(read_text_maybe_gz(path)).hexdigest()
