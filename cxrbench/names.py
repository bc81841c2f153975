"""The one rule for a name that becomes a component of a path: run ids (`run --run-id`, a record's
`run_id` that `submit` files), protocol keys and file names read from a record. Writers and readers both
apply it, so a name that `submit` would refuse is never written in the first place."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxrbench.errors import CxrbenchError, RecordError

MAX_NAME = 128
# no separators, no `..`, no leading dot or dash
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+@][A-Za-z0-9._+@-]*")


def is_safe_name(name: Any) -> bool:
    """Whether `name` may become one component of a path (see `safe_name`)."""
    return (
        isinstance(name, str) and 1 <= len(name) <= MAX_NAME and ".." not in name and bool(_SAFE_NAME.fullmatch(name))
    )


def safe_name(
    name: Any, what: str, source: str | Path = "record", error: Callable[[str], CxrbenchError] = RecordError
) -> str:
    """`name` when it may become one component of a path: [A-Za-z0-9._+@-], no `..`, at most 128 characters,
    not starting with a dot or a dash; else an `error` (RecordError by default) naming `what` and `source`."""
    if not is_safe_name(name):
        raise error(
            f"{source}: {what} {str(name)[:MAX_NAME]!r} is not a safe name (letters, digits and ._+@- "
            f"only, no '..', no leading dot or dash, at most {MAX_NAME} characters)"
        )
    return name
