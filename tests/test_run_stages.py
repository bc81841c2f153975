"""The run as stages: no import cycles, typed stage results, the stage timing, validation predictions, a
deterministic mode, checksummed checkpoints and runs that never lose work (failed starts, post-training
failures, Ctrl-C)."""

import ast
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrbench.errors import ConfigError, ModelError, TrainingError, WeightsUnavailable
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import read_record
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


class RecordingDisplay:
    """A display that keeps what a run shows: info lines and progress bars with everything done to them."""

    quiet = False

    def __init__(self):
        self.lines, self.bars = [], []

    def info(self, message):
        self.lines.append(message)

    warn = error = info

    @contextmanager
    def progress(self, description, total, unit="images"):
        bar = {"description": description, "total": total, "unit": unit, "advanced": 0, "updates": []}
        self.bars.append(bar)

        class Handle:
            def advance(self, n=1):
                bar["advanced"] += n

            def update(self, **kw):
                bar["updates"].append(kw)

        yield Handle()


@pytest.fixture(scope="module")
def shown(synth_cache, tmp_path_factory):
    """A smoke run of `tiny` with what it showed."""
    d = RecordingDisplay()
    path = run(_opts(synth_cache, tmp_path_factory.mktemp("stages")), d)
    return path.parent, d


# ----------------------------------------------------------------------------------------------- structure


def _import_graph() -> dict[str, set[str]]:
    """Module -> cxrbench modules it imports anywhere (module level or inside functions)."""
    mods = {}
    for p in (REPO / "cxrbench").rglob("*.py"):
        parts = list(p.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t) if t.startswith("cxrbench") else None
                if r and r != m:
                    graph[m].add(r)
    return graph


def test_no_import_cycles():
    """The run's stages sit above the DDP layer and the model registry below its plugin loaders: no module of
    cxrbench reaches itself through its imports (today's experiment <-> distributed and registry <-> plugins
    cycles are gone)."""
    graph = _import_graph()
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not cycles, cycles[:5]
    assert not any(m.startswith("cxrbench.run") for m in graph["cxrbench.engine.distributed"])
    assert "cxrbench.models.plugins" not in graph["cxrbench.models.registry"]


@pytest.mark.slow
def test_stages_run_in_order_and_load_is_typed(synth_cache, tmp_path, monkeypatch):
    """A run calls its stages in the pipeline's order, each with what the stage before it returned; each stage is a
    module named after it, and `load` returns a typed result (not a tuple, None or a string)."""
    from cxrbench.run import bind, explain, fit, folder, load, pipeline, record, score

    calls: list[tuple[str, tuple]] = []

    def spy(module, name, label):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            out = real(*args, **kwargs)
            calls.append((label, args, out))
            return out

        monkeypatch.setattr(module, name, wrapped)

    for module, name in [(folder, "prepare"), (load, "load"), (fit, "fit_folds"), (score, "score")]:
        spy(module, name, module.__name__.rsplit(".", 1)[1])
    spy(explain, "explain", "explain")
    spy(record, "write", "record")
    path = pipeline.run(_opts(synth_cache, tmp_path))
    assert [c[0] for c in calls] == ["folder", "load", "fit", "score", "explain", "record"]
    got = {c[0]: c for c in calls}
    images, trained, scored = got["load"][2], got["fit"][2], got["score"][2]
    assert isinstance(images, load.Resident) and images.images.dtype == torch.uint8
    assert got["fit"][1][1] is images
    assert all(a is b for a, b in zip(got["score"][1][1:], (images, trained), strict=True))
    assert all(a is b for a, b in zip(got["explain"][1][1:], (images, trained, scored), strict=True))
    assert got["record"][2] == path and path.is_file()
    ctx = bind.bind(_opts(synth_cache, tmp_path / "s", loader="stream"), build_model=False)
    assert isinstance(load.load(ctx), load.Streamed) and ctx.state.prepared is None


# ---------------------------------------------------------------------------------------------- what runs show


