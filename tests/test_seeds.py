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
