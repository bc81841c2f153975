"""benchmarks/study.py: the CPU smoke end to end (layout, cache, runs alone and packed, figures, projection),
its time budget, and the pieces it measures and projects with."""

import json
import os
import time

import pytest

from benchmarks.study import (
    GpuMemory,
    epoch_rates,
    interpolated,
    main,
    makespan,
    parse_compute_apps,
    project,
    training_images,
)
from cxrbench.results.record import read_record

from .conftest import slow_fixture


@pytest.fixture(scope="module")
@slow_fixture
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    return tmp, main(["--work", str(tmp / "work"), "--cpu-smoke", "--results", str(tmp / "results")])


def test_cpu_smoke_measures_whole_runs_and_projects_the_mini_study(smoke):
    tmp, r = smoke
    saved = json.loads((tmp / "results" / r["path"].rsplit("/", 1)[1]).read_text())
    assert saved["benchmark"] == "study-cpu-smoke" and saved["machine"]["cores"] and "commit" in saved
    m = saved["measured"]
    assert m["layout"]["images"] == 300 and m["cache"]["images"] == m["cache"]["decoded_now"] > 100
    alone = next(iter(m["alone"]["runs"].values()))
    packed = m["packed"]["runs"]
    assert list(packed) == ["tiny__mini-paper-15c@v1__lr0.1__seed0", "tiny_res__mini-paper-15c@v1__lr0.1__seed0"]
    for f in [alone, *packed.values()]:
        assert f["status"] == "finished" and f["epochs_logged"] == 20  # 10 epochs of fold 0 and of the final run
        assert f["whole_run_images_per_s"] > 0 and f["per_epoch_images_per_s"] > 0
        assert f["process_seconds"] >= f["record_wall_seconds"] >= f["train_seconds"] > 0
        assert f["wall_over_train"] == pytest.approx(f["process_seconds"] / f["train_seconds"], abs=0.01)
        assert f["wall_over_train"] > 1
    # the training images the projection counts are the ones a run trains on
    run = tmp / "work" / "packed" / "runs" / "tiny__mini-paper-15c@v1__lr0.1__seed0"
    assert read_record(run)["timing"]["train_images"] == training_images(tmp / "work" / "cache", "mini-paper-15c")
    p = m["packed"]
    assert p["runs_at_once"] == 2 and p["aggregate_per_epoch_images_per_s"] > 0
    assert p["aggregate_whole_run_images_per_s"] > 0 and m["ratios"]["packed_over_alone_per_epoch"] > 0
    pr = saved["projected"]
    assert pr["study_runs"] == 9 and pr["training_images"] == 9 * pr["training_images_per_run"]["mini-paper-15c"]
    assert 0 < pr["eight_gpus"]["wall_seconds"] <= pr["one_gpu"]["wall_seconds"]
    assert set(pr["inputs"]["aggregate_images_per_s_by_runs_at_once"]) == {"1", "2"}
    assert any("wall/train ratio" in a for a in pr["assumptions"])
    assert saved["threads_per_run"] == "1" and saved["pretrained"] is False


def test_a_budget_spent_on_the_layout_starts_no_run(smoke, tmp_path):
    tmp, _ = smoke
    r = main(["--work", str(tmp / "work"), "--cpu-smoke", "--results", str(tmp_path), "--budget-seconds", "1"])
    assert r["measured"]["layout"]["reused"] and r["measured"]["cache"]["up_to_date"]
    statuses = [f["status"] for ph in ("alone", "packed") for f in r["measured"][ph]["runs"].values()]
    assert statuses == ["not started"] * 3 and r["projected"] is None


def test_makespan_places_runs_least_loaded_first_at_measured_rates():
    agg = interpolated({1: 100.0, 4: 250.0})
    assert agg(1) == 100 and agg(4) == 250 and agg(2) == 150 and agg(3) == 200
    assert interpolated({2: 80.0})(1) == 40  # below the lowest level: its per-run rate
    work = [1000.0] * 13
    # one GPU, 4 at once: three waves of 4 at 62.5 images/s each, then one run alone at 100
    assert makespan(work, 1, 4, agg) == pytest.approx(3 * 1000 / 62.5 + 1000 / 100)
    # 8 GPUs: five hold two runs (75 images/s each), three hold one
    assert makespan(work, 8, 4, agg) == pytest.approx(1000 / 75)
    out = project([("a", "p")] * 13, {"p": 1000}, {"a": 1.0}, {1: 100.0, 4: 250.0}, 4, 1.5)
    assert out["one_gpu"]["wall_seconds"] == round(1.5 * (3 * 1000 / 62.5 + 1000 / 100), 1)
    slow = project([("a", "p"), ("b", "p")], {"p": 1000}, {"a": 1.0, "c": 0.5}, {1: 100.0}, 1, None)
    assert slow["one_gpu"]["training_seconds"] == 1000 / 100 + 2000 / 100  # b was not measured: the slowest speed


def test_what_is_read_from_logs_and_nvidia_smi():
    log = (
        "loading 138 images\n"
        "fold0 epoch 1/10: train loss 0.7001, 1,234 images/s, val AUROC 0.5 (weighted) 0.5 (plain)\n"
        "fold0 epoch 2/10: train loss 0.5, 1,650 images/s\nfinal epoch 1/10: training loss 0.4000, 987 images/s, "
        "1.2 s\n"
    )  # today's wording (training loss ..., seconds) and the earlier one
    assert epoch_rates(log) == [1234.0, 1650.0, 987.0]
    assert parse_compute_apps("4242, 6144\n77, 512\n[N/A], 1\n") == {4242: 6144, 77: 512}


def test_gpu_memory_peaks_per_process_and_per_gpu(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"  # a GPU whose use grows from 40,000 to 50,000 MiB, this process at 6,144
    smi.write_text(f"""#!/bin/sh
case "$1" in
  --query-compute-apps=*) echo '{os.getpid()}, 6144'; echo '1, 99' ;;
  *) n=$(cat {tmp_path}/calls 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/calls
     if [ "$n" -ge 1 ]; then echo '0, GPU-aa11, 50000'; else echo '0, GPU-aa11, 40000'; fi ;;
esac
""")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuMemory("0") as mem:
        end = time.monotonic() + 30
        calls = tmp_path / "calls"
        while time.monotonic() < end and int(calls.read_text() if calls.exists() else 0) < 2:
            time.sleep(0.2)
        time.sleep(0.2)
    assert mem.peak_by_pid[os.getpid()] == 6144 and mem.take_used_peak() == 50000 and mem.take_used_peak() == 0