def test_record_has_stage_times_and_the_run_prints_a_breakdown(shown):
    run_dir, d = shown
    rec = read_record(run_dir)
    st = rec["timing"]["stages"]
    for k in (
        "bind",
        "load",
        "fold0.build",
        "fold0.train",
        "fold0.validate",
        "fold0.checkpoint",
        "fold0.results",
        "score.predict",
        "score.bootstrap",
        "score.write",
        "explain",
    ):
        assert isinstance(st[k], float) and st[k] >= 0, k
    assert st["fold0.train"] == pytest.approx(rec["timing"]["train_seconds"], abs=0.01)
    assert sum(st.values()) <= rec["timing"]["wall_seconds"] + st["score.bootstrap"] + 0.05  # (bootstrap || explain)
    line = next(ln for ln in d.lines if ln.startswith("time: "))
    assert " s wall = bind " in line and "training " in line and "% of the wall time" in line
    _assert_adds_up(line.removeprefix("time: "))
    assert "before the resume" not in line
    assert rec["timing"]["resumed"] is False


def test_one_bar_over_the_whole_run(shown):
    """One training bar over every epoch of every training, in images, never reset; one line per epoch."""
    run_dir, d = shown
    rec = read_record(run_dir)
    assert len(d.bars) == 1
    bar = d.bars[0]
    train_images = sum(f["train_images"] for f in rec["validation"]["folds"])  # smoke: one fold, no final run
    assert bar["unit"] == "images" and bar["total"] == train_images == bar["advanced"]
    assert train_images == 20 * (train_images // 20) and train_images > 0
    assert not any("total" in u or "completed" in u for u in bar["updates"])
    assert any(u.get("description") == "fold0 epoch 20/20" for u in bar["updates"])
    epochs = [ln for ln in d.lines if ln.startswith("fold0 epoch ")]
    assert len(epochs) == 20 and all(" images/s, " in ln and ln.split(", ")[2].endswith(" s") for ln in epochs)


def test_validation_predictions_are_saved_and_listed(shown):
    from cxrbench.hashing import file_sha256
    from cxrbench.metrics.auroc import per_class_auroc, weighted_mean

    run_dir, _ = shown
    rec = read_record(run_dir)
    fold = rec["validation"]["folds"][0]
    assert fold["predictions"]["path"] == "fold0-val.csv.gz"
    path = run_dir / fold["predictions"]["path"]
    assert file_sha256(path) == fold["predictions"]["sha256"]
    names, patients, y, p, classes = astuple(Predictions.read(path))
    assert classes == rec["data"]["classes"] and len(names) == len(set(names)) > 0
    with gzip.open(run_dir / "predictions.csv.gz", "rt") as fh:  # the same format as the test predictions
        assert fh.readline() == gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)[0]
    assert not set(names) & set(Predictions.read(run_dir / "predictions.csv.gz").images)
    assert weighted_mean(per_class_auroc(y, p), y) == pytest.approx(fold["weighted_auroc"], abs=1e-5)


def test_record_says_whether_the_run_is_bitwise_reproducible(shown):
    env = read_record(shown[0])["environment"]
    assert env["deterministic"] is False and env["bitwise_reproducible"] is True  # the CPU
    from cxrbench.run.determinism import bitwise_reproducible

    assert bitwise_reproducible("cuda", False, True) is False and bitwise_reproducible("cuda", True, False)


# ------------------------------------------------------------------------------------------ deterministic mode


@pytest.mark.slow
def test_deterministic_runs_are_identical_and_recorded(synth_cache, tmp_path):
    from click.testing import CliRunner

    from cxrbench.cli import cli

    runs = []
    for name in ("a", "b"):
        r = CliRunner().invoke(
            cli,
            [
                "run",
                "--model",
                "tiny_attn",
                "--protocol",
                "smoke",
                "--cache",
                str(synth_cache),
                "--out",
                str(tmp_path / name),
                "--device",
                "cpu",
                "--deterministic",
            ],
        )
        assert r.exit_code == 0, r.output
        runs.append(read_record(next((tmp_path / name).iterdir())))
    a, b = runs
    assert a["predictions"]["sha256"] == b["predictions"]["sha256"]
    assert a["validation"]["folds"][0]["predictions"]["sha256"] == b["validation"]["folds"][0]["predictions"]["sha256"]
    assert a["environment"]["deterministic"] is True and a["environment"]["bitwise_reproducible"] is True
    assert a["environment"]["cuda_graphs"] is False
    assert not torch.are_deterministic_algorithms_enabled()  # the process's settings are restored


@pytest.mark.slow
def test_compile_on_the_cpu_records_compile_time_apart(synth_cache, tmp_path):
    """`--compile` runs on the CPU path; compilation is timed apart from training (it happens in epoch 1)."""
    rec = read_record(run(_opts(synth_cache, tmp_path, compile=True)).parent)
    st = rec["timing"]["stages"]
    first_epoch = rec["validation"]["folds"][0]["history"][0]["seconds"]
    assert rec["environment"]["compile"] is True and st["fold0.compile"] > first_epoch
    assert st["fold0.train"] == pytest.approx(rec["timing"]["train_seconds"], abs=0.01)
    assert rec["test"]["n_images"] > 0


