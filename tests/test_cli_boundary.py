"""The command boundary (issue 24, class 5): every subcommand, found by walking the click tree, is driven with
missing, empty, odd and hostile arguments; none may print a traceback or an internal error, and none may exit 0
after saying it failed. Every invocation is built to fail early (no training, no data generation): the other
required arguments get an empty folder, an empty file or a file where an output folder is expected."""

from __future__ import annotations

import contextlib
import os
import signal

import click
import pytest

from cxrbench.cli import cli, main

HANG_SECONDS = 60  # a watchdog against hangs (a FIFO read): never the verdict of a test that finishes
HUGE = "9" * 30


def _leaves(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every runnable subcommand under `cmd`, with its name path, found recursively."""
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        out = []
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join(path + (name,))} is listed but cannot be loaded"
            out += _leaves(sub, path + (name,))
        return out
    return [(path, cmd)]


LEAVES = _leaves(cli)


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"run", "submit", "splits", "cache build", "cache info", "reproduce paper", "rescore"} <= names
    assert len(names) >= 16


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """A scratch folder (the working directory) with the odd things the hostile values point at."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "empty-file").write_bytes(b"")
    (tmp_path / "junk-file").write_bytes(b"\x00\xff not what it should be\n" * 10)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path


def _kind(p: click.Parameter) -> str:
    t = p.type
    if isinstance(t, click.Path):
        return "dir" if not t.file_okay else ("file" if not t.dir_okay else "path")
    if isinstance(t, click.types.BoolParamType):
        return "bool"
    if isinstance(t, (click.types.IntParamType, click.IntRange)):
        return "int"
    if isinstance(t, (click.types.FloatParamType, click.FloatRange)):
        return "float"
    if isinstance(t, click.Choice):
        return "choice"
    return "text"


def _is_output(p: click.Parameter) -> bool:
    return p.name in ("out", "board")


def _base(p: click.Parameter) -> str:
    """A value of a required parameter that makes the command fail early."""
    kind = _kind(p)
    if kind == "dir" and _is_output(p):
        return "empty-file"  # a file where an output folder is expected
    if kind in ("dir", "path"):
        return "empty-dir"  # exists, but is no cache, dataset or run
    if kind == "file":
        return "empty-file"
    return "x"


def _hostile(p: click.Parameter) -> list[str]:
    kind = _kind(p)
    paths = ["missing/nowhere", "", "fifo", "/dev/null", "loop", "junk-file", "empty-dir", "empty-file"]
    if kind in ("dir", "path", "file"):
        return paths
    if kind == "int":
        return ["-1", "0", HUGE, "-" + HUGE, "abc", ""]
    if kind == "float":
        return ["-1", "0", "nan", "inf", "1e999", "abc", ""]
    if kind == "choice":
        return ["", "nope"]
    return ["", "-1", "../../x", "a\nb", "x" * 5000, "nope", HUGE]


# optional settings always given (unless varied), so that a command stays quick: `models` builds every model
# it lists to count its parameters
QUICK = {("models", "pattern"): "tiny_res"}


def _argv(path, cmd, vary: click.Parameter, value: str) -> list[str]:
    argv = list(path)
    for p in cmd.params:
        if p is vary:
            continue
        quick = QUICK.get((" ".join(path), p.name))
        if quick is not None:
            argv += [p.opts[0], quick]
        elif p.required or (_is_output(p) and _kind(p) == "dir"):
            # an output folder is always given (a file): nothing may do its whole work
            argv += ([p.opts[0]] if isinstance(p, click.Option) else []) + [_base(p)]
    if isinstance(vary, click.Option):
        argv += [vary.opts[0]] if _kind(vary) == "bool" else [vary.opts[0], value]
    else:
        argv += ["--", value] if value.startswith("-") else [value]
    return argv


def _cases():
    for path, cmd in LEAVES:
        for p in cmd.params:
            values = ["(flag)"] if _kind(p) == "bool" else _hostile(p)
            for v in values:
                others = any(q.required for q in cmd.params if q is not p)
                if not others and _is_output(p) and v in ("missing/nowhere", "", "empty-dir"):
                    continue  # a valid output folder: a command with nothing else required would do its work
                if (" ".join(path), p.name) in QUICK and v == "":
                    continue  # every model: valid, and slow
                yield pytest.param(path, cmd, p, v, id=f"{' '.join(path)}-{p.name}-{v[:20]!r}")


class Hang(Exception):
    pass


def _drive(argv: list[str], capfd) -> tuple[int, str]:
    """Run the command line in this process through its real entry point; (exit code, stdout + stderr)."""

    def alarm(*_):
        raise Hang(f"cxrbench {' '.join(argv)[:200]} did not finish in {HANG_SECONDS} s (a hang)")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    code = 0
    try:
        with contextlib.suppress(SystemExit):
            try:
                main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                raise
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capfd.readouterr()
    return code, out + err


def _judge(argv, code, out, must_fail: bool) -> None:
    shown = f"cxrbench {' '.join(argv)[:300]} -> exit {code}:\n{out[-3000:]}"
    assert "Traceback" not in out, shown
    assert "internal error" not in out, shown
    assert code in (0, 1, 2, 130), shown
    if code == 0:
        assert "error:" not in out.lower(), shown
    if must_fail:
        assert code != 0, shown
    if code == 2:
        lines = [x for x in out.splitlines() if x.strip().lower().startswith("error")]
        assert len(lines) == 1 or "Usage:" in out, shown


@pytest.mark.parametrize("path, cmd, param, value", list(_cases()))
def test_no_traceback_for_hostile_arguments(world, capfd, path, cmd, param, value):
    argv = _argv(path, cmd, param, value)
    code, out = _drive(argv, capfd)
    _judge(argv, code, out, must_fail=any(p.required for p in cmd.params))


@pytest.mark.parametrize("path, cmd", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_missing_required_arguments_are_usage_errors(world, capfd, path, cmd):
    if not any(p.required for p in cmd.params):
        pytest.skip("nothing required")
    code, out = _drive(list(path), capfd)
    _judge(list(path), code, out, must_fail=True)
    assert code == 2


def test_errors_become_one_line_with_their_exit_code():
    from cxrbench.cli import describe

    message, code = describe(ValueError("odd"))
    assert code == 1 and message.startswith("internal error (ValueError: odd)") and "\n" not in message
    message, code = describe(FileNotFoundError(2, "No such file or directory", "/x/y"))
    assert code == 2 and message == "/x/y: No such file or directory"
    message, code = describe(OSError(28, "No space left on device", "/x/y"))
    assert code == 2 and message == "/x/y: no space left on the device"


def test_debug_shows_the_traceback(monkeypatch):
    import cxrbench.cli as cli_mod

    def boom(*a, **k):
        raise ValueError("planted")

    monkeypatch.setattr(cli_mod.cli, "main", boom)
    with pytest.raises(ValueError, match="planted"):
        main(["--debug", "protocols"])
    with pytest.raises(SystemExit) as e:
        main(["protocols"])
    assert e.value.code == 1
