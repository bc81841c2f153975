"""`cxrbench predict` and the image files it reads (cxrbench.imagefiles): DICOM files made with pydicom itself,
JPEG, 16-bit and RGB PNGs, all of the same real NIH original, and a bad file that is named and skipped."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cxrbench.cache.decode import decode_full
from cxrbench.errors import ConfigError, InputError
from cxrbench.imagefiles import decode_bytes, dicom_gray, window

from .conftest import REAL_PNGS

pydicom = pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return decode_full("cxr", REAL_PNGS[0].read_bytes())


def dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    rescale: tuple[float, float] | None = None,
    window_cw: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    frames: int = 1,
    compressed: bool = False,
) -> bytes:
    """A DICOM file (Secondary Capture, 16-bit unsigned samples, 12 stored) as pydicom writes it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if compressed else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window_cw is not None:
        ds.WindowCenter, ds.WindowWidth = window_cw
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut), 0, 8])  # LUT Descriptor
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUT Data
        ds.VOILUTSequence = [item]
    if compressed:
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.astype("<u2").tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_rescale_window_and_monochrome1(gray):
    g = gray.astype(np.uint16)
    identity = (128, 256)  # the standard's linear window that maps 0..255 onto itself
    assert np.array_equal(dicom_gray(dicom(g * 4 + 100, rescale=(0.25, -25), window_cw=identity)), gray)
    inverted = dicom((255 - g) * 4 + 100, photometric="MONOCHROME1", rescale=(0.25, -25), window_cw=identity)
    assert np.array_equal(dicom_gray(inverted), gray)  # white is low in MONOCHROME1
    lut = dicom(g, voi_lut=255 - np.arange(256))
    assert np.array_equal(dicom_gray(lut), 255 - gray)  # the VOI LUT, not the window, decides
    v = g * 3 + 7  # neither LUT nor window: the image's own range
    lo, hi = float(v.min()), float(v.max())
    want = np.floor((v - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)
    assert np.array_equal(dicom_gray(dicom(v)), want)
    # the standard's example window (C.11.2.1.2.1): centre 40, width 400 -> below -160 black, above 239 white
    assert window(np.array([-161.0, -160.0, 39.5, 239.0, 240.0]), 40, 400).tolist() == [
        0.0,
        0.0,
        127.5,
        pytest.approx(255.0 * (199.5 / 399 + 0.5)),
        255.0,
    ]


def test_dicom_refusals(gray):
    g = gray[:64, :64].astype(np.uint16)
    with pytest.raises(InputError, match=r"a\.dcm: is a multi-frame DICOM file \(2 frames\)"):
        decode_bytes(dicom(np.stack([g, g]), frames=2), 256, source="a.dcm")
    with pytest.raises(
        InputError, match=r"b\.dcm: holds pixel data that cannot be decoded here \(transfer syntax JPEG"
    ):
        decode_bytes(dicom(g, compressed=True), 256, source="b.dcm")
    no_pixels = dicom(g).replace(b"\xe0\x7f\x10\x00", b"\xe0\x7f\x11\x00")  # the Pixel Data tag renamed
    with pytest.raises(InputError, match="without an image"):
        decode_bytes(no_pixels, 256, source="c.dcm")


def test_predict_command_reads_every_format_and_skips_a_bad_file(real_run, tmp_path, capsys, gray):
    """One test image's original as PNG, as its DICOM, as a 16-bit PNG (same high bytes) and as RGB: the same
    pixels, so the same probabilities, equal to the run's; a JPEG of it is read too; a broken file is skipped."""
    from cxrbench.api import load_run
    from cxrbench.cli import main

    folder, files = real_run
    run = load_run(folder)
    want = run.predictions
    name = next(n for n in want["image"] if files[n].read_bytes() == REAL_PNGS[0].read_bytes())
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    (scans / "a.png").write_bytes(files[name].read_bytes())
    (scans / "b.dcm").write_bytes(dicom(gray.astype(np.uint16) * 16, window_cw=(128 * 16, 256 * 16 - 15)))
    Image.fromarray((gray.astype(np.uint16) << 8) | 0x5A).save(scans / "c16.png")
    Image.fromarray(gray).convert("RGB").save(scans / "sub" / "d-rgb.png")
    Image.fromarray(gray).save(scans / "e.jpg", quality=95)
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (scans / "notes.txt").write_text("not an image and not searched for")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(folder), str(scans), "--out", str(out), "--format", "json", "--cam"])
    err = capsys.readouterr().err
    assert e.value.code == 0, err
    assert f"skipped {scans / 'broken.png'}" in " ".join(err.split()) and "Traceback" not in err
    rows = {r["image"]: r["probabilities"] for r in json.loads((out / "predictions.json").read_text())}
    assert sorted(rows) == sorted(str(scans / n) for n in ("a.png", "b.dcm", "c16.png", "sub/d-rgb.png", "e.jpg"))
    recorded = want.set_index("image").loc[name]
    for same in ("a.png", "b.dcm", "c16.png", "sub/d-rgb.png"):
        got = rows[str(scans / same)]
        assert max(abs(got[c] - recorded[f"p:{c}"]) for c in run.classes) < 1e-6, same
    assert len(list((out / "cam").glob("*.png"))) == 5 * 3


