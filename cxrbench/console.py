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
from typing import Any


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
        """A progress line (bar, count, rate, time left) fitted to the width: a redrawn bar on a terminal, plain
        lines every `PLAIN_EVERY` seconds and at the end when output is not one; yields a handle with `advance(n)`."""
        state = _BarState(description, total, unit)
        if self.quiet:
            yield ProgressHandle(state, None)
            return
        if not self.err.is_terminal:
            handle = ProgressHandle(state, lambda: self._plain_line(state))
            try:
                yield handle
            except BaseException:
                state.stop()
                if state.advanced:  # a refusal before any work leaves no progress line before its error
                    self._plain_line(state, force=True)
                raise
            state.stop()
            self._plain_line(state, force=True)
            return
        from rich.live import Live

        with Live(_BarRenderable(state), console=self.err, refresh_per_second=10, transient=False) as live:
            try:
                yield ProgressHandle(state, None)
            except BaseException:
                live.transient = not state.advanced  # erased when it refused before any work
                raise
            finally:
                state.stop()
                live.refresh()

    def _plain_line(self, state: _BarState, force: bool = False) -> None:
        """One plain progress line (no bar) when `PLAIN_EVERY` seconds passed since the last, or `force`."""
        import time

        now = time.monotonic()
        if not force and now - state.printed < PLAIN_EVERY:
            return
        state.printed = now
        width = self.err.width - 1
        self.err.print(_escape(progress_line(state, width, bar=False).plain), highlight=False, soft_wrap=True)


PLAIN_EVERY = 10.0  # seconds between two plain progress lines when output is not a terminal


def rate(items: float, seconds: float) -> float | None:
    """The one definition of a rate that a bar and its summary line share: items per second of work."""
    return items / seconds if seconds > 0 else None


class _BarState:
    """What a progress line shows: counts, the work clock and a free status text."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        import time

        self.description, self.total, self.unit = description, total, unit
        self.completed = 0.0
        self.status = ""
        self.t0 = time.monotonic()
        self.t_stop: float | None = None
        self.start_completed = 0.0  # what was done before this session (a resumed build): not in the rate
        self.work: tuple[float, float] | None = None  # (items, seconds) measured by the caller's own clock
        self.printed = self.t0
        self.advanced = False

    def elapsed(self) -> float:
        import time

        return (self.t_stop if self.t_stop is not None else time.monotonic()) - self.t0

    def stop(self) -> None:
        import time

        if self.t_stop is None:
            self.t_stop = time.monotonic()

    def rate(self) -> float | None:
        """Items per second: the caller's `work` when it set one, else this session's items over the elapsed time."""
        if self.work is not None:
            return rate(*self.work)
        return rate(self.completed - self.start_completed, self.elapsed())

    def left(self) -> float | None:
        r = self.rate()
        if self.total is None or not r:
            return None
        return max(0.0, self.total - self.completed) / r


class ProgressHandle:
    """What a progress context yields: advance the bar, change its text."""

    def __init__(self, state: _BarState, changed: Any) -> None:
        self._state = state
        self._changed = changed

    def advance(self, n: float = 1) -> None:
        self._state.completed += n
        self._state.advanced = True
        if self._changed is not None:
            self._changed()

    def update(self, **kw: Any) -> None:
        """Set `description`, `total`, `completed` (what is already done when the bar starts, before any advance,
        is kept out of the rate), `status` (a free text field) or `work` ((items, seconds) by the caller's own
        clock: the rate shown is then items/seconds, the same as the caller's summary line)."""
        s = self._state
        for k, v in kw.items():
            if k not in ("description", "total", "completed", "status", "work"):
                raise TypeError(f"unknown progress field {k!r}")
            setattr(s, k, v)
        if "completed" in kw and not s.advanced:
            s.start_completed = s.completed
        if self._changed is not None:
            self._changed()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _count(x: float) -> str:
    return f"{x:,.0f}"


def progress_line(state: _BarState, width: int, bar: bool = True):
    """The progress line as rich Text no wider than `width`: fields are dropped (elapsed time first, then the
    percentage, the bar, the status, time left, the rate) and the description shortened before it would wrap."""
    from rich.cells import cell_len, set_cell_size
    from rich.text import Text

    total = state.total
    r = state.rate()
    idle = total is None and not state.advanced  # a spinner for work it cannot count: its time alone
    fields = {
        "count": ""
        if idle
        else f"{_count(state.completed)}/{_count(total)}"
        if total is not None
        else _count(state.completed),
        "pct": f"{100 * state.completed / total:.0f}%" if total else "",
        "rate": "" if idle else f"{r:,.0f} {state.unit}/s" if r is not None else f"- {state.unit}/s",
        "elapsed": _clock(state.elapsed()),
        "left": f"{_clock(state.left())} left" if total is not None else "",
        "status": plain(state.status),
    }
    order = ["count", "pct", "rate", "elapsed", "left", "status"]  # as shown, after description and bar
    drop = ["elapsed", "pct", "bar", "status", "left", "rate"]  # first dropped first
    styles = {
        "count": "progress.download",
        "pct": "progress.percentage",
        "rate": "progress.data.speed",
        "elapsed": "progress.elapsed",
        "left": "progress.remaining",
        "status": "",
    }
    shown = [k for k in order if fields[k]]
    use_bar = bar and total is not None
    desc = plain(state.description)
    min_bar = 10

    def length(keys: list[str], with_bar: bool) -> int:
        n = cell_len(desc) + sum(cell_len(fields[k]) + 1 for k in keys)
        return n + (min_bar + 1 if with_bar else 0)

    for k in drop:
        if length(shown, use_bar) <= width:
            break
        if k == "bar":
            use_bar = False
        elif k in shown:
            shown.remove(k)
    room = width - length(shown, False)
    if room < 0:  # still too wide: shorten the description (in terminal cells: a wide character counts two)
        desc = set_cell_size(desc, max(1, cell_len(desc) + room - 1)).rstrip() + "…"
    t = Text()
    t.append(desc, style="bold")
    if use_bar:
        w = max(min_bar, width - length(shown, False) - 1)
        done = 0 if not total else min(w, int(round(w * state.completed / total)))
        t.append(" ")
        t.append("━" * done, style="bar.finished" if done == w else "bar.complete")
        t.append("━" * (w - done), style="bar.back")
    for k in shown:
        t.append(" ")
        t.append(fields[k], style=styles[k])
    return t


class _BarRenderable:
    """A live progress line, fitted to the console's width each time it is drawn."""

    def __init__(self, state: _BarState) -> None:
        self.state = state

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        yield progress_line(self.state, options.max_width - 1)


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


_display: Display | None = None


def get_display() -> Display:
    """The process-wide display (created on first use)."""
    global _display
    if _display is None:
        _display = Display()
    return _display
