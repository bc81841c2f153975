"""Safe reads and writes: the one module that creates, replaces or reads a file that may lie in a folder
someone else controls (a run folder, a shared leaderboard, a cache, a dataset).

Writes: `atomic_write` puts bytes at a path so that a reader sees the old file or the new one, never a part.
The temporary file is created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) in the target's folder, opened
relative to that folder's descriptor (which itself was opened without following a link), then renamed over
the target name: a link planted at the temporary or at the final name is never followed (the rename replaces
the link itself). `make_dirs` creates folders one component at a time and refuses a component that is a
link, and with `root` refuses anything that would land outside it. `open_lock` opens a lock file that must be
a regular file. A failed write (disk full, read-only filesystem, permission) removes its temporary and
raises `WriteError` naming the file and the reason.

Reads: `read_regular` reads a regular file (never a link, FIFO or device) within a size limit; `read_json`
adds strict, bounded JSON (no NaN or infinities, bounded nesting); `gunzip` inflates within a limit.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import stat
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cxrbench.errors import CxrbenchError, InputError

# temporaries: `.NAME.tmpPID-XXXXXXXX` beside NAME (older cxrbench wrote `.NAME.tmpPID`)
TMP_PATTERN = re.compile(r"^\..+\.tmp\d+(-[0-9a-f]{8})?$")
MAX_JSON_DEPTH = 64
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class WriteError(CxrbenchError, OSError):
    """A file or folder cannot be written where it was asked for (disk full, read-only, a link, outside).

    Also an OSError carrying the cause's errno and the file name, so that code which already handles a full
    disk (the cache build saves its progress) keeps doing so; `str()` is the one line for the user."""

    def __init__(self, message: str, err: int | None = None, filename: str | Path | None = None) -> None:
        if err is None:
            OSError.__init__(self, message)
        else:
            OSError.__init__(self, err, message, None if filename is None else str(filename))
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (cache build workers)
        return (type(self), (self.message, self.errno, self.filename))


_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ELOOP: "it is a link (cxrbench does not write through links)",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
}


def reason(e: OSError) -> str:
    """A short reason for an OS error, in words."""
    return _REASONS.get(e.errno or 0, e.strerror or str(e))


def _fail(path: Path, e: OSError, what: str = "cannot write") -> WriteError:
    return WriteError(f"{path}: {what} ({reason(e)})", e.errno, path)


# ------------------------------------------------------------------------------------------------ folders


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether `path` (resolved, links followed) lies in `root` (resolved)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def check_inside(path: str | Path, root: str | Path, what: str = "file") -> Path:
    """`path` when it resolves inside `root`, else a WriteError naming both."""
    if not inside(path, root):
        raise WriteError(f"{path}: refusing to write this {what}: it lies outside {root}")
    return Path(path)


def make_dirs(path: str | Path, root: str | Path | None = None) -> Path:
    """Create the folder `path` and its missing parents. With `root`, `path` must lie inside it and every
    component below `root` is created one at a time and must be a real folder, never a link (`root` itself
    may be reached through a link the user chose); without `root` links are followed as the user's own."""
    p = Path(path)
    if root is not None:
        r = Path(root)
        if not p.is_absolute() and r.is_absolute():
            p = Path.cwd() / p
        base = Path(os.path.abspath(r))
        full = Path(os.path.abspath(p))
        if not full.is_relative_to(base):
            raise WriteError(f"{path}: refusing to create this folder: it lies outside {root}")
        # the root itself may be reached through a link the user chose; nothing below it may be a link
        _mkdirs_plain(base, None)
        cur = base
        for part in full.relative_to(base).parts:
            cur = cur / part
            _mkdir_one(cur)
        check_inside(full, base, "folder")
        return p
    _mkdirs_plain(Path(os.path.abspath(p)), None)
    return p


def _mkdirs_plain(p: Path, _unused: None) -> None:
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:
        raise WriteError(f"{p}: cannot create this folder (a file of that name exists)") from e
    except OSError as e:
        raise _fail(p, e, "cannot create this folder") from e
    if not p.is_dir():
        raise WriteError(f"{p}: cannot create this folder (a file of that name exists)")


