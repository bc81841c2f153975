"""The processes of a cache build: the store's lock, worker processes that die with the build, and the
loop that runs chunk tasks on them.

A build process killed with SIGKILL cannot shut its pool down; its workers exit by themselves
(PR_SET_PDEATHSIG on Linux, a watchdog thread everywhere) and never hold the lock, which only the build
process owns. A lock file whose recorded build is no longer running is recognised as stale.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from cxrbench.cache.store import LOCK
from cxrbench.errors import CacheError
from cxrbench.files import open_lock

LOCK_STALE_WAIT = 10.0  # seconds to wait for the leftovers of a dead build to let go of its lock
PARENT_POLL_SECONDS = 0.5  # how often a worker checks that its build process is still alive
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a SIGKILLed build stays one until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def exit_with_parent(parent: int) -> None:
    """End this worker when the build process `parent` dies: a SIGKILLed parent cannot shut its pool down,
    and its workers would otherwise wait on a pipe for minutes. PR_SET_PDEATHSIG on Linux, plus a watchdog
    thread that polls for the parent everywhere (and covers a forkserver in between)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    ppid = os.getppid()
    if not alive(parent):  # it died before the death signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != ppid or not alive(parent):
                os._exit(1)

    threading.Thread(target=watch, name="cxrbench-parent-watchdog", daemon=True).start()


def drop_inherited_lock(lock: tuple[int, int, int] | None) -> None:
    """A forked worker inherits the build's lock file descriptor, and with it the flock: point that
    descriptor at /dev/null so that only the build process itself holds the lock."""
    if lock is None:
        return
    fd, dev, ino = lock
    try:
        st = os.fstat(fd)
    except OSError:
        return  # not inherited (forkserver)
    if (st.st_dev, st.st_ino) == (dev, ino):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, fd)
        os.close(null)


def worker_init(parent: int, lock: tuple[int, int, int] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts the pool down
    drop_inherited_lock(lock)
    exit_with_parent(parent)


# ---------------------------------------------------------------- the store's lock


def lock_owner(text: str) -> tuple[int | None, str | None]:
    """(pid, host) from a lock file's `pid N on HOST`."""
    parts = text.split()
    if len(parts) == 4 and parts[0] == "pid" and parts[1].isdigit() and parts[2] == "on":
        return int(parts[1]), parts[3]
    return None, None


class StoreLock:
    """An exclusive flock on PATH/.lock, released by the OS if the process dies.

    The file names the build that holds it. A lock whose recorded build is no longer running is stale:
    taken over when nobody holds it (and said so), waited for briefly when something still does.
    """

    def __init__(self, path: Path, display=None) -> None:
        self.path = path / LOCK
        self.display = display
        self.fh: TextIO | None = None

    def _dead_owner(self, text: str) -> int | None:
        pid, host = lock_owner(text)
        if pid is not None and host == os.uname().nodename and pid != os.getpid() and not alive(pid):
            return pid
        return None

    def __enter__(self) -> StoreLock:
        fh = self.fh = os.fdopen(open_lock(self.path), "r+")  # a link, FIFO or folder there is refused
        deadline = None
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                who = fh.read().strip() or "another process"
                dead = self._dead_owner(who)
                if dead is None:
                    fh.close()
                    raise CacheError(
                        f"{self.path.parent}: another cache build ({who}) is writing this store; wait "
                        "for it to finish or choose another --out"
                    ) from None
                deadline = deadline or time.monotonic() + LOCK_STALE_WAIT
                if time.monotonic() > deadline:
                    fh.close()
                    raise CacheError(
                        f"{self.path.parent}: stale lock: the build that took it ({who}) is no longer running, but "
                        f"another process still holds {self.path} (a leftover worker of that build?); stop it "
                        f"(`fuser -v {self.path}` names it) and run the command again"
                    ) from None
                time.sleep(0.2)
        fh.seek(0)
        dead = self._dead_owner(fh.read().strip())
        if dead is not None and self.display is not None:
            self.display.info(
                f"{self.path.parent}: taking over a stale lock (its build, pid {dead}, is no longer running)"
            )
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}")
        fh.flush()
        return self

    def identity(self) -> tuple[int, int, int]:
        """(fd, device, inode) of the lock, so that forked workers can let go of their copy."""
        assert self.fh is not None, "identity() is called inside the `with` block"
        st = os.fstat(self.fh.fileno())
        return self.fh.fileno(), st.st_dev, st.st_ino

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            try:  # a build that ends (even with an error) leaves no owner behind: only a killed one is "stale"
                self.fh.seek(0)
                self.fh.truncate()
                self.fh.flush()
            except OSError:
                pass  # a full disk: the stale-lock check still recognises the dead owner next time
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()


def execute(
    work: Callable,
    tasks: list,
    workers: int,
    record: Callable,
    display,
    total: int,
    already: int,
    lock: tuple[int, int, int] | None = None,
    description: str = "cache build",
) -> float:
    """Run `work(task)` for each task (in worker processes when workers > 1), calling `record` with each
    result (a dict with the number of images `n`) and advancing a progress bar over `total` images. Returns the
    seconds it took: the bar's rate is the images done over those seconds, the rate a summary line says.

    A task that fails to write (OSError: disk full) stops the rest: chunks not started are cancelled, those
    running finish and are recorded, then the first error is raised.
    """
    import time
    from contextlib import nullcontext

    ctx = display.progress(description, total=total) if display is not None else nullcontext(None)
    with ctx as bar:
        t0 = time.perf_counter()
        done = 0

        def recorded(res: dict) -> None:
            nonlocal done
            record(res)
            done += res["n"]
            if bar is not None:
                bar.advance(res["n"])
                bar.update(work=(done, time.perf_counter() - t0))

        if bar is not None and already:
            bar.update(completed=already)
        if workers == 1:
            for t in tasks:
                recorded(work(t))
            return _finished(bar, done, t0)
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from cxrbench._mp import context

        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context(), initializer=worker_init, initargs=(os.getpid(), lock)
        )
        error: OSError | None = None
        try:
            pending = {pool.submit(work, t) for t in tasks}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    if f.cancelled():
                        continue
                    try:
                        res = f.result()
                    except OSError as e:
                        if error is None:
                            error = e
                            for p in pending:
                                p.cancel()
                        continue
                    recorded(res)
            if error is not None:
                raise error
            return _finished(bar, done, t0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _finished(bar, done: int, t0: float) -> float:
    """The seconds since `t0`, also given to the bar so that its last rate is the summary's."""
    import time

    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.update(work=(done, seconds))
    return seconds
