"""The one object commands use to talk to the terminal: tables, messages, errors and progress bars.

rich is imported lazily so that `--help` and library use stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class Display:
    """Terminal output: data goes to stdout, messages and progress to stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._out = None
        self._err = None

    @property
    def out(self):  # rich.console.Console
        if self._out is None:
            from rich.console import Console

            # piped output (files, CI logs, tests) is not squeezed into 80 columns
            self._out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
        return self._out

    @property
    def err(self):  # rich.console.Console
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, soft_wrap=True)
        return self._err

    def info(self, message: str) -> None:
        """A status line on stderr (suppressed by quiet)."""
        if not self.quiet:
            self.err.print(_escape(message), highlight=False)

    def warn(self, message: str) -> None:
        """A warning on stderr, always shown."""
        self.err.print(f"[yellow]warning:[/yellow] {_escape(message)}", highlight=False)

    def error(self, message: str) -> None:
        """One error line on stderr."""
        self.err.print(f"[bold red]error:[/bold red] {_escape(message)}", highlight=False)

    def text(self, message: str) -> None:
        """Plain data text on stdout (never styled, safe to pipe)."""
        sys.stdout.write(message if message.endswith("\n") else message + "\n")
        sys.stdout.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
        justify: Sequence[str] | None = None,
    ) -> None:
        """A rich table on stdout."""
        from rich.table import Table

        t = Table(title=title, header_style="bold")
        for i, c in enumerate(columns):
            t.add_column(c, justify=(justify[i] if justify else "left"))  # type: ignore[arg-type]
        for r in rows:
            t.add_row(*[_escape(str(v)) for v in r])
        self.out.print(t)

    @contextmanager
    def progress(self, description: str, total: int | None, unit: str = "images") -> Iterator[ProgressHandle]:
        """A progress bar with rate and time left; yields a handle with `advance(n)`."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _RateColumn(unit),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        ]
        with Progress(*columns, console=self.err, disable=self.quiet, transient=False) as prog:
            task = prog.add_task(description, total=total, status="")
            yield ProgressHandle(prog, task)


class ProgressHandle:
    """What a progress context yields: advance the bar, change its text."""

    def __init__(self, prog: Any, task: Any) -> None:
        self._prog = prog
        self._task = task

    def advance(self, n: float = 1) -> None:
        self._prog.advance(self._task, n)

    def update(self, **kw: Any) -> None:
        """Set `description`, `total`, `completed` or `status` (a free text field)."""
        self._prog.update(self._task, **kw)


def _escape(s: str) -> str:
    from rich.markup import escape

    return escape(s)


class _RateColumn:
    """Items per second, e.g. `412 images/s` (built lazily as a rich ProgressColumn)."""

    def __new__(cls, unit: str):  # type: ignore[misc]
        from rich.progress import ProgressColumn
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task):  # type: ignore[override]
                speed = task.finished_speed or task.speed
                if speed is None:
                    return Text(f"- {unit}/s", style="progress.data.speed")
                return Text(f"{speed:,.0f} {unit}/s", style="progress.data.speed")

        return Rate()


_display: Display | None = None


def get_display() -> Display:
    """The process-wide display (created on first use)."""
    global _display
    if _display is None:
        _display = Display()
    return _display
