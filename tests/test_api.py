"""The public Python API (cxrbench.api): a finished smoke run of `tiny` on a cache built from real NIH originals,
loaded, verified, its model applied to the original files, compared and ranked as the board does."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

import cxrbench
from cxrbench.errors import ConfigError, InputError, RecordError

from .board_runs import forge
from .conftest import REAL_RGBA, REPO


def test_import_cxrbench_stays_cheap():
    code = "import sys, cxrbench; assert cxrbench.__version__; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
    assert {"Run", "load_run", "load_leaderboard", "compare"} <= set(dir(cxrbench))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cxrbench.nothing  # noqa: B018


def test_load_run(real_run):
    from cxrbench.results.predictions import Predictions

    folder, _ = real_run
    run = cxrbench.load_run(folder)
    assert isinstance(run, cxrbench.Run)
    assert run.record.model.name == "tiny" and run.protocol.key == "smoke@v1" and len(run.classes) == 15
    assert run.marks["test"] == "re-derived" and run.settings["model"] == "tiny"
    s = run.scores
    assert list(s.index) == [*run.classes, "weighted mean", "plain mean"]
    assert s.loc["weighted mean", "auroc"] == pytest.approx(run.record.raw["test"]["weighted_mean"]["auroc"])
    undefined = [c for c in run.classes if run.record.test.per_class[c].auroc is None]
    assert undefined and s.loc[undefined, "auroc"].isna().all()
    p = Predictions.read(folder / "predictions.csv.gz")
    df = run.predictions
    assert list(df.columns[:2]) == ["image", "patient"] and df["image"].tolist() == p.images
    assert np.array_equal(df[[f"p:{c}" for c in run.classes]].to_numpy(), p.probabilities)
    assert np.array_equal(df[[f"y:{c}" for c in run.classes]].to_numpy(), p.labels)
    assert cxrbench.load_run(folder / "record.json").record.record_sha256 == run.record.record_sha256


def test_load_run_refuses_what_does_not_verify(real_run, tmp_path):
    folder, _ = real_run
    bad = tmp_path / "run"
    shutil.copytree(folder, bad)
    raw = bytearray((bad / "predictions.csv.gz").read_bytes())
    raw[40] ^= 1
    (bad / "predictions.csv.gz").write_bytes(bytes(raw))
    with pytest.raises(RecordError, match="does not match the sha256"):
        cxrbench.load_run(bad)
    # consistent in itself but with figures that are not its predictions' figures: re-derivation catches it
    forged = forge(folder, tmp_path / "forged", lambda n, pa, y, p: (n, pa, y, p))
    rec = (forged / "record.json").read_text().replace('"auroc": 0.', '"auroc": 0.0', 1)
    (forged / "record.json").write_text(rec)
    with pytest.raises(RecordError):
        cxrbench.load_run(forged)
    with pytest.raises(RecordError, match="no run record"):
        cxrbench.load_run(tmp_path)


def test_predict_on_the_original_files_gives_the_runs_probabilities(real_run):
    """File -> decode + resize (the cache build's code) -> the loader's preprocessing -> the scoring model:
    the probabilities the run wrote for its test images, from their original PNGs (grey and RGBA)."""
    from cxrbench.cache.store import open_cache

    folder, files = real_run
    run = cxrbench.load_run(folder)
    want = run.predictions
    out = run.predict([files[n] for n in want["image"]])
    assert out["image"].tolist() == [str(files[n]) for n in want["image"]]
    cols = [f"p:{c}" for c in run.classes]
    marks = ["operating_point", *(f"positive:{c}" for c in run.classes)]  # the run's validation thresholds
    assert list(out.columns) == ["image", *cols, *marks]
    assert np.abs(out[cols].to_numpy() - want[cols].to_numpy()).max() < 1e-6  # the file keeps 7 digits
    rgba = REAL_RGBA.read_bytes()
    assert any(files[n].read_bytes() == rgba for n in want["image"])  # the RGBA original among them
    # the decoded file is the cache's pixels, bit for bit; the transform is the run's view of them
    store = open_cache(run.settings["cache_path"])
    name = want["image"][0]
    pos = list(store.names()).index(name)
    pixels = run.decode(files[name])
    assert np.array_equal(pixels, store.read(np.array([pos]))[0])
    x = run.transform(pixels)
    assert x.shape == (1, 3, run.protocol.crop, run.protocol.crop) and x.dtype.is_floating_point
    # decoded arrays are accepted too; the model can be handed in (built once)
    net = run.model()
    again = run.predict([pixels], model=net)
    assert again["image"].tolist() == ["array[0]"]
    assert np.allclose(again[cols].to_numpy()[0], out[cols].to_numpy()[0], atol=1e-6)
    with pytest.raises(ConfigError, match="uint8 images of 256x256"):
        run.transform(np.zeros((10, 10), np.float32))


def test_predict_names_a_file_it_cannot_read(real_run, tmp_path):
    run = cxrbench.load_run(real_run[0])
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"x\.png: is not a PNG, JPEG or DICOM file"):
        run.predict([tmp_path / "x.png"])


def test_compare_and_load_leaderboard_are_the_boards_paired_test(real_run, tmp_path):
    from cxrbench.metrics.auroc import compare as paired
    from cxrbench.results.leaderboard import submit

    folder, _ = real_run

    def shuffle(names, patients, y, p):
        return names, patients, y, np.random.default_rng(1).permutation(p)

    other = forge(folder, tmp_path / "other", shuffle)
    a, b = cxrbench.load_run(folder), cxrbench.load_run(other)
    c = cxrbench.compare(a, b)
    want = paired(a.test.labels, a.test.probabilities, b.test.probabilities, a.test.patients, "weighted", 200, 0)
    assert c == want and c.resamples == a.protocol.bootstrap
    assert cxrbench.compare(folder, folder).diff == 0.0
    with pytest.raises(ConfigError, match="weighted or plain"):
        cxrbench.compare(a, b, metric="median")

    board = tmp_path / "board"
    cache = a.settings["cache_path"]
    for d in (folder, other):
        submit(d, board, allow_dirty=True, data=cache)
    df = cxrbench.load_leaderboard(board)
    assert len(df) == 2 and df["rank"].tolist() == [1, 2] and set(df["protocol"]) == {"smoke@v1"}
    best, second = (a, b) if df["record"][0].endswith(f"{a.record.record_sha256[:8]}.json") else (b, a)
    assert df["weighted_auroc"][0] == best.record.test.weighted_mean.auroc
    c2 = cxrbench.compare(second, best)  # the board compares each entry against its group's best
    assert df["diff_vs_best"][1] == round(c2.diff, 6) and df["p_value"][1] == round(c2.p_value, 6)
    assert df["diff_vs_best"].isna()[0]
    with pytest.raises(InputError, match="no leaderboard here"):
        cxrbench.load_leaderboard(tmp_path / "none")


def test_history_csv_is_the_training_curve(real_run, tmp_path):
    """Every epoch of the run's training: the record's losses and AUROCs, the lr, the speed, and a validation
    loss that is the mean BCE of the validation predictions the last epoch wrote."""
    from cxrbench.results.history import HISTORY_COLUMNS
    from cxrbench.results.predictions import Predictions
    from cxrbench.run.fit import bce

    folder, _ = real_run
    run = cxrbench.load_run(folder)
    h = run.history
    assert tuple(h.columns) == HISTORY_COLUMNS
    assert h["training"].tolist() == ["fold0"] * 20 and h["epoch"].tolist() == list(range(1, 21))
    recorded = run.record.folds[0].history
    assert h["train_loss"].tolist() == pytest.approx([e.train_loss for e in recorded])
    assert h["val_weighted_auroc"].tolist() == pytest.approx([e.val_weighted_auroc for e in recorded], nan_ok=True)
    assert (h["lr"] == 0.1).all() and (h["images_per_s"] > 0).all() and (h["seconds"] > 0).all()
    val = Predictions.read(folder / "fold0-val.csv.gz")
    assert h["val_loss"].iloc[-1] == pytest.approx(bce(val.labels, val.probabilities), abs=1e-5)
    assert h["val_loss"].iloc[-1] != h["val_loss"].iloc[0]
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    (copy / "history.csv").write_text((folder / "history.csv").read_text().replace("fold0", "../x", 1))
    with pytest.raises(RecordError, match="fold<k> or final"):
        _ = cxrbench.load_run(copy).history


def test_gallery_shows_the_training_curve(real_run, tmp_path):
    from PIL import Image

    from cxrbench.explain.gallery import CURVE, build_gallery

    page = build_gallery(real_run[0], out=tmp_path / "g", n=1)
    assert f"<img src='{CURVE}' alt='training curves'>" in page.read_text()
    with Image.open(tmp_path / "g" / CURVE) as im:
        assert im.format == "PNG" and im.width > 400