def _mkdir_one(p: Path) -> None:
    try:
        os.mkdir(p)
        return
    except FileExistsError:
        pass
    except OSError as e:
        raise _fail(p, e, "cannot create this folder") from e
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        raise WriteError(f"{p}: refusing to use this folder: it is a link (cxrbench does not write through links)")
    if not stat.S_ISDIR(st.st_mode):
        raise WriteError(f"{p}: cannot create this folder (a file of that name exists)")


def _open_dir(folder: Path, follow: bool) -> int:
    """A descriptor of `folder`; unless `follow`, opened without following a link at its last component."""
    try:
        return os.open(folder, os.O_RDONLY | _DIRECTORY | _CLOEXEC | (0 if follow else _NOFOLLOW))
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and folder.is_symlink() and not follow:
            raise WriteError(f"{folder}: refusing to write into this folder: it is a link") from None
        raise _fail(folder, e, "cannot open this folder for writing") from None


# ------------------------------------------------------------------------------------------------ writes


def _temp_name(name: str) -> str:
    return f".{name}.tmp{os.getpid()}-{secrets.token_hex(4)}"


@contextmanager
def atomic_open(
    path: str | Path, *, root: str | Path | None = None, mode: int = 0o644, fsync: bool = True
) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces `path` atomically when the block ends without an error
    (see the module docstring). With `root` (a folder someone else may control), `path` must lie inside it
    and its folder must not be a link; without, the folder is the user's own choice and may be reached
    through links. Either way the temporary and the final name are never followed. On an error nothing at
    `path` changes."""
    p = Path(path)
    if root is not None:
        check_inside(p.parent, root, "folder")
    folder = p.parent if str(p.parent) else Path(".")
    dfd = _open_dir(folder, follow=root is None)
    tmp = None
    try:
        for _ in range(16):
            tmp = _temp_name(p.name)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dfd)
                break
            except FileExistsError:
                tmp = None
                continue
            except OSError as e:  # a read-only filesystem, no permission, no space for a new file
                tmp = None
                raise _fail(p, e) from None
        else:
            raise WriteError(f"{p}: cannot create a temporary file beside it (every name tried exists)")
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                if fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, p.name, src_dir_fd=dfd, dst_dir_fd=dfd)
            tmp = None
            if fsync:
                try:
                    os.fsync(dfd)
                except OSError:
                    pass  # some filesystems refuse to fsync a folder; the rename itself is done
        except WriteError:
            raise
        except OSError as e:
            raise _fail(p, e) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)


def atomic_write(
    path: str | Path, data: bytes | bytearray | memoryview, *, root: str | Path | None = None, fsync: bool = True
) -> Path:
    """Write `data` to `path` atomically and without following links (see the module docstring)."""
    with atomic_open(path, root=root, fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, root: str | Path | None = None) -> Path:
    """`atomic_write` of UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"), root=root)


def atomic_write_json(path: str | Path, obj: Any, *, root: str | Path | None = None) -> Path:
    """`atomic_write` of indented, key-sorted JSON (NaN refused)."""
    return atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n").encode(), root=root)


def remove_temp_files(folder: str | Path) -> int:
    """Delete the temporaries that killed writers left under `folder` (only while no writer runs there)."""
    n = 0
    for dirpath, _, names in os.walk(folder):
        for f in names:
            if TMP_PATTERN.match(f):
                try:
                    os.unlink(os.path.join(dirpath, f))
                    n += 1
                except FileNotFoundError:
                    pass
    return n


