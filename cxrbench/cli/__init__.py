"""The `cxrbench` command line: a click group whose subcommands live one file per group and load lazily."""

from __future__ import annotations

import importlib
import sys

import click

from cxrbench import __version__
from cxrbench.errors import CxrbenchError

# command name -> "module:attribute"; modules are imported only when the command runs or shows its help.
COMMANDS: dict[str, str] = {
    "synth": "cxrbench.cli.synth:synth",
    "splits": "cxrbench.cli.splits:splits",
    "protocols": "cxrbench.cli.protocols:protocols",
    "models": "cxrbench.cli.models:models",
    "cache": "cxrbench.cli.cache:cache",
    "run": "cxrbench.cli.run:run",
    "submit": "cxrbench.cli.leaderboard:submit",
    "leaderboard": "cxrbench.cli.leaderboard:leaderboard",
    "gallery": "cxrbench.cli.gallery:gallery",
    "quickstart": "cxrbench.cli.quickstart:quickstart",
    "sweep": "cxrbench.cli.sweep:sweep",
    "reproduce": "cxrbench.cli.reproduce:reproduce",
    "rescore": "cxrbench.cli.rescore:rescore",
    "evaluate": "cxrbench.cli.evaluate:evaluate",
    "doctor": "cxrbench.cli.doctor:doctor",
    "predict": "cxrbench.cli.predict:predict",
    "export": "cxrbench.cli.export:export",
}
# commands that build models: torch and torchvision are checked before they run (one line, nothing written)
NEEDS_TORCHVISION = {"models", "run", "sweep", "reproduce", "quickstart", "gallery", "predict", "export"}

_DEBUG = False


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global _DEBUG
    _DEBUG = _DEBUG or value
    return value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="cxrbench")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="Show full tracebacks for errors.",
)
def cli() -> None:
    """cxrbench: chest X-ray classification benchmarks on NIH ChestX-ray14.

    \b
    Example:
      cxrbench quickstart
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache/
      cxrbench run --model densenet121_attA --protocol paper-15c --cache cache/
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point and the one boundary where errors become one line: deliberate errors (CxrbenchError), usage
    errors and what the user's files or machine cause (OSError: a missing file, a full or read-only disk, a
    FIFO; MemoryError; RecursionError on hostile nesting) exit 2; anything else is an internal error, said in
    one line with exit 1. `--debug` shows the traceback instead."""
    global _DEBUG
    args = sys.argv[1:] if argv is None else argv
    _DEBUG = "--debug" in args
    try:
        _check_install(args)
        cli.main(args=args, prog_name="cxrbench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        if _DEBUG:
            raise
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the boundary: nothing leaves as a traceback
        if _DEBUG:
            raise
        message, code = describe(e)
        _error(message)
        sys.exit(code)
    sys.exit(0)


def describe(e: BaseException) -> tuple[str, int]:
    """(one line, exit code) for an exception that reached the command line."""
    if isinstance(e, CxrbenchError):
        return str(e), 2
    if isinstance(e, OSError):
        from cxrbench.files import reason

        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{reason(e)}", 2
    if isinstance(e, MemoryError):
        return "out of memory: the input is larger than this machine can hold", 2
    if isinstance(e, RecursionError):
        return "an input is nested too deeply to read", 2
    if isinstance(e, RuntimeError) and str(e).startswith("Symlink loop from"):  # pathlib before Python 3.13
        return f"{str(e).removeprefix('Symlink loop from ').strip(chr(39))}: a link that points to itself", 2
    where = _innermost(e)
    return (
        f"internal error ({type(e).__name__}: {e}){where}; this is a cxrbench bug - please report it with the "
        "command and `--debug`'s output",
        1,
    )


def _innermost(e: BaseException) -> str:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def _error(message: str) -> None:
    try:
        from cxrbench.console import get_display

        get_display().error(_one_line(message)[:2000])
    except Exception:  # noqa: BLE001 - the terminal itself failed: say it plainly
        sys.stderr.write(f"error: {_one_line(message)[:2000]}\n")


def _check_install(args: list[str]) -> None:
    """Before a command that builds models runs (not for its --help): torch and torchvision work."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command in NEEDS_TORCHVISION and not {"-h", "--help"} & set(args):
        from cxrbench.doctor import require_torchvision

        require_torchvision()


def _one_line(message: str) -> str:
    return " ".join(message.split())