# ------------------------------------------------------------------------------------------------- plugins

BAD_CAM = textwrap.dedent("""
    from torch import nn
    from cxrbench.models import register_model

    @register_model(cam_layer="{layer}", input_size=64)
    def {name}(num_classes=15, pretrained=False):
        return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))
""")


@pytest.mark.slow
def test_bad_cam_layer_is_refused_by_models_and_before_training(synth_cache, tmp_path, monkeypatch):
    plugin = tmp_path / "badcam.py"
    plugin.write_text(BAD_CAM.format(layer="features.9", name="badcam"))
    r = subprocess.run(
        [sys.executable, "-m", "cxrbench", "models", "--plugin", str(plugin)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "cam_layer 'features.9', which is not a module of the built model" in r.stderr
    import cxrbench.run.load as load_stage

    monkeypatch.setattr(load_stage, "load", lambda ctx: pytest.fail("images loaded before the model check"))
    with pytest.raises(ModelError, match="features.9"):
        run(_opts(synth_cache, tmp_path / "runs", model="badcam", plugins=(str(plugin),)))
    assert not (tmp_path / "runs").exists()
    flat = tmp_path / "flatcam.py"  # a module that exists but gives no feature map
    flat.write_text(BAD_CAM.format(layer="3", name="flatcam"))
    with pytest.raises(ModelError, match=r"cam_layer '3' gave \(2, 4\).*feature map"):
        run(_opts(synth_cache, tmp_path / "runs", model="flatcam", plugins=(str(flat),)))


# ------------------------------------------------------------------------------------- failed starts, retries


@pytest.mark.slow
def test_failed_start_does_not_block_a_retry(synth_cache, tmp_path, monkeypatch):
    import cxrbench.run.load as load_stage
    from cxrbench.run.folder import training_state

    monkeypatch.setenv("CXRBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no ImageNet weights here
    real_load = load_stage.load

    def no_load(ctx):
        raise AssertionError("stop: the images would load now")

    monkeypatch.setattr(load_stage, "load", no_load)
    out = tmp_path / "runs"
    with pytest.raises(WeightsUnavailable, match="CXRBENCH_OFFLINE=1.*--no-pretrained"):
        run(_opts(synth_cache, out, model="densenet121", pretrained=True, run_id="r"))
    assert not (out / "r").exists()  # refused before any image (no_load) or folder
    with pytest.raises(AssertionError, match="stop: the images would load now"):  # the retry gets past the folder
        run(_opts(synth_cache, out, model="densenet121", pretrained=False, run_id="r"))
    assert (out / "r" / "run.json").exists() and not training_state(out / "r")
    d = RecordingDisplay()
    with pytest.raises(AssertionError, match="stop"):  # other settings, no --resume: proceeds, and says so
        run(_opts(synth_cache, out, model="tiny", run_id="r"), d)
    assert any("holds no training yet" in ln and "other settings (model" in ln for ln in d.lines), d.lines
    monkeypatch.setattr(load_stage, "load", real_load)
    rec = read_record(run(_opts(synth_cache, out, model="tiny_attn", run_id="r", resume=True)).parent)
    assert rec["model"]["name"] == "tiny_attn"  # --resume of a folder without training starts it


# --------------------------------------------------------------------------------------------- checkpoints


def _interrupt_at(monkeypatch, call: int):
    """Raise KeyboardInterrupt at the `call`-th training loss (2 batches an epoch for smoke on synth_cache)."""
    import cxrbench.engine.train as train

    real = train.F.binary_cross_entropy_with_logits
    calls = {"n": 0}

    def loss(*args, **kw):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(train.F, "binary_cross_entropy_with_logits", loss)
    return calls


def test_flipped_checkpoint_byte_is_refused(synth_cache, tmp_path, monkeypatch):
    from cxrbench.run.progress import RunInterrupted

    _interrupt_at(monkeypatch, 25)
    with pytest.raises(RunInterrupted, match=r"interrupted in fold0 epoch 13/20; last checkpoint .*fold0.pt"):
        run(_opts(synth_cache, tmp_path))
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"was started with other settings \(model"):  # a run in progress
        run(_opts(synth_cache, tmp_path, model="tiny_attn", run_id="tiny__smoke@v1__lr0.1__seed0", resume=True))
    ck = next(tmp_path.iterdir()) / "fold0.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0x01
    ck.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match=r"fold0.pt is refused: its content does not match its sha256.*remove "):
        run(_opts(synth_cache, tmp_path, resume=True))
    assert ck.read_bytes() == bytes(data)  # refused, not touched
    assert not (ck.parent / "record.json").exists()


def test_damaged_or_unverifiable_checkpoints_are_refused(tmp_path):
    from cxrbench.engine.checkpoint import checkpoint_epoch, load_checkpoint, save_checkpoint

    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"version": 2, "w": torch.arange(4)}, epoch=3)
    assert checkpoint_epoch(path) == 3 and torch.equal(load_checkpoint(path, 2)["w"], torch.arange(4))
    good = path.read_bytes()
    path.write_bytes(good[:-10])
    with pytest.raises(TrainingError, match="truncated"):
        load_checkpoint(path)
    legacy = tmp_path / "old.pt"
    torch.save({"version": 1}, legacy)  # a plain torch file: no checksum
    with pytest.raises(TrainingError, match="no checksum .* cannot be verified; remove "):
        load_checkpoint(legacy)
    with pytest.raises(TrainingError, match="version 2, expected 3"):
        path.write_bytes(good)
        load_checkpoint(path, 3)


