"""Someone else's run folder given to `cxrbench predict`, `cxrbench export` and `cxrbench.load_run`: names from
the record that would be paths, a checkpoint swapped for another with a valid header, links planted in the
output folder, a checkpoint grown to gigabytes or linked elsewhere, weights that give NaN. Each is refused with
one line naming the file (exit 2), before anything is written outside where the user asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cxrbench.cli import main
from cxrbench.errors import RecordError
from cxrbench.results.record import seal


def _copy(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst)
    return dst


def _edit_record(run_dir: Path, edit) -> None:
    rec = json.loads((run_dir / "record.json").read_text())
    edit(rec)
    (run_dir / "record.json").write_text(json.dumps(seal(rec)))
    shutil.rmtree(run_dir / "evaluation", ignore_errors=True)  # it is bound to the record it was made for


def _cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return int(e.value.code or 0), " ".join(capsys.readouterr().err.split())


def _one_line(code: int, err: str) -> None:
    assert code == 2 and "Traceback" not in err and "cxrbench bug" not in err, err
    assert err.count("error") == 1, err


def _checkpoint(run_dir: Path) -> Path:
    return run_dir / ("final.pt" if (run_dir / "final.pt").exists() else "fold0.pt")


def _resave(path: Path, change) -> None:
    """The checkpoint with `change` applied to its payload, saved with a valid header (a forged file)."""
    from cxrbench.engine.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(path)
    change(ck)
    save_checkpoint(path, ck)


# ------------------------------------------------------------------------------------------------ 1: run_id


@pytest.mark.parametrize("run_id", ["/tmp/escaped/evil__seed0", "../up__seed0", "a/b__seed0", "a\\b", "x\x00y"])
def test_a_run_id_that_is_a_path_is_refused_naming_record_json(real_run, tmp_path, capsys, monkeypatch, run_id):
    from cxrbench.api import load_run

    bad = _copy(real_run[0], tmp_path / "run")
    _edit_record(bad, lambda r: r.update(run_id=run_id))
    with pytest.raises(RecordError, match=r"record\.json: field run_id .* is not a safe name"):
        load_run(bad)
    work = tmp_path / "wd" / "a"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code, err = _cli(capsys, "export", bad)
    _one_line(code, err)
    assert "record.json" in err and "run_id" in err
    assert list(work.iterdir()) == [] and not Path("/tmp/escaped/evil__seed0.torchscript.pt").exists()


# ------------------------------------------------------------------------------------------------ 2: checkpoint tie


def test_the_record_names_the_scoring_checkpoint_and_a_swapped_one_is_refused(real_run, tmp_path, capsys):
    import hashlib

    from cxrbench.api import load_run

    folder, files = real_run
    rec = json.loads((folder / "record.json").read_text())
    ck = _checkpoint(folder)
    assert rec["scoring_checkpoint"] == {"path": ck.name, "sha256": hashlib.sha256(ck.read_bytes()).hexdigest()}
    assert load_run(folder).record.scoring_checkpoint.path == ck.name
    forged = _copy(folder, tmp_path / "forged")

    def bias(c: dict) -> None:
        key = next(k for k in c["model"] if k.endswith("bias"))
        c["model"][key] = c["model"][key] + 10

    _resave(_checkpoint(forged), bias)
    with pytest.raises(RecordError, match=rf"{ck.name} is not the one the run record names"):
        load_run(forged).model()
    image = files[next(iter(files))]
    for args in (("predict", forged, image), ("export", forged, "--out", tmp_path / "m.pt")):
        code, err = _cli(capsys, *args)
        _one_line(code, err)
        assert f"{_checkpoint(forged)} is not the one the run record names" in err and "--resume" not in err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.json").exists()
    # the record naming another file than the protocol's scoring checkpoint
    other = _copy(folder, tmp_path / "other")
    _edit_record(other, lambda r: r["scoring_checkpoint"].update(path="fold1.pt"))
    with pytest.raises(RecordError, match=r"scoring_checkpoint\.path is 'fold1\.pt'"):
        load_run(other).model()


def test_a_record_made_before_it_named_its_checkpoint_still_loads_and_says_so_once(real_run, tmp_path, capsys):
    from cxrbench.api import load_run

    old = _copy(real_run[0], tmp_path / "old")
    _edit_record(old, lambda r: r.pop("scoring_checkpoint"))
    run = load_run(old)
    assert run.record.scoring_checkpoint is None
    capsys.readouterr()
    run.model()
    run.model()
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("names no checkpoint") == 1 and "not tied to the record" in err


def test_the_board_still_takes_a_record_that_names_its_checkpoint(real_run, tmp_path):
    from cxrbench.results.leaderboard import submit
    from cxrbench.results.record import read_record
    from cxrbench.results.verify import check_protocol, check_settings

    rec = read_record(real_run[0])
    assert "scoring_checkpoint" in rec
    check_settings(rec, check_protocol(rec, "record.json"), "record.json")
    filed = submit(real_run[0], tmp_path / "board", allow_dirty=True)
    assert read_record(filed, check_predictions=False)["scoring_checkpoint"] == rec["scoring_checkpoint"]


# ------------------------------------------------------------------------------------------------ 3: --cam links


def test_predict_cam_refuses_a_planted_cam_link(real_run, tmp_path, capsys):
    folder, files = real_run
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "o"
    out.mkdir()
    (out / "cam").symlink_to(victim)
    code, err = _cli(capsys, "predict", folder, files[next(iter(files))], "--out", out, "--cam")
    _one_line(code, err)
    assert "cam" in err and list(victim.iterdir()) == []


# ------------------------------------------------------------------------------------------------ 4: pixel limit


def test_jpeg_over_the_pixel_limit_is_refused_from_its_header_without_pillows_warning():
    import io
    import warnings

    from PIL import Image

    from cxrbench.errors import InputError
    from cxrbench.imagefiles import decode_bytes

    buf = io.BytesIO()
    Image.new("L", (10000, 9000)).save(buf, format="JPEG")  # 90 M pixels: over Pillow's warning size too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"big\.jpg: .*image too large: 10000x9000 is 90,000,000 pixels"):
            decode_bytes(buf.getvalue(), 64, source="big.jpg")


def test_dicom_over_the_pixel_limit_is_refused_before_its_pixels_are_decoded(monkeypatch):
    import io

    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from cxrbench import imagefiles
    from cxrbench.errors import InputError
    from cxrbench.imagefiles import decode_bytes

    from .test_predict import dicom

    ds = pydicom.dcmread(io.BytesIO(dicom(np.zeros((8, 8), np.uint16))))
    ds.Rows, ds.Columns = 10000, 10000  # the header's size; the pixel data is never decoded
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(InputError, match=r"huge\.dcm: image too large: 10000x10000 is 100,000,000 pixels"):
        decode_bytes(buf.getvalue(), 64, source="huge.dcm")
    ds = pydicom.dcmread(io.BytesIO(dicom(np.zeros((64, 64), np.uint16))))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert decode_bytes(buf.getvalue(), 64, source="ok.dcm").shape == (64, 64)
    monkeypatch.setattr(imagefiles, "MAX_IMAGE_BYTES", 4096)  # 8 KB of pixels inflate past it
    with pytest.raises(InputError, match=r"bomb\.dcm: is a deflated DICOM file that inflates to over 4,096 bytes"):
        decode_bytes(buf.getvalue(), 64, source="bomb.dcm")


# ------------------------------------------------------------------------------------------------ 5-9: checkpoints


def _forged(folder: Path, dst: Path, change) -> Path:
    """A copy of the run whose scoring checkpoint has `change` applied and whose record names the new file (as
    its maker could: the record then vouches for the changed weights, which must still be refused cleanly)."""
    import hashlib

    run = _copy(folder, dst)
    ck = _checkpoint(run)
    _resave(ck, change)
    sha = hashlib.sha256(ck.read_bytes()).hexdigest()
    _edit_record(run, lambda r: r["scoring_checkpoint"].update(sha256=sha))
    return run


def _first(c: dict, end: str) -> str:
    return next(k for k in c["model"] if k.endswith(end))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("nan weights", "the run's model gives non-finite probabilities"),
        ("wrong shape", "does not hold the weights of model tiny"),
        ("no model key", "holds no model weights"),
        ("model a list", "holds no model weights"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_it(real_run, tmp_path, capsys, case, message):
    import torch

    def change(c: dict) -> None:
        if case == "nan weights":
            c["model"][_first(c, "weight")] = torch.full_like(c["model"][_first(c, "weight")], float("nan"))
        elif case == "wrong shape":
            c["model"][_first(c, "bias")] = torch.zeros(3)
        elif case == "no model key":
            c.pop("model")
        else:
            c["model"] = [1, 2]

    folder, files = real_run
    bad = _forged(folder, tmp_path / "run", change)
    code, err = _cli(capsys, "predict", bad, files[next(iter(files))])
    _one_line(code, err)
    assert str(_checkpoint(bad)) in err and message in err and "--resume" not in err


def test_a_checkpoint_grown_or_linked_is_refused_before_it_is_read(real_run, tmp_path, capsys):
    import os

    folder, files = real_run
    grown = _copy(folder, tmp_path / "grown")
    ck = _checkpoint(grown)
    size = ck.stat().st_size
    os.truncate(ck, 3 << 30)  # sparse: three gigabytes that are never read
    code, err = _cli(capsys, "predict", grown, files[next(iter(files))])
    _one_line(code, err)
    assert f"its header gives {size:,} bytes" in err and "--resume" not in err
    linked = _copy(folder, tmp_path / "linked")
    ck = _checkpoint(linked)
    ck.rename(tmp_path / "elsewhere.pt")
    ck.symlink_to(tmp_path / "elsewhere.pt")
    code, err = _cli(capsys, "predict", linked, files[next(iter(files))])
    _one_line(code, err)
    assert f"{ck}: the checkpoint is a link" in err


def test_a_record_naming_a_larger_model_is_refused_before_it_is_built(real_run, monkeypatch):
    """A built-in model's count is recounted by the board's verification already; the loader's own check (on
    the meta device) covers every model, timm's and plugins' too, before the real one is built."""
    import cxrbench.models
    from cxrbench.api import load_run
    from cxrbench.run.scorer import load_scored_model

    run = load_run(real_run[0])
    rec = json.loads(json.dumps(dict(run.record.raw)))
    rec["model"]["parameters"] += 1
    built = []
    real_create = cxrbench.models.create_model

    def create(*a, **kw):
        import torch

        built.append(str(torch.empty(0).device))
        return real_create(*a, **kw)

    monkeypatch.setattr(cxrbench.models, "create_model", create)
    monkeypatch.setattr(cxrbench.models.registry, "create_model", create)  # where the meta-device count builds
    with pytest.raises(RecordError, match=r"record\.json: field model\.parameters is .* but model tiny"):
        load_scored_model(run.path, rec, "tiny", run.protocol.num_classes, run.protocol.final_run)
    assert built == ["meta"]  # never built for real


def test_predict_writes_a_name_that_is_not_utf8_and_refuses_an_empty_array(real_run, tmp_path, capsys):
    import os

    from cxrbench.api import load_run
    from cxrbench.errors import InputError

    folder, files = real_run
    scans = tmp_path / "scans"
    scans.mkdir()
    os.link(files[next(iter(files))], os.path.join(os.fsencode(scans), b"\xff-scan.png"))
    code, err = _cli(capsys, "predict", folder, scans, "--out", tmp_path / "o")
    assert code == 0, err
    text = (tmp_path / "o" / "predictions.csv").read_bytes().decode("utf-8")
    assert "\ufffd-scan.png" in text
    with pytest.raises(InputError, match=r"an image array of shape \(0, 0\) has no pixels"):
        load_run(folder).predict(np.zeros((0, 0), np.uint8))


def test_export_keeps_an_unrelated_file_at_the_descriptions_name(real_run, tmp_path, capsys):
    folder, _ = real_run
    (tmp_path / "m.json").write_text("precious\n")
    code, err = _cli(capsys, "export", folder, "--out", tmp_path / "m.pt")
    _one_line(code, err)
    assert "is not an earlier export's description" in err
    assert (tmp_path / "m.json").read_text() == "precious\n" and not (tmp_path / "m.pt").exists()
    (tmp_path / "m.json").unlink()
    for _ in range(2):  # an earlier export's description is replaced
        code, err = _cli(capsys, "export", folder, "--out", tmp_path / "m.pt")
        assert code == 0, err
