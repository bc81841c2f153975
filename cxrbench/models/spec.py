"""What the benchmark knows about a registered model (`ModelSpec`), and who registered it.

The registry, the entry-point loader and the file-plugin loader all build on this module; it imports none of
them, so the model machinery has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

ENTRY_POINT_GROUP = "cxrbench.models"


@dataclass(frozen=True)
class ModelSpec:
    """What the benchmark needs to know about a registered model."""

    name: str
    factory: Callable[..., Any] | None  # None for an entry point not loaded yet
    cam_layer: str = ""
    input_size: int = 224
    nonimage: bool = False  # forward(x, features) with the 5 non-image features
    attention: bool = False  # forward(..., return_attention=True) -> (logits, [maps])
    description: str = ""
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "built-in"})
    target: str | None = None  # "module:attr" of a lazy entry point

    @property
    def source_text(self) -> str:
        s = self.source
        if s["kind"] == "entry point":
            return f"entry point {s.get('distribution', '?')} {s.get('version', '')}".strip()
        if s["kind"] == "file":
            return f"file {s['path']}"
        return s["kind"]


_current_source: list[dict[str, Any]] = [{"kind": "built-in"}]


def current_source() -> dict[str, Any]:
    """The source that registrations made now are attributed to (a copy)."""
    return dict(_current_source[-1])


@contextmanager
def loading_source(source: dict[str, Any]) -> Iterator[None]:
    """Registrations made inside this block are attributed to `source` (a plugin being loaded)."""
    _current_source.append(source)
    try:
        yield
    finally:
        _current_source.pop()


def who(src: dict[str, Any]) -> str:
    """A source as the subject of an error message."""
    if src["kind"] == "file":
        return f"plugin file {src['path']}"
    if src["kind"] == "entry point":
        return f"plugin {src.get('name')} ({src.get('distribution')})"
    return "cxrbench"
