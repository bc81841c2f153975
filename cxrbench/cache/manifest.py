"""A complete cache's `manifest.json` as a typed, frozen object with one parser.

`Manifest.from_dict` checks what a reader relies on (a cxrbench cache, the format version this cxrbench reads,
a finished build, a chunk layout and codecs it can decode) and refuses anything else with the reason and the
fix; the object is then trusted. The dict as read stays in `raw` (the cache fingerprint and the build's
comparisons use it), so nothing on disk changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cxrbench.cache.constants import CHUNK_IMAGES, CODECS, FORMAT, FORMAT_VERSION, MANIFEST
from cxrbench.errors import CacheError


@dataclass(frozen=True)
class Manifest:
    """What a complete cache holds: `n_images` images of `size` x `size` px in chunks of `chunk_images`, the
    checksum of every chunk, the images the build could not decode, and the build's parameters and inputs."""

    raw: Mapping[str, Any]
    format_version: int
    n_images: int
    size: int
    chunk_images: int
    chunk_count: int
    checksums: Mapping[str, str]
    bad_images: tuple[str, ...]
    params: Mapping[str, Any]
    inputs: Mapping[str, Any]

    @classmethod
    def from_dict(cls, m: object, folder: str | Path) -> Manifest:
        """The manifest of the cache at `folder`, or a CacheError saying what is wrong and what to do."""
        p = Path(folder)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise CacheError(f"{p}: not a cxrbench cache (no {MANIFEST})")
        if m.get("format_version") != FORMAT_VERSION:
            raise CacheError(
                f"{p}: cache format version {m.get('format_version')} is not supported by this "
                f"cxrbench (reads version {FORMAT_VERSION}); rebuild it"
            )
        if not m.get("complete"):
            raise CacheError(
                f"{p}: the cache is not complete (its build was interrupted or failed); run "
                "`cxrbench cache build` again with the same options to finish it"
            )
        check_layout(m, p)
        params, n, chunks = m["params"], m["n_images"], m["chunks"]
        return cls(
            raw=MappingProxyType(m),
            format_version=FORMAT_VERSION,
            n_images=n,
            size=params["size"],
            chunk_images=params["chunk_images"],
            chunk_count=chunks["count"],
            checksums=MappingProxyType(chunks["checksums"]),
            bad_images=tuple(b["name"] for b in m.get("bad_images", [])),
            params=MappingProxyType(params),
            inputs=MappingProxyType(m.get("inputs", {})),
        )


def check_layout(m: dict[str, Any], folder: str | Path) -> None:
    """Refuse a manifest (complete or not) whose layout this reader cannot decode: chunking, codecs, sizes,
    counts and checksums of the types cxrbench writes."""
    p = Path(folder)
    try:
        params, n = m["params"], m["n_images"]
        size, c, chunks = params["size"], params["chunk_images"], m["chunks"]
        count, sums = chunks["count"], chunks["checksums"]
        bad = tuple(b["name"] for b in m.get("bad_images", []))
        ok = (
            all(isinstance(x, int) and not isinstance(x, bool) for x in (n, size, c, count))
            and params.get("codecs") == CODECS
            and c == CHUNK_IMAGES
            and 8 <= size <= 4096
            and n >= 0
            and count == (n + c - 1) // c
            and isinstance(sums, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in sums.items())
            and all(isinstance(b, str) for b in bad)
            and isinstance(m.get("inputs", {}), dict)
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise CacheError(
            f"{p}/{MANIFEST}: damaged manifest (its parameters, counts or checksums are not what "
            "cxrbench writes); rebuild the cache"
        )
