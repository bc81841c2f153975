"""Running a command in a real pseudo-terminal of a given size, as a user's terminal would (no COLUMNS, no
LINES): what the tests of widths at 80 columns read."""

from __future__ import annotations

import os
import subprocess


def run_in_pty(args: list[str], columns: int, rows: int, timeout: float) -> tuple[int, bytes]:
    """(exit code, everything the command wrote to its terminal) for `args` run with stdout and stderr on a
    pseudo-terminal of `columns` x `rows`."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    p = subprocess.Popen(args, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=timeout), b"".join(chunks)
