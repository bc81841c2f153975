import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrbench.engine.train import load_checkpoint
from cxrbench.errors import ConfigError, RecordError, TrainingError
from cxrbench.results.record import read_record, validate
from cxrbench.run import RunOptions, run

REPO = Path(__file__).resolve().parents[1]


def _opts(cache, out, **kw):
    return RunOptions(
        model=kw.pop("model", "tiny"),
        protocol=kw.pop("protocol", "smoke"),
        cache=str(cache),
        out=str(out),
        device="cpu",
        **kw,
    )


@pytest.fixture(scope="module")
def tiny_run(synth_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run(_opts(synth_cache, out)).parent


def test_record_is_complete_and_valid(tiny_run, synth_cache):
    rec = read_record(tiny_run)
    assert tiny_run.name == "tiny__smoke@v1__lr0.1__seed0"  # one spelling of a protocol: id@vN
    assert rec["protocol"]["id"] == "smoke" and len(rec["protocol"]["hash"]) == 16
    assert rec["model"] == {
        "name": "tiny",
        "source": {"kind": "built-in"},
        "parameters": 6583,
        "pretrained": False,
        "weights": {"pretrained": False},
    }
    assert rec["data"]["cache_fingerprint"] and len(rec["data"]["metadata_csv_sha256"]) == 64
    assert set(rec["data"]["split_hashes"]) == {"trainval", "test", "folds"}
    assert rec["code"]["git_commit"] and isinstance(rec["code"]["git_dirty"], bool)
    assert rec["environment"]["device"] == "cpu" and rec["environment"]["processes"] == 1
    assert rec["timing"]["train_images_per_s"] > 0 and rec["timing"]["wall_seconds"] > 0
    hist = rec["validation"]["folds"][0]["history"]
    assert len(hist) == 20 and all(h["train_loss"] > 0 for h in hist)
    t = rec["test"]
    assert set(t["per_class"]) == set(rec["data"]["classes"]) and len(t["per_class"]) == 15
    assert t["bootstrap"] == {"resamples": 200, "seed": 0, "unit": "patient"}
    with gzip.open(tiny_run / "predictions.csv.gz", "rt") as fh:
        header = fh.readline().strip().split(",")
        rows = fh.readlines()
    assert header[:2] == ["image", "patient"] and len(header) == 2 + 30 and len(rows) == t["n_images"]


def test_tampered_record_fails_validation(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    rec = json.loads((copy / "record.json").read_text())
    rec["test"]["weighted_mean"]["auroc"] = 0.99
    (copy / "record.json").write_text(json.dumps(rec))
    with pytest.raises(RecordError, match="record_sha256 does not match"):
        read_record(copy)
    shutil.copy(tiny_run / "record.json", copy / "record.json")
    (copy / "predictions.csv.gz").write_bytes(gzip.compress(b"image,patient\n"))
    with pytest.raises(RecordError, match="does not match the sha256"):
        read_record(copy)
    rec = json.loads((tiny_run / "record.json").read_text())
    with pytest.raises(RecordError, match="unknown schema_version 2"):
        validate({**rec, "schema_version": 2})
    with pytest.raises(RecordError, match="missing field 'test'"):
        validate({k: v for k, v in rec.items() if k != "test"})


def test_run_folder_is_not_overwritten(tiny_run, synth_cache):
    with pytest.raises(ConfigError, match="already exists; continue it with --resume"):
        run(_opts(synth_cache, tiny_run.parent))
    with pytest.raises(ConfigError, match="already finished"):
        run(_opts(synth_cache, tiny_run.parent, resume=True))


@pytest.mark.slow
def test_resume_equals_unbroken(synth_cache, tmp_path, monkeypatch):
    import cxrbench.engine.train as train

    a = run(_opts(synth_cache, tmp_path / "a")).parent
    calls = {"n": 0}
    real_loss = train.F.binary_cross_entropy_with_logits

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 25:  # in epoch 13 of 20 (2 batches an epoch)
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(train.F, "binary_cross_entropy_with_logits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(_opts(synth_cache, tmp_path / "b"))
    monkeypatch.setattr(train.F, "binary_cross_entropy_with_logits", real_loss)
    b_dir = tmp_path / "b" / a.name
    assert not (b_dir / "record.json").exists()
    assert load_checkpoint(b_dir / "fold0.pt")["epoch"] < 19
    b = run(_opts(synth_cache, tmp_path / "b", resume=True)).parent
    ra, rb = read_record(a), read_record(b)
    assert ra["test"] == rb["test"]
    assert (
        ra["validation"]["folds"][0]["history"][-1]["train_loss"]
        == rb["validation"]["folds"][0]["history"][-1]["train_loss"]
    )
    assert ra["predictions"]["sha256"] == rb["predictions"]["sha256"]
    wa = load_checkpoint(a / "fold0.pt")["model"]
    wb = load_checkpoint(b / "fold0.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_survives_a_failure_mid_save(tmp_path, monkeypatch):
    from cxrbench.engine import checkpoint

    path = tmp_path / "ck.pt"
    checkpoint.save_checkpoint(path, {"version": 2, "w": torch.arange(5)})

    def disk_full(fd):
        raise OSError("disk full")

    from cxrbench import files

    monkeypatch.setattr(files.os, "fsync", disk_full)  # the new file is written, then cannot be synced
    with pytest.raises(files.WriteError, match="ck.pt: cannot write \\(disk full\\)"):
        checkpoint.save_checkpoint(path, {"version": 2, "w": torch.zeros(5)})
    monkeypatch.undo()
    assert torch.equal(checkpoint.load_checkpoint(path)["w"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_nan_loss_stops_the_run_and_writes_nothing(synth_cache, tmp_path, monkeypatch):
    import cxrbench.engine.train as train

    real_loss = train.F.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def nan_after_some(*args, **kw):
        calls["n"] += 1
        out = real_loss(*args, **kw)
        return out * float("nan") if calls["n"] >= 5 else out

    monkeypatch.setattr(train.F, "binary_cross_entropy_with_logits", nan_after_some)
    with pytest.raises(TrainingError, match=r"non-finite \(nan\) in epoch 3, step 1.*writes no result"):
        run(_opts(synth_cache, tmp_path))
    assert not list(tmp_path.rglob("record.json")) and not list(tmp_path.rglob("predictions.csv.gz"))


@pytest.mark.slow
def test_plugin_model_run(synth_cache, tmp_path):
    r = read_record(
        run(_opts(synth_cache, tmp_path, model="mynet", plugins=(str(REPO / "examples" / "my_model.py"),))).parent
    )
    src = r["model"]["source"]
    assert src["kind"] == "file" and src["path"].endswith("examples/my_model.py") and len(src["sha256"]) == 64


def test_grid_protocol_needs_lr(synth_cache, tmp_path):
    with pytest.raises(ConfigError, match="pick one with --lr"):
        run(_opts(synth_cache, tmp_path, protocol="paper-lr-grid"))


@pytest.mark.long
def test_densenet121_smoke_learns_the_planted_findings(synth300_cache, tmp_path):
    """Acceptance: densenet121 under `smoke` on a phantom cache, on the CPU, is well above chance."""
    rec = read_record(run(_opts(synth300_cache, tmp_path, model="densenet121")).parent)
    assert rec["test"]["weighted_mean"]["auroc"] > 0.75, rec["test"]["weighted_mean"]
    assert rec["test"]["weighted_mean"]["ci95"][0] > 0.5


@pytest.mark.slow
def test_graph_step_logic_equals_eager_on_cpu():
    """The CUDA-graph step's bookkeeping (warm-up, static buffers, eager last batch), emulated on the CPU,
    trains exactly like the eager loop."""
    from cxrbench.engine.loader import ResidentLoader, View
    from cxrbench.engine.train import TrainConfig, fit
    from cxrbench.models import create_model

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (37, 64, 64), dtype=np.uint8)
    y = (rng.random((37, 15)) < 0.3).astype(np.float32)
    f = rng.random((37, 5)).astype(np.float32)
    weights = []
    for graphs in (False, True):
        torch.manual_seed(0)
        m = create_model("tiny_attn")
        cfg = TrainConfig(
            lr=0.05, momentum=0.9, weight_decay=0.0, epochs=3, device="cpu", nonimage=True, cuda_graphs=graphs
        )
        state = fit(m, ResidentLoader(imgs, y, f, View(64, 64, 64, False), 8, "cpu", True, 0), cfg, None)
        weights.append((m.state_dict(), [h.train_loss for h in state.history]))
        assert (state.capture_seconds > 0) == graphs  # the emulated warm-up and capture ran, timed apart
    (wa, la), (wb, lb) = weights
    assert la == lb
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
