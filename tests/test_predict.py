"""`cxrbench predict` and the image files it reads (cxrbench.imagefiles): DICOM files made with pydicom itself,
JPEG, 16-bit and RGB PNGs, all of the same real NIH original, and a bad file that is named and skipped."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cxrbench.cache.decode import decode_full
from cxrbench.errors import InputError
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