def test_predict_command_errors_are_one_line(real_run, tmp_path, capsys):
    from cxrbench.cli import main

    folder, _ = real_run
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(SystemExit) as e:
        main(["predict", str(folder), str(tmp_path / "x.jpg")])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "none of the 1 file(s) could be read" in err and "x.jpg" in err
    with pytest.raises(SystemExit) as e:
        main(["predict", str(folder), str(tmp_path), "--cam"])
    assert e.value.code == 2 and "--cam writes pictures: give --out DIR" in capsys.readouterr().err


def _threshold_calls(p: np.ndarray, thr: list) -> np.ndarray:
    """1/0 at p (as the predictions files write it, 7 significant digits) >= threshold, NaN without one."""
    shown = np.vectorize(lambda v: float(f"{v:.7g}"))(np.asarray(p, np.float64))
    out = np.where(shown >= np.array([np.inf if t is None else t for t in thr])[None, :], 1.0, 0.0)
    out[:, [t is None for t in thr]] = np.nan
    return out


def test_predict_marks_each_class_at_the_runs_operating_points(real_run, tmp_path, capsys):
    """The run's evaluation/evaluation.json thresholds (chosen on fold-0 validation): Youden by default, another
    by name; the test images' own files are called as their recorded probabilities are at those thresholds."""
    import pandas as pd

    from cxrbench.api import load_run
    from cxrbench.cli import main

    folder, files = real_run
    run = load_run(folder)
    points = run.operating_points
    assert points is not None and points.default == "youden"
    assert set(points.names) == {"youden", "sensitivity>=0.9", "specificity>=0.9"}
    ev = json.loads((folder / "evaluation" / "evaluation.json").read_text())
    for name in points.names:
        assert list(points.thresholds[name]) == [ev["operating_points"][c][name]["threshold"] for c in run.classes]
    youden = list(points.thresholds["youden"])
    assert any(t is not None for t in youden) and any(t is None for t in youden)  # both kinds of class
    want = run.predictions.set_index("image")
    names = list(want.index)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(folder), *(str(files[n]) for n in names), "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 0, err
    assert "positive or negative at the youden operating point" in err and "others: sensitivity>=0.9" in err
    got = pd.read_csv(out / "predictions.csv", keep_default_na=False, dtype=str).set_index("image")
    assert (got["operating_point"] == "youden").all()
    recorded = want[[f"p:{c}" for c in run.classes]].to_numpy()
    expect = _threshold_calls(recorded, youden)
    cells = got.loc[[str(files[n]) for n in names], [f"positive:{c}" for c in run.classes]].to_numpy()
    assert np.array_equal(np.where(cells == "", np.nan, cells).astype(float), expect, equal_nan=True)
    assert {"0", "1"} <= set(cells.ravel())  # both calls are made somewhere in the test set
    # the API: the same calls as a nullable boolean per class; another point by name; none on request
    df = run.predict([files[n] for n in names], operating_point="specificity>=0.9")
    assert (df["operating_point"] == "specificity>=0.9").all() and df["positive:Mass"].dtype == "boolean"
    spec = _threshold_calls(df[[f"p:{c}" for c in run.classes]].to_numpy(), list(points.thresholds["specificity>=0.9"]))
    calls = df[[f"positive:{c}" for c in run.classes]].astype("float64").to_numpy()
    assert np.array_equal(calls, spec, equal_nan=True)
    plain = run.predict(files[names[0]], operating_point=None)
    assert list(plain.columns) == ["image", *(f"p:{c}" for c in run.classes)]
    with pytest.raises(ConfigError, match=r"no operating point 'youden>=1' in .*evaluation\.json \(it has youden, "):
        run.predict(files[names[0]], operating_point="youden>=1")
    with pytest.raises(SystemExit) as e:
        main(["predict", str(folder), str(files[names[0]]), "--format", "json", "--operating-point=sensitivity>=0.9"])
    cap = capsys.readouterr()
    assert e.value.code == 0, cap.err
    row = json.loads(cap.out)[0]
    assert row["operating_point"] == "sensitivity>=0.9" and set(row["positive"]) == set(run.classes)
    thr = points.thresholds["sensitivity>=0.9"]
    assert [row["positive"][c] is None for c in run.classes] == [t is None for t in thr]


