"""Hostile folders: for every command that writes, links are planted at the temporary and final names it may
use (pointing at files and folders outside the target), the command runs, and nothing outside the target may
change (the outside tree is hashed before and after); the command either succeeds safely or fails with one
line and no traceback (an exception other than SystemExit escaping `cxrbench.cli.main` is a traceback)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from cxrbench import files
from cxrbench.cli import main

PLANTED = "0000000a"


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """What no command may touch: a file, a folder with a file, and an empty folder."""
    o = tmp_path / "outside"
    (o / "dir").mkdir(parents=True)
    (o / "empty").mkdir()
    (o / "victim.txt").write_text("precious\n")
    (o / "dir" / "inner.txt").write_text("also precious\n")
    return o


def tree_hash(folder: Path) -> str:
    """Names, kinds, link targets and contents of everything under `folder`."""
    h = hashlib.sha256()
    for dirpath, dirnames, names in sorted(os.walk(folder)):
        dirnames.sort()
        for n in sorted(dirnames + names):
            p = Path(dirpath) / n
            h.update(str(p.relative_to(folder)).encode() + b"\0")
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            elif p.is_file():
                h.update(b"F" + p.read_bytes())
            else:
                h.update(b"D")
    return h.hexdigest()


@pytest.fixture
def planted_temporaries(monkeypatch):
    """The first temporary cxrbench.files tries for each name is `.NAME.tmpPID-0000000a`, where the tests plant
    links: the exclusive create must fail there (never write through it) and take the next name."""
    seen: set[str] = set()
    real = files._temp_name

    def temp_name(name: str) -> str:
        if name in seen:
            return real(name)
        seen.add(name)
        return f".{name}.tmp{os.getpid()}-{PLANTED}"

    monkeypatch.setattr(files, "_temp_name", temp_name)


def plant(folder: Path, names: list[str], outside: Path, final: bool = True) -> None:
    """Links to outside files at `folder/NAME` (when `final`) and at every temporary name of NAME (the old
    `.NAME.tmpPID` and the first one cxrbench.files tries under `planted_temporaries`)."""
    for i, name in enumerate(names):
        target = outside / ("victim.txt" if i % 2 == 0 else "dir/inner.txt")
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        links = [p.with_name(f".{p.name}.tmp{os.getpid()}"), p.with_name(f".{p.name}.tmp{os.getpid()}-{PLANTED}")]
        if final:
            links.append(p)
        for link in links:
            if not link.exists() and not link.is_symlink():
                link.symlink_to(target)


def cli(capsys, *args) -> tuple[int, str]:
    """(exit code, stderr) of `cxrbench ARGS` in this process; any exception but SystemExit fails the test."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    return int(e.value.code or 0), err


def one_line_failure(code: int, err: str) -> None:
    assert code == 2, err
    errors = [x for x in err.splitlines() if x.lstrip().startswith("error")]  # progress lines aside
    assert len(errors) == 1 and "Traceback" not in err, err


def safe(code: int, err: str) -> None:
    """Succeeded, or failed with one line."""
    if code != 0:
        one_line_failure(code, err)


# ------------------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def finished(synth_cache, tmp_path_factory) -> Path:
    """One finished tiny smoke run (never modified: tests copy it)."""
    from cxrbench.run import RunOptions, run

    out = tmp_path_factory.mktemp("hostile_runs")
    return run(RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")).parent


def _copy_run(run_dir: Path, dst: Path) -> Path:
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("gallery", "adjudicated-*"))
    return dst


# ------------------------------------------------------------------------------------------------ cache


