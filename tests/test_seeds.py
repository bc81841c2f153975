"""Training seeds as a dimension of runs (issue 21): `run --seed`, `--seeds` on run and sweep, replicate
groups on the board. Every run here is the `tiny` model on the 48-image phantom set (the smoke protocol)."""

import shutil

import numpy as np
import pytest

from cxrbench.errors import ConfigError, RecordError
from cxrbench.results.predictions import Predictions
from cxrbench.results.record import read_record
from cxrbench.run import RunOptions, run

from .conftest import slow_fixture


def _opts(cache, out, **kw):
    return RunOptions(model="tiny", protocol="smoke", cache=str(cache), out=str(out), device="cpu", **kw)


@pytest.fixture(scope="module")
@slow_fixture
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
@slow_fixture
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


# ------------------------------------------------------------------------------------ the board pools replicates


@pytest.fixture(scope="module")
def board(swept, tmp_path_factory):
    from cxrbench.results.leaderboard import submit

    paths, _ = swept
    b = tmp_path_factory.mktemp("seedboard") / "board"
    for p in paths:
        submit(p.parent, b, allow_dirty=True)
    return b


def _independent(folders):
    """Each seed's weighted and plain mean test AUROC, from its predictions file, with scikit-learn."""
    from sklearn.metrics import roc_auc_score

    out = []
    for f in folders:
        pred = Predictions.read(f / "predictions.csv.gz")
        y, p = np.asarray(pred.labels), np.asarray(pred.probabilities)
        ok = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
        a = np.array([roc_auc_score(y[:, c], p[:, c]) for c in ok])
        out.append((float(np.average(a, weights=y[:, ok].sum(0))), float(a.mean())))
    return np.array(out)


def test_submit_files_the_seeds_as_one_entry(board, swept):
    import json

    from click.testing import CliRunner

    from cxrbench.cli import cli
    from cxrbench.results import render
    from cxrbench.results.leaderboard import load, rank

    paths, _ = swept
    (g,) = rank(load(board))
    (e,) = g.entries
    assert e.n_seeds == 3 and [m.seed for m in e.members] == [0, 1, 2]
    want = _independent([p.parent for p in paths])
    (f,) = render.entry_fields(g)
    assert f["n_seeds"] == 3 and f["seeds"] == [0, 1, 2] and f["seed"] is None
    assert f["weighted_auroc"] == pytest.approx(want[:, 0].mean(), abs=1e-6)
    assert f["weighted_auroc_sd"] == pytest.approx(want[:, 0].std(ddof=1), abs=1e-6)
    assert f["plain_auroc"] == pytest.approx(want[:, 1].mean(), abs=1e-6)
    assert f["plain_auroc_sd"] == pytest.approx(want[:, 1].std(ddof=1), abs=1e-6)
    assert f["weighted_auroc_per_seed"] == pytest.approx(list(want[:, 0]), abs=1e-6)
    assert render.title(g).endswith("1 entry (3 records)")

    def show(*args):
        r = CliRunner().invoke(cli, ["leaderboard", "--leaderboard", str(board), *args], env={"COLUMNS": "80"})
        assert r.exit_code == 0, r.output
        return r.stdout

    data = json.loads(show("--format", "json"))
    (je,) = data["groups"][0]["entries"]
    assert je["weighted_auroc_per_seed"] == f["weighted_auroc_per_seed"] and je["n_seeds"] == 3
    assert all(isinstance(x, float) for x in je["weighted_auroc_per_seed"])
    assert [r["seed"] for r in je["replicates"]] == [0, 1, 2]
    assert data["groups"][0]["comparison"]["method"] == "two-level-t@v1"
    csv_text = show("--format", "csv")
    import csv
    import io

    (row,) = list(csv.DictReader(io.StringIO(csv_text)))
    assert row["n_seeds"] == "3" and row["seeds"] == "0;1;2"
    assert [float(x) for x in row["weighted_auroc_per_seed"].split(";")] == f["weighted_auroc_per_seed"]
    table = show("--seeds")
    assert "±" in table and "each seed" in table
    compact = show()
    assert all(len(line) <= 80 for line in compact.splitlines()), compact  # the compact board: 80 columns
    assert f"{f['weighted_auroc']:.4f} ±{f['weighted_auroc_sd']:.4f}" in compact  # mean ± seed sd
    assert any(line.split()[:4] == ["1", "tiny", "0.1", "3"] for line in compact.splitlines())  # n seeds


