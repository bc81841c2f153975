"""Runs, sweeps and datasets at the command boundary (issue 24, classes 5 and 6): the named failures that ended
in a traceback, reuse of a finished run only when it was made as asked, and no record sealed over a missing
file."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from cxrbench.cli import main
from cxrbench.errors import ConfigError, InputError, TrainingError

from .conftest import slow_fixture


def _cli(capfd, *args) -> tuple[int, str]:
    """The real entry point in this process: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capfd.readouterr()
    return e.value.code, out + err


def _one_line_error(code, out, *words) -> None:
    assert code == 2, out
    assert "Traceback" not in out and "internal error" not in out, out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    for w in words:
        assert w in line, line


@pytest.fixture(scope="module")
@slow_fixture
def finished(synth_cache, tmp_path_factory):
    """Finished smoke runs of tiny and tiny_attn on the phantom cache."""
    from cxrbench.run import RunOptions, run

    out = tmp_path_factory.mktemp("boundary_runs")
    return {
        m: run(RunOptions(model=m, protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")).parent
        for m in ("tiny", "tiny_attn")
    }


def _unfinish(src, dst):
    """A copy of a finished run as a run killed before scoring: trained, no test predictions, no record."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("gallery"))
    (dst / "record.json").unlink()
    (dst / "predictions.csv.gz").unlink()
    return dst


# ------------------------------------------------------------------------------------ named tracebacks


def test_splits_with_a_negative_seed_is_a_usage_error(synth_dir, capfd):
    code, out = _cli(capfd, "splits", "--data-dir", synth_dir, "--protocol", "smoke", "--seed", "-1")
    assert code == 2 and "Traceback" not in out and "--seed" in out


def test_a_resumed_run_with_another_models_checkpoint_is_one_line(finished, synth_cache, tmp_path, capfd):
    run = _unfinish(finished["tiny_attn"], tmp_path / "runs" / finished["tiny_attn"].name)
    (run / "fold0.json").unlink()
    shutil.copy(finished["tiny"] / "fold0.pt", run / "fold0.pt")  # a valid checkpoint, of another model
    code, out = _cli(
        capfd, "run", "--model", "tiny_attn", "--protocol", "smoke", "--cache", synth_cache,
        "--out", tmp_path / "runs", "--device", "cpu", "--resume",
    )  # fmt: skip
    _one_line_error(code, out, "fold0.pt", "another model's weights")


PLUGIN = """
import torch
from torch import nn
from cxrbench.models import register_model

class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.head = nn.Linear(4, num_classes)
        self.num_classes = num_classes

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean(dim=(2, 3))
        out = self.head(h)
        if x.shape[0] > 2:
            {misbehave}
        return out

@register_model(name={name!r}, cam_layer="conv", input_size=64)
def make(num_classes=15, pretrained=False):
    return Net(num_classes)
"""


@pytest.mark.parametrize(
    "name, misbehave, words",
    [
        ("raises_above_2", "raise RuntimeError('only small batches')", ["failed while training", "RuntimeError"]),
        ("shape_above_2", "return out[:, :3]", ["returned output of shape", "expected"]),
    ],
)
def test_a_plugin_that_fails_only_on_larger_batches_is_one_line(synth_cache, tmp_path, capfd, name, misbehave, words):
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(textwrap.dedent(PLUGIN).replace("{misbehave}", misbehave).replace("{name!r}", repr(name)))
    code, out = _cli(
        capfd, "run", "--model", name, "--protocol", "smoke", "--cache", synth_cache, "--out", tmp_path / "runs",
        "--device", "cpu", "--plugin", plugin,
    )  # fmt: skip
    _one_line_error(code, out, name, f"{name}.py", *words)


def test_a_mini_protocol_on_a_small_dataset_says_it_is_too_small(synth_dir, synth_cache, tmp_path, capfd):
    # 48 images: 29 train+val images in 5 label strings, 3 validation images (scikit-learn refused them)
    code, out = _cli(capfd, "splits", "--data-dir", synth_dir, "--protocol", "mini-paper-15c")
    _one_line_error(code, out, "too small for protocol mini-paper-15c@v1", "stratified validation split")
    code, out = _cli(
        capfd, "run", "--model", "tiny", "--protocol", "mini-paper-15c", "--cache", synth_cache,
        "--out", tmp_path / "runs", "--device", "cpu",
    )  # fmt: skip
    _one_line_error(code, out, "too small for protocol mini-paper-15c@v1")
    code, out = _cli(capfd, "reproduce", "paper", "--mini", "--cache", synth_cache, "--out", tmp_path / "study")
    _one_line_error(code, out, "too small for protocol mini-")


# ------------------------------------------------------------------------------------ reuse and sealing


def test_sweep_checks_every_model_name_before_training(synth_cache, tmp_path, capfd):
    out = tmp_path / "sweep"
    code, text = _cli(
        capfd, "sweep", "--protocol", "smoke", "--models", "tiny,no_such_model", "--cache", synth_cache,
        "--out", out, "--device", "cpu",
    )  # fmt: skip
    _one_line_error(code, text, "no_such_model")
    assert not list(out.glob("*/fold0.pt")) and not list(out.glob("*/run.json"))  # nothing trained


def test_a_finished_run_from_another_cache_is_not_reused(finished, synth300_cache, tmp_path, capfd):
    out = tmp_path / "runs"
    shutil.copytree(finished["tiny"], out / finished["tiny"].name)
    before = (out / finished["tiny"].name / "record.json").read_bytes()
    code, text = _cli(
        capfd, "sweep", "--protocol", "smoke", "--models", "tiny", "--cache", synth300_cache, "--out", out,
        "--device", "cpu",
    )  # fmt: skip
    _one_line_error(code, text, finished["tiny"].name, "other settings", "cache_fingerprint")
    assert (out / finished["tiny"].name / "record.json").read_bytes() == before


def test_a_finished_run_made_as_asked_is_reused(finished, synth_cache):
    from cxrbench.run import RunOptions
    from cxrbench.run.pipeline import check_finished, run_or_reuse

    opts = RunOptions(
        model="tiny", protocol="smoke", cache=str(synth_cache), out=str(finished["tiny"].parent), device="cpu"
    )
    check_finished(opts)
    assert run_or_reuse(opts) == finished["tiny"] / "record.json"
    with pytest.raises(ConfigError, match="other settings .*pretrained"):
        check_finished(RunOptions(**{**opts.__dict__, "pretrained": True}))


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_resumed_run_remakes_a_missing_validation_file_before_sealing(finished, synth_cache, tmp_path, damage):
    from cxrbench.results.record import read_run_files
    from cxrbench.run import RunOptions, run

    out = tmp_path / "runs"
    d = _unfinish(finished["tiny"], out / finished["tiny"].name)
    val = d / "fold0-val.csv.gz"
    want = val.read_bytes()
    if damage == "deleted":
        val.unlink()
    else:
        val.write_bytes(want[: len(want) // 2])
    rec = run(RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu",
                         resume=True))  # fmt: skip
    files = read_run_files(rec)  # what submit reads: every file the record names, sha256 checked
    assert files.folds[0] == want  # the same predictions, scored again from the fold's checkpoint


def test_no_record_is_sealed_over_a_file_it_names_that_changed(finished, tmp_path):
    from cxrbench.run.record import check_files

    d = tmp_path / "run"
    shutil.copytree(finished["tiny"], d, ignore=shutil.ignore_patterns("gallery"))
    rec = json.loads((d / "record.json").read_text())
    check_files(d, rec)
    (d / "fold0-val.csv.gz").write_bytes(b"")
    with pytest.raises(TrainingError, match="fold 0 validation predictions changed after it was written"):
        check_files(d, rec)
    (d / "predictions.csv.gz").unlink()
    with pytest.raises(TrainingError, match="test predictions is missing; the record is not sealed"):
        check_files(d, rec)


# ------------------------------------------------------------------------------------ the dataset's images


def test_one_image_name_in_two_folders_with_different_bytes_is_refused(tmp_path):
    from cxrbench.data.layout import scan_images

    for part, data in (("images_001", b"one"), ("images_002", b"two")):
        (tmp_path / part / "images").mkdir(parents=True)
        (tmp_path / part / "images" / "00000001_000.png").write_bytes(data)
    with pytest.raises(InputError) as e:
        scan_images(tmp_path)
    assert "images_001" in str(e.value) and "images_002" in str(e.value) and "different content" in str(e.value)
    (tmp_path / "images_002" / "images" / "00000001_000.png").write_bytes(b"one")  # the same bytes: harmless
    assert scan_images(tmp_path)["00000001_000.png"].parent.parent.name == "images_001"