@pytest.mark.parametrize("kind", ["link-file", "link-dir", "fifo", "folder"])
def test_cache_build_lock_that_is_not_a_file(kind, synth_dir, tmp_path, outside, capsys):
    out = tmp_path / "cache"
    out.mkdir()
    lock = out / ".lock"
    if kind == "link-file":
        lock.symlink_to(outside / "victim.txt")
    elif kind == "link-dir":
        lock.symlink_to(outside / "empty", target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    before = tree_hash(outside)
    code, err = cli(capsys, "cache", "build", "--data-dir", synth_dir, "--out", out, "--workers", "1")
    one_line_failure(code, err)
    assert "lock" in err
    assert tree_hash(outside) == before


def test_cache_build_resume_and_repair_with_planted_links(
    synth_dir, synth_cache, tmp_path, outside, capsys, planted_temporaries
):
    """A cache left half-built (complete: false), with links at the temporary names of its manifest, tables and
    chunk files and at a missing chunk's final name: the resumed build and the repair replace links, never
    follow them."""
    from cxrbench.cache.store import MANIFEST, chunk_file

    cache = tmp_path / "cache"
    shutil.copytree(synth_cache, cache)
    m = json.loads((cache / MANIFEST).read_text())
    m["complete"] = False
    (cache / MANIFEST).write_text(json.dumps(m))
    names = [MANIFEST, "bad_images.txt"] + [str(chunk_file(Path(), a, 0)) for a in ("images", "original_shape")]
    names += [
        str(Path("tables") / p.relative_to(cache / "tables")) for p in (cache / "tables").rglob("*") if p.is_file()
    ]
    plant(cache, names, outside, final=False)
    before = tree_hash(outside)
    code, err = cli(capsys, "cache", "build", "--data-dir", synth_dir, "--out", cache, "--workers", "1")
    assert code == 0, err
    assert tree_hash(outside) == before
    # repair: chunk 0 deleted, a link to an outside file at its name and at its temporary names
    f = chunk_file(cache, "images", 0)
    f.unlink()
    f.symlink_to(outside / "victim.txt")
    plant(cache, [str(chunk_file(Path(), "images", 0))], outside, final=False)
    code, err = cli(capsys, "cache", "repair", cache, "--data-dir", synth_dir, "--workers", "1")
    assert code == 0, err
    assert tree_hash(outside) == before
    assert not f.is_symlink() and f.is_file()
    code, err = cli(capsys, "cache", "verify", cache)
    assert code == 0, err


@pytest.mark.parametrize(
    "manifest",
    [
        '{"complete": NaN}',
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"format": "cxrbench-cache", "complete": True, "n_images": 48, "params": {}}),  # no chunks
        "folder",
        "fifo",
    ],
    ids=["nan", "deep", "no-chunks", "folder", "fifo"],
)
@pytest.mark.parametrize("command", ["info", "verify", "build"])
def test_cache_manifest_hostile(manifest, command, synth_dir, synth_cache, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(synth_cache, cache)
    mp = cache / "manifest.json"
    mp.unlink()
    if manifest == "folder":
        mp.mkdir()
    elif manifest == "fifo":
        os.mkfifo(mp)
    else:
        mp.write_text(manifest)
    args = (
        ["cache", command, cache] if command != "build" else ["cache", "build", "--data-dir", synth_dir, "--out", cache]
    )
    code, err = cli(capsys, *args)
    one_line_failure(code, err)
    assert "up to date" not in err


# ------------------------------------------------------------------------------------------------ run


@pytest.mark.parametrize("run_id", ["../../x", "ABSOLUTE", "a/b", "..", ".hidden", "-x"])
def test_run_id_outside_out_is_refused_before_anything_is_written(run_id, synth_cache, tmp_path, capsys):
    out = tmp_path / "deep" / "runs"
    out.mkdir(parents=True)
    if run_id == "ABSOLUTE":
        run_id = str(tmp_path / "abs-run")
    before = tree_hash(tmp_path)
    code, err = cli(
        capsys, "run", "--model", "tiny", "--protocol", "smoke", "--cache", synth_cache, "--out", out, "--device",
        "cpu", "--run-id", run_id,
    )  # fmt: skip
    one_line_failure(code, err)
    assert "not a safe name" in err
    assert tree_hash(tmp_path) == before


def test_run_id_rule_is_the_one_submit_applies():
    from cxrbench.names import safe_name as rule
    from cxrbench.results import leaderboard, record
    from cxrbench.run import options

    assert record.safe_name is rule and leaderboard.safe_name is rule
    assert options.run_id_of.__code__.co_names.count("safe_name") == 1


def test_run_into_out_with_planted_links(synth_cache, tmp_path, outside, capsys, planted_temporaries):
    """A run folder under --out that an earlier (hostile) hand filled with links at every name a run writes:
    refused before training, or replaced; nothing outside changes."""
    out = tmp_path / "runs"
    rid = "mine"
    d = out / rid
    plant(d, ["run.json", "fold0.pt", "fold0.json", "fold0-val.csv.gz", "predictions.csv.gz", "record.json"], outside)
    before = tree_hash(outside)
    code, err = cli(
        capsys, "run", "--model", "tiny", "--protocol", "smoke", "--cache", synth_cache, "--out", out, "--device",
        "cpu", "--run-id", rid,
    )  # fmt: skip
    safe(code, err)
    assert tree_hash(outside) == before
    # a run folder that is itself a link out of --out
    (out / "linked").symlink_to(outside / "empty", target_is_directory=True)
    code, err = cli(
        capsys, "run", "--model", "tiny", "--protocol", "smoke", "--cache", synth_cache, "--out", out, "--device",
        "cpu", "--run-id", "linked",
    )  # fmt: skip
    one_line_failure(code, err)
    assert tree_hash(outside) == before


def test_checkpoint_full_disk_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    from cxrbench.engine.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "fold0.pt"
    save_checkpoint(path, {"version": 2, "x": 1})

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.WriteError) as e:
        save_checkpoint(path, {"version": 2, "x": 2})
    assert str(e.value) == f"{path}: cannot write (no space left on the device)"
    monkeypatch.undo()
    assert load_checkpoint(path)["x"] == 1 and [p.name for p in tmp_path.iterdir()] == ["fold0.pt"]