def test_checkpoints_skip_costly_epochs_and_resume_exactly(monkeypatch, tmp_path):
    """With a budget of 0 only the first and the last epoch write a checkpoint; a run stopped in between
    resumes from epoch 1 and still ends with exactly the weights of an unbroken run."""
    from cxrbench.engine.loader import ResidentLoader, View
    from cxrbench.engine.train import TrainConfig, fit
    from cxrbench.models import create_model

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (40, 64, 64), dtype=np.uint8)
    y = (rng.random((40, 15)) < 0.3).astype(np.float32)
    f = rng.random((40, 5)).astype(np.float32)
    cfg = TrainConfig(
        lr=0.05, momentum=0.9, weight_decay=0.0, epochs=6, device="cpu", nonimage=False, checkpoint_budget=0.0
    )

    def train(ck, resume=False):
        torch.manual_seed(0)
        m = create_model("tiny")
        state = fit(m, ResidentLoader(imgs, y, f, View(64, 64, 64, False), 16, "cpu", True, 0), cfg, ck, resume=resume)
        return m, state

    whole, state = train(tmp_path / "whole.pt")
    assert state.checkpoints == 2 and state.last_checkpoint_epoch == 5
    _interrupt_at(monkeypatch, 3 * 4 + 2)  # 3 batches an epoch: in epoch 5
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "broken.pt")
    monkeypatch.undo()
    from cxrbench.engine.train import load_checkpoint

    assert load_checkpoint(tmp_path / "broken.pt")["epoch"] == 0
    resumed, state = train(tmp_path / "broken.pt", resume=True)
    assert [h.epoch for h in state.history] == list(range(6))
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


# -------------------------------------------------------------------------- failures after training, Ctrl-C


@pytest.mark.slow
def test_failure_after_training_resumes_without_retraining(shown, synth_cache, tmp_path, monkeypatch):
    import cxrbench.engine.train as train
    import cxrbench.explain.localization as localization

    real = localization.localize
    monkeypatch.setattr(localization, "localize", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("GPU lost")))
    with pytest.raises(RuntimeError, match="GPU lost"):
        run(_opts(synth_cache, tmp_path))
    run_dir = next(tmp_path.iterdir())
    assert not (run_dir / "record.json").exists() and (run_dir / "fold0.json").exists()
    monkeypatch.setattr(localization, "localize", real)
    steps = _interrupt_at(monkeypatch, 10**9)  # counts training losses
    fits = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    rec = read_record(run(_opts(synth_cache, tmp_path, resume=True)).parent)
    assert steps["n"] == 0 and not fits  # no training step ran in the resume
    unbroken = read_record(shown[0])
    same = (
        "protocol",
        "model",
        "lr",
        "deviations",
        "data",
        "seeds",
        "validation",
        "test",
        "predictions",
        "localization",
    )
    assert {k: _untimed(rec[k]) for k in same} == {k: _untimed(unbroken[k]) for k in same}
    assert rec["timing"]["resumed"] is True and rec["timing"]["train_images"] == unbroken["timing"]["train_images"]


