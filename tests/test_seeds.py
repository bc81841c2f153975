"""Training seeds as a dimension of runs (issue 21): `run --seed`, `--seeds` on run and sweep, replicate
groups on the board. Every run here is the `tiny` model on the 48-image phantom set (the smoke protocol)."""

import shutil

import numpy as np
import pytest

from cxrbench.errors import ConfigError, RecordError
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import read_record
from cxrbench.run import RunOptions, run


def _opts(cache, out, **kw):
    return RunOptions(model="tiny", protocol="smoke", cache=str(cache), out=str(out), device="cpu", **kw)


@pytest.fixture(scope="module")
def seed_runs(synth_cache, tmp_path_factory):
    """Seed 0 and seed 1 in one folder, and seed 1 again in another."""
    out = tmp_path_factory.mktemp("seedruns")
    again = tmp_path_factory.mktemp("seedruns_again")
    return {
        0: run(_opts(synth_cache, out)).parent,
        1: run(_opts(synth_cache, out, seed=1)).parent,
        "1again": run(_opts(synth_cache, again, seed=1)).parent,
    }


def _probs(folder):
    return Predictions.read(folder / "predictions.csv.gz").probabilities


def test_seed_changes_training_and_repeats_exactly(seed_runs):
    r0, r1, r1b = seed_runs[0], seed_runs[1], seed_runs["1again"]
    assert r0.name == "tiny__smoke@v1__lr0.1__seed0"  # the default keeps the protocol's seed and its run id
    assert r1.name == "tiny__smoke@v1__lr0.1__seed1"
    rec0, rec1 = read_record(r0), read_record(r1)
    assert rec0["seeds"] == {"train": 0, "subset": 0, "split": 0, "bootstrap": 0}
    assert rec1["seeds"] == {"train": 1, "subset": 0, "split": 0, "bootstrap": 0}  # only training moves
    assert not np.allclose(_probs(r0), _probs(r1))
    assert np.array_equal(_probs(r1), _probs(r1b))  # on a CPU, one seed gives identical predictions
    assert rec1["predictions"]["sha256"] == read_record(r1b)["predictions"]["sha256"]
    # every seed is scored on the same test images and patient resamples
    assert rec0["test"]["n_images"] == rec1["test"]["n_images"]
    assert rec0["test"]["bootstrap"] == rec1["test"]["bootstrap"]


def test_resume_and_reuse_check_the_seed(seed_runs, synth_cache, tmp_path):
    from cxrbench.run.pipeline import check_finished

    src = seed_runs[0]
    shutil.copytree(src, tmp_path / "x")
    (tmp_path / "x" / "record.json").unlink()  # trained, not recorded: a run to resume
    with pytest.raises(ConfigError, match=r"other settings \(seed\)"):
        run(_opts(synth_cache, tmp_path, seed=1, run_id="x", resume=True))
    shutil.copytree(src, tmp_path / "y")  # finished with seed 0: not reused for seed 1
    with pytest.raises(ConfigError, match="seed: finished with 0, asked 1"):
        check_finished(_opts(synth_cache, tmp_path, seed=1, run_id="y"))
    check_finished(_opts(synth_cache, tmp_path, run_id="y"))


def test_bad_seed_is_refused(synth_cache, tmp_path):
    from cxrbench.run.options import run_dir

    with pytest.raises(ConfigError, match="--seed -1"):
        run_dir(_opts(synth_cache, tmp_path, seed=-1))
    assert not any(tmp_path.iterdir())