# ------------------------------------------------------------------------------------------------ board


def test_submit_with_planted_links(finished, tmp_path, outside, capsys, planted_temporaries):
    board = tmp_path / "board"
    rec = json.loads((finished / "record.json").read_text())
    from cxrbench.protocols import protocol_key

    key = protocol_key(rec["protocol"]["id"], rec["protocol"]["version"])
    entry = f"{rec['run_id']}-{rec['record_sha256'][:8]}"
    names = [f"records/{key}/{entry}.predictions.csv.gz"]
    names += [f"records/{key}/{entry}.fold{k}-val.csv.gz" for k in range(len(rec["validation"]["folds"]))]
    names += [f"records/{key}/{entry}.json"]
    plant(board, names, outside, final=False)
    before = tree_hash(outside)
    code, err = cli(capsys, "submit", finished, "--leaderboard", board, "--allow-dirty")
    assert code == 0, err
    assert tree_hash(outside) == before
    assert all(not (board / n).is_symlink() for n in names)


@pytest.mark.parametrize("where", ["records", "protocol"])
def test_submit_into_a_board_whose_folder_links_outside(where, finished, tmp_path, outside, capsys):
    board = tmp_path / "board"
    rec = json.loads((finished / "record.json").read_text())
    from cxrbench.protocols import protocol_key

    key = protocol_key(rec["protocol"]["id"], rec["protocol"]["version"])
    if where == "records":
        board.mkdir()
        (board / "records").symlink_to(outside / "empty", target_is_directory=True)
    else:
        (board / "records").mkdir(parents=True)
        (board / "records" / key).symlink_to(outside / "empty", target_is_directory=True)
    before = tree_hash(outside)
    code, err = cli(capsys, "submit", finished, "--leaderboard", board, "--allow-dirty")
    one_line_failure(code, err)
    assert "link" in err
    assert tree_hash(outside) == before and list((outside / "empty").iterdir()) == []


@pytest.fixture
def board(finished, tmp_path) -> Path:
    from cxrbench.results.leaderboard import submit

    b = tmp_path / "board"
    submit(finished, b, allow_dirty=True)
    return b