def _untimed(x):
    """A record part without the seconds and rates that differ between any two runs."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in ("seconds", "images_per_s", "train_seconds")}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


@pytest.mark.slow
def test_ctrl_c_says_where_the_run_stopped_and_resume_continues(synth_cache, tmp_path):
    """The interrupt arrives at a point the test controls: the run signals itself once the first epoch's
    checkpoint is written (the first is always written; later ones only when the checkpoint budget allows, which
    depends on speed), so the test cannot pass or fail by timing."""
    from cxrbench.engine.train import INTERRUPT_AFTER_EPOCH

    out = tmp_path / "runs"
    args = [sys.executable, "-m", "cxrbench", "run", "--model", "tiny", "--protocol", "smoke"]
    args += ["--cache", str(synth_cache), "--out", str(out), "--device", "cpu"]
    ck = out / "tiny__smoke@v1__lr0.1__seed0" / "fold0.pt"
    # a terminal's Ctrl-C reaches a process whose SIGINT is the default; a disposition left "ignored" in this
    # test process by earlier work would be inherited across exec, so the child starts from the default
    r = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, INTERRUPT_AFTER_EPOCH: "0"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err = r.stderr
    assert r.returncode == 130, f"SIGINT here: {signal.getsignal(signal.SIGINT)}\n{err[:1500]}\n...\n{err[-1500:]}"
    assert "Traceback" not in err and "Aborted" not in err
    msg = err.strip().splitlines()[-1]
    assert msg.startswith("error: interrupted in fold0 epoch "), msg
    assert f"last checkpoint {ck} (after epoch 1)" in " ".join(err.split()) and "--resume" in msg
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    history = read_record(ck.parent)["validation"]["folds"][0]["history"]
    assert [h["epoch"] for h in history] == list(range(20))
    # the resumed session's timing line adds up to its own wall time and names what came before the resume
    line = " ".join(r.stderr.split()).split("time: ", 1)[1].split(" record: ")[0]
    _assert_adds_up(line)
    # what the first session spent: its stages with their seconds (which ones rounded to 0.0 s and were left
    # out depends on speed: one epoch of tiny can train in under 0.05 s)
    before = line.split("; before the resume (not in this wall time): ", 1)[1].split(" evaluation:")[0]
    spent = [part.rsplit(" ", 2) for part in before.split(", ")]
    from cxrbench.run.timing import _GROUPS

    assert spent and all(s in {g for g, _ in _GROUPS} and u == "s" for s, _, u in spent), line
    assert all(float(t) > 0 for _, t, _ in spent), line


def _assert_adds_up(line: str) -> None:
    """`W s wall = a X s, b Y s, ...; ...`: the parts add up to W (each is rounded to 0.1 s, and a part under
    0.05 s is not shown: at most 16 of them)."""
    import re

    wall = float(line.split(" s wall = ")[0].replace(",", ""))
    parts = [
        float(x.replace(",", "")) for x in re.findall(r" ([\d,]+\.\d) s", line.split(" s wall = ")[1].split(";")[0])
    ]
    assert parts and abs(sum(parts) - wall) <= 0.05 * 16, line


@pytest.mark.long
def test_gpu_check_script_dry_run_on_the_cpu(tmp_path):
    """tools/gpu_check.sh runs its whole plan on the CPU with tiny settings: every variant's whole-run JSON with
    its stage breakdown, and the summary (compile against the default, determinism's cost and repeatability)."""
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_BUDGET": "3000", "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "w")}
    r = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=3000,
        env=env,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    files = {p.name.split("-x86")[0].split("-aarch")[0] for p in out.glob("*.json")}
    assert {
        "whole_run-graphs",
        "whole_run-compile",
        "whole_run-deterministic-a",
        "whole_run-deterministic-b",
        "whole_run_summary",
    } <= files, files
    graphs = json.loads(next(out.glob("whole_run-graphs-*.json")).read_text())
    assert graphs["whole_run_images_per_s"] > 0 and graphs["per_epoch_images_per_s"] > 0
    assert graphs["breakdown_seconds"]["training"] > 0 and graphs["projected_full_protocol"]["protocol"] == "smoke@v1"
    summary = json.loads(next(out.glob("whole_run_summary-*.json")).read_text())
    assert summary["deterministic"]["bitwise_identical_repeat"] is True  # the CPU
    assert summary["compile_vs_graphs"]["compile_seconds"] > 0
