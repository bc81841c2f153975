"""`cxrbench run --tensorboard DIR`: the training curves of history.csv as TensorBoard event files, a side output
that the record does not know of; without TensorBoard, one line naming the extra before anything is trained."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cxrbench.cli import main


@pytest.mark.slow
def test_event_files_hold_the_figures_of_history_csv(synth_cache, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    from cxrbench.results.history import HISTORY_COLUMNS, read_history

    out, tb = tmp_path / "runs", tmp_path / "tb"
    args = ["run", "--model", "tiny", "--protocol", "smoke", "--cache", str(synth_cache), "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main([*args, "--device", "cpu", "--tensorboard", str(tb)])
    assert e.value.code == 0, capsys.readouterr().err[-2000:]
    (run,) = out.iterdir()
    history = read_history(run / "history.csv")
    assert len(history) >= 2 and history["val_loss"].notna().any()
    assert sorted(p.name for p in (tb / run.name).iterdir()) == sorted(set(history["training"]))
    compared = 0
    for training, rows in history.groupby("training"):
        acc = EventAccumulator(str(tb / run.name / training), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in HISTORY_COLUMNS[2:]:
            want = {int(r.epoch): float(getattr(r, tag)) for r in rows.itertuples() if not np.isnan(getattr(r, tag))}
            got = {e.step: float(make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)} if want else {}
            assert got == want, (training, tag)  # exactly: stored in double precision
            compared += len(want)
    assert compared >= 2 * 5
    # a side output: the run's settings and record do not know of it
    for name in ("run.json", "record.json"):
        assert "tensorboard" not in (run / name).read_text() and str(tb) not in (run / name).read_text()
    assert "tensorboard" not in json.loads((run / "run.json").read_text())


def test_without_tensorboard_the_run_says_which_extra_before_training(synth_cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "runs"
    for command in ("run", "sweep"):
        models = ["--model", "tiny"] if command == "run" else ["--models", "tiny"]
        args = [command, *models, "--protocol", "smoke", "--cache", str(synth_cache), "--out", str(out)]
        with pytest.raises(SystemExit) as e:
            main([*args, "--device", "cpu", "--tensorboard", str(tmp_path / "tb")])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and "pip install 'cxrbench[tensorboard]'" in err
        assert not out.exists() and not (tmp_path / "tb").exists()


def test_sweep_and_replicates_pass_the_folder_to_each_run():
    from cxrbench.orchestrate.sweep import run_args
    from cxrbench.run import RunOptions

    opts = RunOptions(model="tiny", protocol="smoke", cache="c", tensorboard="tb dir")
    args = run_args(opts)
    assert args[args.index("--tensorboard") + 1] == "tb dir"
    assert "--tensorboard" not in run_args(RunOptions(model="tiny", protocol="smoke", cache="c"))


def test_a_folder_that_cannot_be_written_is_a_warning_not_a_failed_run(synth_cache, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "runs"
    args = ["run", "--model", "tiny", "--protocol", "smoke", "--cache", str(synth_cache), "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main([*args, "--device", "cpu", "--tensorboard", str(tmp_path / "a-file" / "tb")])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 0, err[-2000:]
    assert "the TensorBoard event files were not written:" in err and "a-file" in err
    (run,) = out.iterdir()
    assert (run / "record.json").exists() and (tmp_path / "a-file").read_text() == "not a folder"
