"""The one object commands use to talk to the terminal: tables, messages, errors and progress bars.

rich is imported lazily so that `--help` and library use stay fast.
"""

from __future__ import annotations

import os
import sys
import textwrap
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import ProgressColumn


class Display:
    """Terminal output: data goes to stdout, messages and progress to stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._out: Any = None
        self._err: Any = None
        self._out_width: int | None = None
        self._err_width: int | None = None

    @property
    def out(self):  # rich.console.Console
        width = output_width(sys.stdout)  # read each time: stdout may be redirected, COLUMNS set
        if self._out is None or self._out_width != width:
            from rich.console import Console

            self._out = Console(soft_wrap=True, width=width)
            self._out_width = width
        return self._out

    @property
    def width(self) -> int:
        """The width of data output: the terminal's; piped, `COLUMNS` when set, else a generous default."""
        return int(self.out.width)

    @property
    def err(self):  # rich.console.Console
        width = output_width(sys.stderr)
        if self._err is None or self._err_width != width:
            from rich.console import Console

            # wrapped at a terminal's width; piped, each message stays one line (logs, tests)
            self._err = Console(stderr=True, soft_wrap=width is not None, width=width)
            self._err_width = width
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
        message = plain(message, keep_newlines=True)
        sys.stdout.write(message if message.endswith("\n") else message + "\n")
        sys.stdout.flush()

    def prose(self, message: str, indent: str = "") -> None:
        """A paragraph on stdout wrapped at the output width (continuation lines indented by `indent`)."""
        lines = textwrap.wrap(
            plain(message), width=max(20, self.width - 1), subsequent_indent=indent, break_on_hyphens=False
        )
        self.text("\n".join(lines) if lines else "")

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
        justify: Sequence[str] | None = None,
        no_wrap: Sequence[str] = (),
        natural: bool = False,
    ) -> None:
        """A table on stdout, its title on a line of its own, cells wrapped to fit the output width (`no_wrap`
        columns are never wrapped: pick them with `fits`). `natural`: no cell wrapped, however wide the table
        (for a view the user asked to be wide)."""
        if title:
            self.prose(title)
        if not natural:
            self.out.print(_table(columns, rows, justify, no_wrap))
            return
        from rich.console import Console
        from rich.measure import Measurement

        rows = [list(r) for r in rows]
        t = _table(columns, rows, justify, columns)
        wide = Console(width=100_000, file=sys.stdout, soft_wrap=True)
        width = max(self.width, Measurement.get(wide, wide.options, t).maximum)
        Console(width=width, file=sys.stdout, soft_wrap=True, color_system=self.out.color_system).print(t)

    def fits(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        """Whether `table(columns, rows)` fits the output width with no cell wrapped."""
        import io

        from rich.console import Console
        from rich.measure import Measurement

        c = Console(width=100_000, file=io.StringIO())
        return Measurement.get(c, c.options, _table(columns, rows, None, columns)).maximum <= self.width

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


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]], justify: Sequence[str] | None, no_wrap):
    """The one table style: a header rule, two spaces between columns, no frame."""
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(
            plain(c),
            justify=(justify[i] if justify else "left"),  # type: ignore[arg-type]
            no_wrap=c in no_wrap,
            overflow="fold",
        )
    for r in rows:
        t.add_row(*[_escape(str(v)) for v in r])
    return t


DEFAULT_WIDTH = 200  # piped output with no COLUMNS: files, CI logs


def output_width(stream: Any) -> int | None:
    """The width for a stream: None (the terminal's, or `COLUMNS` when set, as rich reads it) for a terminal;
    piped, `COLUMNS` when set, else DEFAULT_WIDTH."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else DEFAULT_WIDTH


def plain(text: str, keep_newlines: bool = False) -> str:
    """Untrusted text made inert for a terminal or a page: control and format characters (escape sequences,
    bidi overrides such as U+202E and U+2066..U+2069, zero-width characters) shown as `<U+XXXX>`, so that no
    name can reorder, hide or restyle what is printed beside it."""
    out = []
    for ch in str(text):
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    return "".join(out)


def _escape(s: str) -> str:
    from rich.markup import escape

    return escape(plain(s))


class _RateColumn:
    """Items per second, e.g. `412 images/s` (built lazily as a rich ProgressColumn)."""

    def __new__(cls, unit: str) -> ProgressColumn:  # type: ignore[misc]  # a factory: returns a rich column
        from rich.progress import ProgressColumn
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task):
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