def test_a_run_without_operating_points_gives_probabilities_and_says_so_once(real_run, tmp_path, capsys):
    from cxrbench.api import load_run
    from cxrbench.cli import main

    folder, files = real_run
    bare = tmp_path / "run"
    shutil.copytree(folder, bare)
    shutil.rmtree(bare / "evaluation")
    scans = tmp_path / "scans"
    scans.mkdir()
    for i, p in enumerate(sorted(files.values())[:3]):
        (scans / f"{i}.png").write_bytes(p.read_bytes())
    with pytest.raises(SystemExit) as e:
        main(["predict", str(bare), str(scans)])
    cap = capsys.readouterr()
    err = " ".join(cap.err.split())
    assert e.value.code == 0, err
    assert err.count("has no operating points") == 1 and "probabilities only" in err
    assert "positive:" not in cap.out and "operating_point" not in cap.out
    with pytest.raises(SystemExit) as e:
        main(["predict", str(bare), str(scans), "--operating-point", "youden"])
    assert e.value.code == 2 and "--operating-point: " in capsys.readouterr().err
    run = load_run(bare)
    assert run.operating_points is None
    with pytest.warns(UserWarning, match="has no operating points: probabilities only"):
        df = run.predict(scans / "0.png")
    assert "operating_point" not in df.columns
    with pytest.raises(ConfigError, match="has no operating points"):
        run.predict(scans / "0.png", operating_point="youden")


def _resealed(d: dict) -> str:
    from cxrbench.results.evaluate import _canonical

    d = {k: v for k, v in d.items() if k != "result_sha256"}
    d["result_sha256"] = hashlib.sha256(_canonical(d)).hexdigest()
    return json.dumps(d)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not json", "not valid JSON"),
        ("a list", "not a JSON object"),
        ("edited", "do not match its result_sha256"),
        ("moved threshold", "its youden threshold of Mass is not the one chosen on the run's fold-0 validation"),
        ("text threshold", "threshold is 'abc', not a probability or null"),
        ("other record", "was made for another record"),
        ("bad name", "is not youden, sensitivity>=T or specificity>=T"),
        ("link", "is a link"),
    ],
)
def test_a_bad_evaluation_file_is_a_one_line_error_naming_it(real_run, tmp_path, capsys, case, message):
    """RUN/evaluation/evaluation.json comes from whoever made the run folder: checked before it is used."""
    from cxrbench.cli import main

    folder, files = real_run
    bad = tmp_path / "run"
    shutil.copytree(folder, bad)
    path = bad / "evaluation" / "evaluation.json"
    d = json.loads(path.read_text())
    if case == "not json":
        path.write_text('{"format": "cxrbench-evaluation",')
    elif case == "a list":
        path.write_text("[1, 2]")
    elif case == "edited":
        d["operating_points"]["Mass"]["youden"]["threshold"] = 0.5
        path.write_text(json.dumps(d))
    elif case == "moved threshold":
        d["operating_points"]["Mass"]["youden"]["threshold"] += 1e-6
        path.write_text(_resealed(d))
    elif case == "text threshold":
        d["operating_points"]["Edema"]["youden"]["threshold"] = "abc"
        path.write_text(_resealed(d))
    elif case == "other record":
        d["run_record_sha256"] = "0" * 64
        path.write_text(_resealed(d))
    elif case == "bad name":
        for c in d["operating_points"]:
            d["operating_points"][c]["\x1b[2Jyouden"] = d["operating_points"][c].pop("youden")
        path.write_text(_resealed(d))
    else:
        (tmp_path / "elsewhere.json").write_text(path.read_text())
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(SystemExit) as e:
        main(["predict", str(bad), str(next(iter(files.values())))])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    line = " ".join(err.split())
    assert f"{path}: " in line and message in line, line
    assert "\x1b[2J" not in err