def test_replicates_are_compared_with_the_two_level_test(board):
    """Copies of the filed entries as other recipes (in memory, not filed): two seeds and one seed."""
    import copy

    from cxrbench.metrics.replicates import Replicate, compare_replicates, score_replicates
    from cxrbench.protocols import get_protocol
    from cxrbench.results import render
    from cxrbench.results.leaderboard import load, rank

    entries = load(board)
    by_seed = {e.seed: e for e in entries}

    def as_recipe(e, model):
        c = copy.copy(e)
        c.record = {**e.record, "model": {**e.record["model"], "name": model}}
        c.id = f"{model}-{e.seed}"
        return c

    two = [as_recipe(by_seed[s], "tiny_b") for s in (0, 1)]
    one = as_recipe(by_seed[2], "tiny_c")
    (g,) = rank([*entries, *two, one])
    assert sorted(e.n_seeds for e in g.entries) == [1, 2, 3]
    assert g.method == "two-level-t@v1"
    p = get_protocol("smoke")

    def scored(es):
        reps = [
            Replicate(e.seed, e.test.images, e.test.patients, e.test.labels, e.test.probabilities, "s", "d") for e in es
        ]
        return score_replicates(reps, p.bootstrap, p.seed)

    best = g.entries[0]
    for e in g.entries[1:]:
        c = g.comparisons[e.id]
        want = compare_replicates(scored(e.members), scored(best.members)).to_dict()
        assert c == want
        assert c["method"] == ("patient-bootstrap@v1" if e.n_seeds == 1 or best.n_seeds == 1 else "two-level-t@v1")
    rows = render.rows(g)
    single = next(r for r, e in zip(rows, g.entries) if e.n_seeds == 1)
    distinct, _ = render.notes(g)
    said = [distinct[int(k.strip("[]")) - 1] for k in single["notes"].split()]
    assert any("one training seed" in n for n in said)


# ------------------------------------------------------------------------------------ reproduce paper --seeds


def test_contrast_of_replicates_generalises_the_pairwise_test():
    from cxrbench.metrics.replicates import compare_replicates, contrast_replicates, score_replicates
    from cxrbench.metrics.seedsim import SimSettings, simulate_pair

    rng = np.random.default_rng(5)
    a, b = simulate_pair(SimSettings(patients=150, effect=0.3), 3, 3, rng)
    sa, sb = score_replicates(a, 100, 0), score_replicates(b, 100, 0)
    pair = compare_replicates(sa, sb)
    c = contrast_replicates([sa, sb], [1.0, -1.0])
    assert c.method == pair.method == "two-level-t@v1"
    assert c.diff == pytest.approx(pair.diff) and c.se == pytest.approx(pair.se) and c.df == pytest.approx(pair.df)
    assert c.ci95 == pytest.approx(pair.ci95) and c.p_value == pytest.approx(pair.p_value)
    # one group against a fixed value: the mean over seeds less the offset; a single seed falls back
    one = contrast_replicates([sa], [1.0], offset=0.5)
    assert one.diff == pytest.approx(sa.mean() - 0.5) and one.method == "two-level-t@v1"
    single = contrast_replicates([score_replicates(a[:1], 100, 0), sb], [1.0, -1.0])
    assert single.method == "patient-bootstrap@v1"
    with pytest.raises(Exception, match="coefficient"):
        contrast_replicates([sa, sb], [1.0])


def test_reproduce_print_lists_every_seed(synth_cache):
    from cxrbench.studies.paper import MINI, needed

    r = _cli("reproduce", "paper", "--cache", str(synth_cache), "--mini", "--seeds", "2", "--print")
    lines = r.output.strip().splitlines()
    assert r.exit_code == 0 and len(lines) == 2 * len(needed(MINI))
    assert sorted({ln.split("--seed ")[1].split()[0] for ln in lines}) == ["0", "1"]


@pytest.mark.long
def test_miniature_study_with_three_seeds(synth1000_cache, tmp_path):
    import json

    out = tmp_path / "study"
    r = _cli("reproduce", "paper", "--cache", str(synth1000_cache), "--out", str(out), "--mini", "--seeds", "3")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["arms"]) == 9 and all(a["seeds"] == [0, 1, 2] for a in rep["arms"].values())
    for a in rep["arms"].values():  # the seed sd of each arm, from its records
        w = np.array(a["weighted_per_seed"], dtype=float)
        assert a["sd"] == pytest.approx(w.std(ddof=1), abs=1e-6)
    claims = {c["key"]: c for c in rep["claims"]}
    assert all(c["single_seed_verdict"] is not None and isinstance(c["verdict_changed"], bool) for c in claims.values())
    tests = [t for c in claims.values() for _, t in c["tests"]]
    assert tests and all(t["method"] == "two-level-t@v1" and t["seeds"] == [3, 3] for t in tests)
    singles = [t for c in claims.values() for _, t in c["single_seed_tests"]]
    assert singles and all("method" not in t for t in singles)  # today's patient bootstrap, one seed each
    md = (out / "report.md").read_text()
    assert "seed sd" in md and "Single-seed test (first seed of each arm)" in md and "two-level-t@v1" in md
