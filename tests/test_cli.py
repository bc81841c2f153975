import subprocess
import sys

import pytest
from click.testing import CliRunner

from cxrbench.cli import COMMANDS, cli

from .conftest import NIH


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cxrbench", *args], capture_output=True, text=True)


def test_version_and_help():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "cxrbench" in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for name in COMMANDS:
        assert name in r.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_help_has_an_example(name):
    r = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output and f"cxrbench {name}" in r.output


def test_error_is_one_line_exit_2(tmp_path):
    r = _run("splits", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no metadata CSV found" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run("--debug", "splits", "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_unknown_protocol_suggests():
    r = _run("splits", "--data-dir", str(NIH), "--protocol", "paper-15")
    assert r.returncode == 2 and "did you mean 'paper-15c'" in r.stderr


@pytest.mark.parametrize(
    "args, said",
    [
        (["run", "--model", "densnet121", "--protocol", "smoke"], "unknown model 'densnet121'; did you mean"),
        (["run", "--model", "tiny", "--protocol", "smok"], "unknown protocol 'smok'; did you mean 'smoke'"),
        (["sweep", "--models", "tiny,tny", "--protocol", "smoke"], "unknown model 'tny'"),
        (["sweep", "--models", "tiny", "--protocol", "smok"], "unknown protocol 'smok'"),
        (["reproduce", "paper", "--mini", "--models", "tny"], "'tny' is not one of this study's models"),
        (["splits", "--protocol", "smok"], "unknown protocol 'smok'"),
    ],
)
def test_a_typo_is_named_before_a_missing_option(args, said):
    """A misspelt model or protocol is the first thing said, not a missing --cache (or --data-dir)."""
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and said in str(r.exception), (r.output, r.exception)  # (exit 2 via main)


def test_sweep_checks_every_model_before_the_first_run(synth_cache, tmp_path):
    """The last of the models misspelt: refused before the first (good) one trains, nothing written; the same
    through the library (`orchestrate.sweep.sweep`), which checks every run before any starts."""
    from cxrbench.errors import ModelError
    from cxrbench.orchestrate.sweep import sweep
    from cxrbench.run import RunOptions

    out = tmp_path / "runs"
    args = ["sweep", "--models", "tiny,tiny_attn,tiny_atn", "--protocol", "smoke", "--cache", str(synth_cache)]
    r = CliRunner().invoke(cli, [*args, "--out", str(out), "--device", "cpu"])
    assert isinstance(r.exception, ModelError) and "unknown model 'tiny_atn'" in str(r.exception)
    assert not out.exists()
    opts = RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(out), device="cpu")
    with pytest.raises(ModelError, match="tiny_atn"):
        sweep(opts, ["tiny", "tiny_atn"])
    assert not out.exists()


def test_a_missing_cache_is_still_a_usage_error():
    for args in (["run", "--model", "tiny", "--protocol", "smoke"], ["sweep", "--models", "tiny"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and "Missing option '--cache'" in r.output, r.output
    r = CliRunner().invoke(cli, ["reproduce", "paper", "--mini"])
    assert r.exit_code == 2 and "Missing option '--cache'" in r.output, r.output


@pytest.mark.slow
def test_splits_json_real_metadata():
    import json

    r = _run("splits", "--data-dir", str(NIH), "--protocol", "paper-15c", "--seed", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["table1"]) == {
        "Full training-validation",
        "Full test",
        "Training-validation subset",
        "Training subset",
        "Validation subset",
        "Test subset",
    }
    assert out["per_class"]["No Finding"]["subset"] == 10_000
    assert set(out["per_class"]["Hernia"]) == {"full", "subset", "train", "val", "test"}
    assert out["leakage"][0]["shared_patients"] == 0


@pytest.mark.slow
def test_splits_of_a_protocol_on_named_lists():
    """chexnet-14c@v1 takes its train/val/test from the CheXNet community lists in the dataset's splits/ folder."""
    import gzip
    import json

    r = _run("splits", "--data-dir", str(NIH), "--protocol", "chexnet-14c", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    n = {
        part: len(gzip.decompress((NIH / "splits" / f"chexnet-community_{part}.txt.gz").read_bytes()).split())
        for part in ("train", "val", "test")
    }
    assert (
        (out["table1"]["Training subset"], out["table1"]["Validation subset"], out["table1"]["Test subset"])
        == (n["train"], n["val"], n["test"])
        == (78_468, 11_219, 22_433)
    )
    assert {(x["a"], x["b"]) for x in out["leakage"]} == {("train", "val"), ("train", "test"), ("val", "test")}
    assert all(leak["shared_patients"] == 0 for leak in out["leakage"])


def test_protocols_lists_all():
    r = CliRunner().invoke(cli, ["protocols", "--json"])
    import json

    data = json.loads(r.output)
    assert {"paper-15c@v1", "paper-14c@v1", "paper-lr-grid@v1", "nih-official-14c@v1", "smoke@v1"} <= set(data)
