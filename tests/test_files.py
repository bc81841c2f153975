"""cxrbench.files: the one safe write and safe read, tried against the links, FIFOs, folders and oversize
inputs that a folder someone else controls can hold."""

from __future__ import annotations

import errno
import gzip
import json
import os
import threading
from pathlib import Path

import pytest

from cxrbench import files
from cxrbench.errors import CxrbenchError, InputError, RecordError
from cxrbench.files import WriteError


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder with one file that no write in these tests may touch."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "victim.txt").write_text("precious\n")
    return o


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = f"link:{os.readlink(p)}" if p.is_symlink() else ("dir" if p.is_dir() else p.read_bytes())
    return out


# ------------------------------------------------------------------------------------------------ writes


def test_atomic_write_text_json_and_bytes(tmp_path: Path):
    files.atomic_write(tmp_path / "a.bin", b"\x00\x01")
    files.atomic_write_text(tmp_path / "b.txt", "héllo")
    files.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1.5]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text("utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": [1.5], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]  # no temporaries left


def test_atomic_write_json_refuses_nan_and_leaves_old_file(tmp_path: Path):
    files.atomic_write_json(tmp_path / "c.json", {"x": 1})
    with pytest.raises(ValueError):
        files.atomic_write_json(tmp_path / "c.json", {"x": float("nan")})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1}


def test_link_at_final_name_is_replaced_not_followed(tmp_path: Path, outside: Path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "out.txt").symlink_to(outside / "victim.txt")
    before = _snapshot(outside)
    files.atomic_write_text(target / "out.txt", "new")
    assert _snapshot(outside) == before
    assert not (target / "out.txt").is_symlink() and (target / "out.txt").read_text() == "new"


def test_links_at_every_temporary_name_are_never_followed(tmp_path: Path, outside: Path, monkeypatch):
    """The temporary's random part is pinned to names where links already wait: the exclusive create
    fails on each (never writes through it), the next name is used, and no link is touched."""
    target = tmp_path / "t"
    target.mkdir()
    tokens = iter(["0000000a", "0000000b", "0000000c"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(tokens))
    for t in ("0000000a", "0000000b"):
        (target / f".out.txt.tmp{os.getpid()}-{t}").symlink_to(outside / "victim.txt")
    before = _snapshot(outside)
    files.atomic_write_text(target / "out.txt", "new")
    assert _snapshot(outside) == before
    assert (target / "out.txt").read_text() == "new"
    assert all((target / f".out.txt.tmp{os.getpid()}-{t}").is_symlink() for t in ("0000000a", "0000000b"))


def test_every_temporary_name_taken_is_one_line_error(tmp_path: Path, outside: Path, monkeypatch):
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "0000000a")
    (tmp_path / f".out.txt.tmp{os.getpid()}-0000000a").symlink_to(outside / "victim.txt")
    with pytest.raises(WriteError, match="temporary"):
        files.atomic_write_text(tmp_path / "out.txt", "new")
    assert (outside / "victim.txt").read_text() == "precious\n"


def test_folder_that_is_a_link_is_refused_below_a_root(tmp_path: Path, outside: Path):
    (tmp_path / "plots").symlink_to(outside, target_is_directory=True)
    with pytest.raises(WriteError, match="link"):
        files.atomic_write_text(tmp_path / "plots" / "a.png", "x", root=tmp_path)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    files.atomic_write_text(tmp_path / "plots" / "a.png", "x")  # without root: the user's own link
    assert (outside / "a.png").read_text() == "x"