def test_leaderboard_write_with_planted_links(board, outside, capsys, planted_temporaries):
    plant(board, ["LEADERBOARD.md", "index.html"], outside)
    before = tree_hash(outside)
    code, err = cli(capsys, "leaderboard", "--leaderboard", board, "--write")
    assert code == 0, err
    assert tree_hash(outside) == before
    assert not (board / "LEADERBOARD.md").is_symlink() and not (board / "index.html").is_symlink()
    pngs = sorted(p.name for p in (board / "plots").iterdir() if p.suffix == ".png")
    assert pngs
    # again, with links at every plot's final and temporary name
    plant(board, [f"plots/{n}" for n in pngs], outside)
    code, err = cli(capsys, "leaderboard", "--leaderboard", board, "--write")
    assert code == 0, err
    assert tree_hash(outside) == before
    assert not any((board / "plots" / n).is_symlink() for n in pngs)


def test_leaderboard_write_refuses_a_plots_folder_linking_outside(board, outside, capsys):
    (board / "plots").symlink_to(outside / "empty", target_is_directory=True)
    before = tree_hash(outside)
    md_before = (board / "LEADERBOARD.md").exists()
    code, err = cli(capsys, "leaderboard", "--leaderboard", board, "--write")
    one_line_failure(code, err)
    assert "link" in err
    assert tree_hash(outside) == before and (board / "LEADERBOARD.md").exists() == md_before


def test_leaderboard_out_empty_is_one_line(board, capsys):
    code, err = cli(capsys, "leaderboard", "--leaderboard", board, "--out", "")
    one_line_failure(code, err)
    code, err = cli(capsys, "leaderboard", "--leaderboard", board, "--format", "html", "--out", "")
    one_line_failure(code, err)


def test_board_on_a_read_only_filesystem_is_one_line(finished, board, tmp_path, monkeypatch, capsys):
    """We run as root (chmod 0555 does not stop root), so the read-only filesystem is simulated where it
    shows: the exclusive create of a temporary fails with EROFS, as it does on a read-only mount."""
    real_open = os.open

    def ro_open(path, flags, *a, **k):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(files.os, "open", ro_open)
    code, err = cli(capsys, "leaderboard", "--leaderboard", board, "--write")
    one_line_failure(code, err)
    assert "read-only" in err
    other = tmp_path / "other-board"
    other.mkdir()
    code, err = cli(capsys, "submit", finished, "--leaderboard", other, "--allow-dirty")
    one_line_failure(code, err)
    assert "read-only" in err


# ------------------------------------------------------------------------------------------------ gallery


def test_gallery_with_planted_links(finished, tmp_path, outside, capsys, planted_temporaries):
    run_dir = _copy_run(finished, tmp_path / "run")
    names = ["gallery/index.html", "gallery/colour-scale.png"] + [f"gallery/{i:03d}-xray.png" for i in range(2)]
    names += [f"gallery/{i:03d}-cam{j}.png" for i in range(2) for j in range(3)]
    plant(run_dir, names, outside)
    before = tree_hash(outside)
    code, err = cli(capsys, "gallery", run_dir, "--n", "2")
    assert code == 0, err
    assert tree_hash(outside) == before
    assert not (run_dir / "gallery" / "index.html").is_symlink()


# ------------------------------------------------------------------------------------------------ rescore


def _adjudicated(run_dir: Path, path: Path) -> Path:
    from cxrbench.results.adjudicated import ADJUDICATED_FINDINGS, COLUMNS
    from cxrbench.results.predictions import Predictions

    _pr = Predictions.read(run_dir / "predictions.csv.gz")
    names, patients = _pr.images, _pr.patients
    rows = [",".join(COLUMNS)]
    for i, (n, pid) in enumerate(zip(names, patients, strict=True)):
        vals = ["YES" if (i + k) % 3 == 0 else "NO" for k, _ in enumerate(ADJUDICATED_FINDINGS)]
        rows.append(f"{n},No Finding,0,{pid},50,M,PA,2500,2048,0.168,0.168,{','.join(vals)},test")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_rescore_with_planted_links(finished, tmp_path, outside, capsys, planted_temporaries):
    from cxrbench.results.adjudicated import DEFAULT_MAPPING

    run_dir = _copy_run(finished, tmp_path / "run")
    labels = _adjudicated(run_dir, tmp_path / "adj.csv")
    final = f"adjudicated-{DEFAULT_MAPPING.content_hash[:8]}-test.json"
    plant(run_dir, [final], outside)
    before = tree_hash(outside)
    code, err = cli(capsys, "rescore", run_dir, "--adjudicated", labels, "--json")
    assert code == 0, err
    assert tree_hash(outside) == before and not (run_dir / final).is_symlink()