def open_lock(path: str | Path) -> int:
    """A read-write descriptor of the lock file `path` (created if missing); a link, FIFO or any other
    non-regular file there is refused, so a lock can never truncate or block on a file elsewhere."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as e:
        if p.is_symlink():
            raise WriteError(f"{p}: refusing to use this lock file: it is a link") from None
        raise _fail(p, e, "cannot open the lock file") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise WriteError(f"{p}: refusing to use this lock file: it is not a regular file")
    return fd


# ------------------------------------------------------------------------------------------------ reads


def read_regular(
    path: str | Path,
    limit: int,
    what: str,
    error: Callable[[str], CxrbenchError] | None = None,
    *,
    follow: bool = False,
    head: bool = False,
) -> bytes:
    """The bytes of a regular file; see `read_regular_stat`."""
    return read_regular_stat(path, limit, what, error, follow=follow, head=head)[0]


def read_regular_stat(
    path: str | Path,
    limit: int,
    what: str,
    error: Callable[[str], CxrbenchError] | None = None,
    *,
    follow: bool = False,
    head: bool = False,
) -> tuple[bytes, os.stat_result]:
    """The bytes and fstat of a regular file (never a FIFO, device or folder; never a link unless `follow`, for
    a path the user named themself), refused above `limit` bytes; `error` makes the exception (default: InputError).
    The file is opened non-blocking and checked with fstat before a byte is read, so a FIFO cannot hang.
    With `head`, a longer file is not refused: its first `limit` bytes come back."""
    p = Path(path)
    err: Callable[[str], CxrbenchError] = error or (lambda msg: InputError(None, msg))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise err(f"{p}: {what} is missing") from None
    except OSError as e:
        if p.is_symlink() and not follow:
            raise err(f"{p}: {what} is a link; cxrbench reads the file itself, not a link to it") from None
        raise err(f"{p}: cannot read {what} ({reason(e)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise err(f"{p}: {what} is {kind}")
        if st.st_size > limit and not head:
            raise err(f"{p}: {what} is {st.st_size:,} bytes, over the limit of {limit:,}")
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            try:
                b = os.read(fd, min(1 << 20, limit + 1 - got))
            except OSError as e:
                raise err(f"{p}: cannot read {what} ({reason(e)})") from None
            if not b:
                break
            chunks.append(b)
            got += len(b)
    finally:
        os.close(fd)
    if head:
        return b"".join(chunks)[:limit], st
    if got > limit:
        raise err(f"{p}: {what} is over the limit of {limit:,} bytes")
    return b"".join(chunks), st


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text[:40]} is out of range")
    return x


def depth(obj: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), computed without recursion."""
    best = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
            best = max(best, d + 1)
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
            best = max(best, d + 1)
    return best


def parse_json(
    raw: bytes, source: str | Path, error: Callable[[str], CxrbenchError] | None = None, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Strict JSON: UTF-8, no NaN or infinities (not even as overflowing numbers), at most `max_depth` levels."""
    err: Callable[[str], CxrbenchError] = error or (lambda msg: InputError(None, msg))
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise err(f"{source}: not UTF-8 text") from None
    except RecursionError:
        raise err(f"{source}: JSON nested too deeply (at most {max_depth} levels)") from None
    except ValueError as e:  # JSONDecodeError and the hooks above
        raise err(f"{source}: not valid JSON ({e})") from None
    if depth(obj) > max_depth:
        raise err(f"{source}: JSON nested too deeply (at most {max_depth} levels)")
    return obj


def read_json(
    path: str | Path,
    limit: int,
    what: str,
    error: Callable[[str], CxrbenchError] | None = None,
    max_depth: int = MAX_JSON_DEPTH,
    *,
    follow: bool = False,
) -> Any:
    """`read_regular` + `parse_json`: a bounded, strict JSON file."""
    return parse_json(read_regular(path, limit, what, error, follow=follow), path, error, max_depth)


def gunzip(raw: bytes, limit: int, source: str | Path, error: Callable[[str], CxrbenchError] | None = None) -> bytes:
    """Gzip undone within `limit` output bytes (a small file that inflates to gigabytes is refused); bytes
    that are not gzip come back as they are."""
    err: Callable[[str], CxrbenchError] = error or (lambda msg: InputError(None, msg))
    if raw[:2] != b"\x1f\x8b":
        return raw
    out = bytearray()
    rest = raw
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as e:
            raise err(f"{source}: damaged gzip data ({e})") from None
        if len(out) > limit or d.unconsumed_tail:
            raise err(f"{source}: inflates to more than {limit:,} bytes")
        if not d.eof:
            raise err(f"{source}: truncated gzip data")
        rest = d.unused_data  # a gzip file may hold several members, one after the other
        if rest and rest[:2] != b"\x1f\x8b":
            raise err(f"{source}: bytes after the end of the gzip data")
    return bytes(out)