def test_root_refuses_a_path_outside(tmp_path: Path, outside: Path):
    with pytest.raises(WriteError, match="outside"):
        files.atomic_write_text(outside / "new.txt", "x", root=tmp_path / "t")
    assert not (outside / "new.txt").exists()


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path, monkeypatch):
    files.atomic_write_text(tmp_path / "f.txt", "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(WriteError) as e:
        files.atomic_write_text(tmp_path / "f.txt", "new")
    assert str(e.value) == f"{tmp_path / 'f.txt'}: cannot write (no space left on the device)"
    assert (tmp_path / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_error_inside_the_block_removes_the_temporary(tmp_path: Path):
    with pytest.raises(RuntimeError), files.atomic_open(tmp_path / "f.bin") as fh:
        fh.write(b"partial")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_one_line(tmp_path: Path):
    with pytest.raises(WriteError, match="cannot open this folder"):
        files.atomic_write_text(tmp_path / "nope" / "f.txt", "x")


def test_remove_temp_files_matches_old_and_new_names(tmp_path: Path):
    names = [".a.json.tmp123", ".a.json.tmp123-0badcafe", "a.json", ".a.json", "x.tmp1"]
    for n in names:
        (tmp_path / n).write_text("")
    assert files.remove_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.json", "a.json", "x.tmp1"]


# ------------------------------------------------------------------------------------------------ folders


def test_make_dirs_creates_and_accepts_existing(tmp_path: Path):
    files.make_dirs(tmp_path / "r" / "a" / "b", root=tmp_path / "r")
    files.make_dirs(tmp_path / "r" / "a" / "b", root=tmp_path / "r")
    assert (tmp_path / "r" / "a" / "b").is_dir()


def test_make_dirs_refuses_linked_component_under_root(tmp_path: Path, outside: Path):
    root = tmp_path / "board"
    root.mkdir()
    (root / "records").symlink_to(outside, target_is_directory=True)
    before = _snapshot(outside)
    with pytest.raises(WriteError, match="link"):
        files.make_dirs(root / "records" / "entry", root=root)
    assert _snapshot(outside) == before


def test_make_dirs_refuses_dotdot_and_file_in_the_way(tmp_path: Path, outside: Path):
    root = tmp_path / "r"
    with pytest.raises(WriteError, match="outside"):
        files.make_dirs(root / ".." / "outside" / "x", root=root)
    assert not (outside / "x").exists()
    root.mkdir(exist_ok=True)
    (root / "f").write_text("")
    with pytest.raises(WriteError, match="file of that name"):
        files.make_dirs(root / "f" / "g", root=root)
    with pytest.raises(WriteError, match="file of that name"):
        files.make_dirs(root / "f")


def test_root_itself_may_be_a_link(tmp_path: Path, outside: Path):
    (tmp_path / "mine").symlink_to(outside, target_is_directory=True)
    files.make_dirs(tmp_path / "mine" / "sub", root=tmp_path / "mine")
    assert (outside / "sub").is_dir()


def test_check_inside(tmp_path: Path, outside: Path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "l").symlink_to(outside, target_is_directory=True)
    assert files.check_inside(tmp_path / "r" / "a", tmp_path / "r") == tmp_path / "r" / "a"
    with pytest.raises(WriteError, match="outside"):
        files.check_inside(tmp_path / "r" / "l" / "a", tmp_path / "r")


# ------------------------------------------------------------------------------------------------ locks


def test_open_lock_creates_a_regular_file(tmp_path: Path):
    fd = files.open_lock(tmp_path / ".lock")
    os.close(fd)
    assert (tmp_path / ".lock").is_file()


def test_lock_that_is_a_link_is_refused_and_target_not_truncated(tmp_path: Path, outside: Path):
    (tmp_path / ".lock").symlink_to(outside / "victim.txt")
    with pytest.raises(WriteError, match="link"):
        files.open_lock(tmp_path / ".lock")
    assert (outside / "victim.txt").read_text() == "precious\n"


def test_lock_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path):
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(WriteError, match="not a regular file"):
        files.open_lock(tmp_path / ".lock")


def test_lock_that_is_a_folder_is_refused(tmp_path: Path):
    (tmp_path / ".lock").mkdir()
    with pytest.raises(WriteError, match="lock file"):
        files.open_lock(tmp_path / ".lock")


# ------------------------------------------------------------------------------------------------ reads


def _in_thread(fn, timeout: float = 20.0):
    """Run fn in a thread; a hang is a test failure, not a stuck suite."""
    out: dict = {}

    def go():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the read hung"
    return out


def test_read_regular_reads_within_limit(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"abc")
    assert files.read_regular(tmp_path / "f", 3, "the file") == b"abc"


def test_read_regular_fifo_does_not_hang(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo")
    out = _in_thread(lambda: files.read_regular(tmp_path / "fifo", 100, "the file", follow=True))
    assert isinstance(out.get("error"), InputError) and "not a regular file" in str(out["error"])


def test_read_regular_folder_is_one_line(tmp_path: Path):
    with pytest.raises(InputError, match="is a folder"):
        files.read_regular(tmp_path, 100, "the file")


def test_read_regular_oversize_and_missing(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"x" * 101)
    with pytest.raises(InputError, match="over the limit"):
        files.read_regular(tmp_path / "f", 100, "the file")
    with pytest.raises(InputError, match="missing"):
        files.read_regular(tmp_path / "g", 100, "the file")


def test_read_regular_link_refused_unless_follow(tmp_path: Path, outside: Path):
    (tmp_path / "l").symlink_to(outside / "victim.txt")
    with pytest.raises(InputError, match="link"):
        files.read_regular(tmp_path / "l", 100, "the file")
    assert files.read_regular(tmp_path / "l", 100, "the file", follow=True) == b"precious\n"


def test_read_regular_error_factory(tmp_path: Path):
    with pytest.raises(RecordError):
        files.read_regular(tmp_path / "g", 100, "the record", RecordError)


@pytest.mark.parametrize("n", [65, 983, 100_000])
def test_parse_json_deep_nesting_is_one_error(n: int):
    with pytest.raises(InputError, match="nested too deeply"):
        files.parse_json(b"[" * n + b"]" * n, "x.json")
    with pytest.raises(InputError, match="nested too deeply"):
        files.parse_json(b'{"a":' * n + b"1" + b"}" * n, "x.json")


def test_parse_json_accepts_the_depth_limit():
    n = files.MAX_JSON_DEPTH
    assert files.depth(files.parse_json(b"[" * n + b"]" * n, "x.json")) == n


@pytest.mark.parametrize("text", [b'{"a": NaN}', b"[Infinity]", b"[-Infinity]", b"[1e999]", b"\xff", b"{"])
def test_parse_json_refuses_nan_infinities_and_garbage(text: bytes):
    with pytest.raises(InputError):
        files.parse_json(text, "x.json")


def test_read_json(tmp_path: Path):
    (tmp_path / "m.json").write_text('{"a": [1, 2.5]}')
    assert files.read_json(tmp_path / "m.json", 100, "the manifest") == {"a": [1, 2.5]}
    (tmp_path / "n.json").write_text('{"a": NaN}')
    with pytest.raises(CxrbenchError, match="n.json: not valid JSON"):
        files.read_json(tmp_path / "n.json", 100, "the manifest")


def test_gunzip_bomb_is_refused_within_the_limit():
    bomb = gzip.compress(b"\x00" * (8 << 20), compresslevel=9)
    assert len(bomb) < 20_000
    with pytest.raises(InputError, match="inflates to more than"):
        files.gunzip(bomb, 1 << 20, "bomb.gz")


def test_gunzip_plain_multi_member_truncated():
    assert files.gunzip(b"plain", 10, "x") == b"plain"
    assert files.gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10, "x") == b"abcd"
    with pytest.raises(InputError, match="inflates"):
        files.gunzip(gzip.compress(b"abcdef") + gzip.compress(b"ghijkl"), 10, "x")
    with pytest.raises(InputError, match="truncated"):
        files.gunzip(gzip.compress(b"abc" * 1000)[:30], 10_000, "x")
    with pytest.raises(InputError, match="damaged|after the end"):
        files.gunzip(gzip.compress(b"abc") + b"junk", 100, "x")


def test_read_only_folder_is_one_line_and_no_temporary(tmp_path: Path, monkeypatch):
    """Simulated (we run as root, so chmod 0555 does not stop us): the create fails with EROFS."""
    real = os.open

    def ro(path, flags, *a, **k):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real(path, flags, *a, **k)

    monkeypatch.setattr(files.os, "open", ro)
    with pytest.raises(WriteError) as e:
        files.atomic_write_text(tmp_path / "f.txt", "x")
    assert str(e.value) == f"{tmp_path / 'f.txt'}: cannot write (the filesystem is read-only)"
    assert isinstance(e.value, OSError) and e.value.errno == errno.EROFS
    assert list(tmp_path.iterdir()) == []