def test_rescore_hostile_inputs_are_one_line(finished, tmp_path, capsys):
    import gzip

    run_dir = _copy_run(finished, tmp_path / "run")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(b"a" * (200 << 20), compresslevel=9))  # 200 MB inflated from ~200 KB
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    labels = _adjudicated(run_dir, tmp_path / "adj.csv")
    for args in (["--adjudicated", fifo], ["--adjudicated", bomb], ["--adjudicated", labels, "--mapping", deep]):
        code, err = cli(capsys, "rescore", run_dir, *args)
        one_line_failure(code, err)
    code, err = cli(capsys, "rescore", run_dir, "--adjudicated", labels, "--mapping", fifo)
    one_line_failure(code, err)
    assert "not a regular file" in err


def test_rescore_on_a_read_only_run_folder_shows_the_result_first(finished, tmp_path, monkeypatch, capsys):
    run_dir = _copy_run(finished, tmp_path / "run")
    labels = _adjudicated(run_dir, tmp_path / "adj.csv")
    real_open = os.open

    def ro_open(path, flags, *a, **k):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(files.os, "open", ro_open)
    with pytest.raises(SystemExit) as e:
        main(["rescore", str(run_dir), "--adjudicated", str(labels), "--json"])
    out, err = capsys.readouterr()
    assert e.value.code == 2
    assert json.loads(out)["coverage"]["in_predictions"] > 0  # the computed result, printed
    assert "read-only" in err and "computed but not saved" in err and len(err.strip().splitlines()) == 1


def test_a_record_nested_deeply_is_one_line(finished, tmp_path, capsys):
    run_dir = _copy_run(finished, tmp_path / "run")
    text = (run_dir / "record.json").read_text().rstrip()
    assert text.endswith("}")
    (run_dir / "record.json").write_text(text[:-1] + ', "extra": ' + "[" * 1000 + "1" + "]" * 1000 + "}")
    code, err = cli(capsys, "submit", run_dir, "--leaderboard", tmp_path / "board", "--allow-dirty")
    one_line_failure(code, err)
    assert "nested too deeply" in err


# ------------------------------------------------------------------------------------------------ synth


@pytest.mark.slow
def test_synth_with_planted_links(tmp_path, outside, capsys, planted_temporaries):
    out = tmp_path / "synth"
    names = ["Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "BBox_List_2017.csv"]
    plant(out, names, outside, final=True)
    plant(out, ["synth_manifest.json"], outside, final=False)  # a link there is refused (tested below)
    before = tree_hash(outside)
    code, err = cli(capsys, "synth", "--out", out, "--n", "12", "--workers", "1")
    assert code == 0, err
    assert tree_hash(outside) == before
    assert not any((out / n).is_symlink() for n in names)
    # a manifest that is a link, or an image folder that links outside: refused before an image is written
    out3 = tmp_path / "synth3"
    plant(out3, ["synth_manifest.json"], outside)
    code, err = cli(capsys, "synth", "--out", out3, "--n", "12", "--workers", "1")
    one_line_failure(code, err)
    assert tree_hash(outside) == before
    out2 = tmp_path / "synth2"
    out2.mkdir()
    (out2 / "images_001").symlink_to(outside / "empty", target_is_directory=True)
    code, err = cli(capsys, "synth", "--out", out2, "--n", "12", "--workers", "1")
    one_line_failure(code, err)
    assert tree_hash(outside) == before


def test_every_write_site_uses_cxrbench_files():
    """No module but cxrbench/files.py renames files or makes `.tmp` names of its own."""
    import re

    pkg = Path(__file__).resolve().parents[1] / "cxrbench"
    offenders = [
        str(p.relative_to(pkg))
        for p in pkg.rglob("*.py")
        if p.name != "files.py" and re.search(r"os\.replace|os\.rename|\.tmp\{", p.read_text())
    ]
    assert offenders == []