def test_board_accepts_a_train_seed_only_as_its_run_id_says(seed_runs):
    from cxrbench.protocols import get_protocol
    from cxrbench.results.verify import check_settings

    p = get_protocol("smoke")
    rec = read_record(seed_runs[1])
    assert check_settings(rec, p, "r") == ()
    for field, value, match in [
        ("train", 2, "names seed 1, field seeds.train is 2"),
        ("split", 1, "seeds.split is 1"),
        ("subset", 1, "seeds.subset is 1"),
        ("bootstrap", 1, "seeds.bootstrap is 1"),
    ]:
        bad = {**rec, "seeds": {**rec["seeds"], field: value}}
        with pytest.raises(RecordError, match=match):
            check_settings(bad, p, "r")
    custom = {**rec, "run_id": "mine", "seeds": {**rec["seeds"], "train": 7}}  # a custom run id names no seed
    assert check_settings(custom, p, "r") == ()


# ------------------------------------------------------------------------------------ --seeds


@pytest.mark.parametrize(
    "text, seeds",
    [("3", (0, 1, 2)), ("1", (0,)), ("0,1,2", (0, 1, 2)), (" 5, 7 ", (5, 7)), ("4,0", (4, 0))],
)
def test_seeds_syntax(text, seeds):
    from cxrbench.run.options import parse_seeds

    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "give a count"),
        ("1,", "give a count"),
        ("0,x", "'x' is not a whole number"),
        ("-1", "'-1' is not a whole number"),
        ("1.5", "'1.5' is not a whole number"),
        ("0", "a count of seeds is 1 to 100"),
        ("101", "a count of seeds is 1 to 100"),
        ("1,1", "seed 1 is named twice"),
        ("0,2147483648", "seed 2147483648 is above"),
    ],
)
def test_seeds_syntax_errors(text, match):
    from cxrbench.run.options import parse_seeds

    with pytest.raises(ConfigError, match=match):
        parse_seeds(text)


def _cli(*args):
    from click.testing import CliRunner

    from cxrbench.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_seeds_print_one_command_per_run(tmp_path):
    r = _cli("run", "--model", "tiny", "--protocol", "smoke", "--cache", "c", "--seeds", "0,2", "--print")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"cxrbench run --model tiny --protocol smoke --seed {s} --cache c --out runs --device auto --resume"
        for s in (0, 2)
    ]
    r = _cli("sweep", "--protocol", "smoke", "--models", "tiny,tiny", "--cache", "c", "--seeds", "2", "--print")
    assert r.exit_code == 0, r.output
    assert [ln.split("--seed ")[1].split()[0] for ln in r.output.splitlines()] == ["0", "1"]
    r = _cli("sweep", "--protocol", "smoke", "--models", "tiny", "--cache", "c", "--print")  # as before
    assert "--seed" not in r.output
    for bad, says in [
        (["--seeds", "0,x"], "'x' is not a whole number"),
        (["--seeds", "3", "--seed", "1"], "drop --seed"),
        (["--seeds", "3", "--run-id", "a"], "drop --run-id"),
        (["--parallel", "2"], "--parallel is for the runs of --seeds"),
    ]:
        r = _cli("run", "--model", "tiny", "--protocol", "smoke", "--cache", "c", *bad)
        assert r.exit_code == 2 and says in r.output, r.output
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def swept(seed_runs, synth_cache):
    """`sweep --seeds 3` into the folder that holds seeds 0 and 1: they are reused, seed 2 is trained."""
    from cxrbench.orchestrate.sweep import sweep

    out = seed_runs[0].parent
    before = {s: (seed_runs[s] / "record.json").stat().st_mtime_ns for s in (0, 1)}
    paths = sweep(_opts(synth_cache, out), ["tiny"], 1, None, seeds=(0, 1, 2))
    return paths, before


def test_sweep_seeds_reuses_finished_runs(swept, seed_runs):
    paths, before = swept
    assert [p.parent.name for p in paths] == [f"tiny__smoke@v1__lr0.1__seed{s}" for s in (0, 1, 2)]
    assert [read_record(p.parent)["seeds"]["train"] for p in paths] == [0, 1, 2]
    assert {s: (seed_runs[s] / "record.json").stat().st_mtime_ns for s in (0, 1)} == before
