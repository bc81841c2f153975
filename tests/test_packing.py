"""Packing runs onto devices (cxrbench.orchestrate.packing): device assignment, logs, failures, time limits, Ctrl-C and
the default K, with short fake jobs; `cxrbench sweep --parallel` and `reproduce paper --parallel` with tiny
models under `smoke` on the phantom cache."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cxrbench.cli import cli
from cxrbench.errors import ConfigError
from cxrbench.orchestrate.packing import (
    RUN_WORKING_BYTES,
    Job,
    default_parallel,
    device_plan,
    pack,
    parallel_for,
    parse_nvidia_smi,
    parse_visible,
    pick_device,
    run_bytes,
)
from cxrbench.results.record import read_record

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


def _py(code: str, name: str, done: Path | None = None) -> Job:
    return Job(name, (sys.executable, "-c", textwrap.dedent(code)), done)


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return out


# ------------------------------------------------------------------------------------------------ devices


def test_least_loaded_device_with_a_free_slot():
    assert pick_device([0, 0, 0], 2) == 0  # ties: the first
    assert pick_device([1, 0, 0], 2) == 1 and pick_device([1, 1, 0], 2) == 2  # a fresh start is round-robin
    assert pick_device([2, 1, 2], 2) == 1  # a finished run frees its GPU's slot
    assert pick_device([2, 2, 2], 2) is None


def test_visible_devices_and_the_device_each_child_gets():
    assert parse_visible("0,1,2") == ["0", "1", "2"]
    assert parse_visible("GPU-aa11, GPU-bb22") == ["GPU-aa11", "GPU-bb22"]
    assert parse_visible("") == [] and parse_visible("2,-1,3") == ["2"]  # CUDA stops at the first invalid entry
    assert device_plan("auto", ["4", "7"]) == (["4", "7"], "cuda")
    assert device_plan("auto", []) == ([None], "cpu")
    assert device_plan("cpu", ["0"]) == ([None], "cpu")
    assert device_plan("cuda:1", ["4", "7"]) == (["7"], "cuda")  # cuda:N counts the visible GPUs
    with pytest.raises(ConfigError, match="no CUDA device"):
        device_plan("cuda", [])
    with pytest.raises(ConfigError, match="shows 2 GPU"):
        device_plan("cuda:2", ["4", "7"])
    with pytest.raises(ConfigError, match="unknown --device"):
        device_plan("tpu", [])


def test_default_parallel_from_free_memory():
    per_run = run_bytes(24_674, 256)  # a --subset paper cache resident, plus the model's working memory
    assert per_run == 24_674 * 65_536 + RUN_WORKING_BYTES
    assert parallel_for([139 * GIB], per_run) == 4  # an H200: memory allows more, 4 is the most measured to pay
    assert parallel_for([139 * GIB, 20 * GIB], per_run) == 2  # the fullest GPU decides
    assert parallel_for([4 * GIB], per_run) == 1  # at least one
    assert parallel_for([], per_run) == 1  # a CPU
    assert default_parallel([], 24_674, 256)[0] == 1
    smi = "0, GPU-aa11, 143000\n1, GPU-bb22, 1024\n"
    assert parse_nvidia_smi(smi) == {"0": 143000 * 2**20, "GPU-aa11": 143000 * 2**20, "1": GIB, "GPU-bb22": GIB}


def test_default_k_on_gpus_from_nvidia_smi_and_children_on_cuda(synth_cache, tmp_path, monkeypatch):
    from cxrbench.orchestrate.packing import Outcome
    from cxrbench.orchestrate.sweep import sweep
    from cxrbench.run import RunOptions

    smi = tmp_path / "bin" / "nvidia-smi"  # two GPUs, one of them with 12,000 MiB free
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '0, GPU-aa11, 143000'\necho '1, GPU-bb22, 12000'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("cxrbench.orchestrate.packing.visible_gpus", lambda: ["0", "1"])
    seen = {}

    def fake_pack(jobs, **kw):
        seen.update(jobs=jobs, **kw)
        return [Outcome(j, "finished", 0) for j in jobs]

    monkeypatch.setattr("cxrbench.orchestrate.packing.pack", fake_pack)
    opts = RunOptions(model="tiny", protocol="smoke", cache=str(synth_cache), out=str(tmp_path / "runs"))
    sweep(opts, ["tiny", "tiny_attn", "tiny"], None)
    # 48 images resident and RUN_WORKING_BYTES: two runs fit in 90% of 12,000 MiB
    assert seen["parallel"] == 2 and seen["devices"] == ["0", "1"] and len(seen["jobs"]) == 2
    assert all(j.argv[j.argv.index("--device") + 1] == "cuda" for j in seen["jobs"])


@pytest.mark.slow
def test_runs_spread_over_fake_gpus_at_most_k_each(tmp_path):
    jobs = [
        _py(
            """
        import os, time
        print("device", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        time.sleep(1.0)
    """,
            f"run{i}",
        )
        for i in range(7)
    ]
    started = []
    out = pack(
        jobs,
        parallel=2,
        devices=["0", "1", "2"],
        logs=tmp_path / "logs",
        on_start=lambda job, pid, dev: started.append((job.name, dev)),
    )
    assert [o.status for o in out] == ["finished"] * 7
    assert [d for _, d in started[:6]] == ["0", "1", "2", "0", "1", "2"]
    for o in out:  # each child saw only its own GPU
        assert o.tail().splitlines()[-1] == f"device {o.device}"
    for dev in "012":  # never more than two at once on one GPU
        spans = [(o.started, o.ended) for o in out if o.device == dev]
        for t, _ in spans:
            assert sum(a <= t < b for a, b in spans) <= 2
    seventh = out[6]
    assert seventh.started >= min(o.ended for o in out[:6])  # it waited for a free slot


def test_finished_jobs_are_reused_and_names_must_differ(tmp_path):
    done = tmp_path / "record.json"
    done.write_text("{}")
    out = pack(
        [_py("raise SystemExit(3)", "old", done), _py("print('hi')", "new", tmp_path / "nothing")],
        parallel=1,
        devices=[None],
        logs=tmp_path / "logs",
    )
    assert [o.status for o in out] == ["reused", "finished"] and not (tmp_path / "logs" / "old.log").exists()
    with pytest.raises(ConfigError, match="same run folder: a"):
        pack([_py("", "a"), _py("", "a")], parallel=2, devices=[None], logs=tmp_path / "logs")


def test_a_failure_does_not_stop_the_others_and_keeps_its_log(tmp_path):
    jobs = [
        _py("import sys; print('loading'); sys.exit('boom: the model raised')", "bad"),
        _py("import time; time.sleep(1); print('fine')", "good1"),
        _py("print('fine')", "good2"),
    ]
    out = pack(jobs, parallel=1, devices=[None], logs=tmp_path / "logs")
    assert [(o.status, o.returncode) for o in out] == [("failed", 1), ("finished", 0), ("finished", 0)]
    assert out[0].tail().splitlines() == ["loading", "boom: the model raised"]
    # a second attempt appends to the log; the tail shows the latest attempt only
    again = pack(jobs[:1], parallel=1, devices=[None], logs=tmp_path / "logs")
    assert again[0].tail().splitlines() == ["loading", "boom: the model raised"]
    log = (tmp_path / "logs" / "bad.log").read_text()
    assert log.count("=== cxrbench packing: ") == 2 and log.count("\nloading\n") == 2


class _JobClock:
    """pack's clock, driven by what the jobs do rather than by the machine's speed: it stands at 0 s until `pack`
    has reaped the job it watches, reads 4 s at that moment (the job took 4 s) and moves on half a second per
    reading after that (to the time limit and through the grace period)."""

    def __init__(self) -> None:
        self.now, self.pid = 0.0, None

    def watch(self, job, pid, device) -> None:
        if job.name == "short":
            self.pid = pid

    def __call__(self) -> float:
        if self.now == 0.0 and self.pid is not None and not Path(f"/proc/{self.pid}").exists():
            self.now = 4.0  # reaped: its end is read now
        elif self.now:
            self.now += 0.5
        return self.now


def test_a_time_limit_stops_runs_and_launches_none_that_would_not_end_in_time(tmp_path, monkeypatch):
    import types

    from cxrbench.orchestrate import packing

    jobs = [
        _py("import time; time.sleep(60)", "long"),
        _py("print('short')", "short"),
        *(_py("print('x')", f"later{i}") for i in range(2)),
    ]
    clock = _JobClock()
    monkeypatch.setattr(
        packing, "time", types.SimpleNamespace(monotonic=clock, sleep=time.sleep, strftime=time.strftime)
    )
    out = pack(jobs, parallel=2, devices=[None], logs=tmp_path / "logs", stop_at=6.0, grace=5.0, on_start=clock.watch)
    # short took 4 s: a run as slow would not end by 6 s, so none started after it; long was stopped at 6 s
    assert [o.status for o in out] == ["stopped", "finished", "not started", "not started"]
    assert out[1].seconds == 4.0 and out[0].returncode != 0 and out[0].ended >= 6.0
    monkeypatch.undo()
    quick = pack(jobs[1:], parallel=1, devices=[None], logs=tmp_path / "logs2", stop_at=600)
    assert [o.status for o in quick] == ["finished"] * 3  # with time enough, all of them


DRIVER = """
import sys, textwrap
from pathlib import Path
from cxrbench.orchestrate.packing import Job, pack

tmp = Path(sys.argv[1])
spawner = textwrap.dedent('''
    import subprocess, sys, time
    from pathlib import Path
    g = subprocess.Popen(["sleep", "120"])
    Path(sys.argv[1]).write_text(str(g.pid))
    time.sleep(120)
''')
stubborn = textwrap.dedent('''
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGINT and SIGTERM", flush=True)
    time.sleep(120)
''')
jobs = [Job("spawner", (sys.executable, "-c", spawner, str(tmp / "grandchild"))),
        Job("stubborn", (sys.executable, "-c", stubborn)), Job("queued", (sys.executable, "-c", "pass"))]
with open(tmp / "pids", "w") as fh:
    pack(jobs, parallel=2, devices=[None], logs=tmp / "logs", grace=float(sys.argv[2]),
         on_start=lambda job, pid, dev: (fh.write(f"{pid}\\n"), fh.flush()))
"""


@pytest.mark.parametrize("presses", [1, 2])
@pytest.mark.slow
def test_ctrl_c_stops_every_child_and_grandchild(tmp_path, presses):
    """One Ctrl-C: SIGINT, then SIGTERM and SIGKILL after a 1 s grace; a second Ctrl-C skips an hour's grace (were
    it not skipped, the test would stop at its 90 s limit: no pass mark on a duration)."""
    (tmp_path / "driver.py").write_text(DRIVER)
    grace = "1" if presses == 1 else "3600"
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path), grace], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    end = time.monotonic() + 60
    while time.monotonic() < end and not (
        (tmp_path / "grandchild").exists() and "ignoring" in _read(tmp_path / "logs" / "stubborn.log")
    ):
        time.sleep(0.1)
    pids = [int(x) for x in (tmp_path / "pids").read_text().split()] + [int((tmp_path / "grandchild").read_text())]
    assert len(pids) == 3 and all(_alive(p) for p in pids)
    parent.send_signal(signal.SIGINT)
    if presses == 2:  # the second press once the stop has begun: the spawner got its SIGINT and said so
        end = time.monotonic() + 60
        while time.monotonic() < end and "KeyboardInterrupt" not in _read(tmp_path / "logs" / "spawner.log"):
            time.sleep(0.05)
        parent.send_signal(signal.SIGINT)
    err = parent.communicate(timeout=90)[1]
    assert parent.returncode != 0 and "KeyboardInterrupt" in err
    end = time.monotonic() + 30  # the grandchild is reaped by init, not by us: wait for it to go
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert [p for p in pids if _alive(p)] == []  # the child that ignored SIGINT and SIGTERM was killed too
    assert not (tmp_path / "logs" / "queued.log").exists()  # nothing started after Ctrl-C


def _read(p: Path) -> str:
    return p.read_text() if p.exists() else ""


# ------------------------------------------------------------------------------------------------ real runs


BOOM = """
from torch import nn
from cxrbench.models import register_model


class Boom(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(3, n)

    def forward(self, x):
        raise RuntimeError("boom: this plugin model always fails (simulated)")


@register_model(cam_layer="fc", input_size=64)
def boom(num_classes=15, pretrained=False):
    return Boom(num_classes)
"""


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cxrbench", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.fixture(scope="module")
def packed_sweep(synth_cache, tmp_path_factory):
    """`cxrbench sweep --parallel 2` over tiny, tiny_attn and a plugin model that raises, on the CPU."""
    tmp = tmp_path_factory.mktemp("packed")
    (tmp / "boom.py").write_text(BOOM)
    r = _cli(
        "sweep",
        "--protocol",
        "smoke",
        "--models",
        "tiny,boom,tiny_attn",
        "--cache",
        str(synth_cache),
        "--out",
        str(tmp / "runs"),
        "--device",
        "cpu",
        "--parallel",
        "2",
        "--plugin",
        str(tmp / "boom.py"),
    )
    return tmp / "runs", r


@pytest.mark.long
def test_k2_records_equal_k1_records(packed_sweep, synth_cache, tmp_path):
    runs, r = packed_sweep
    seq = CliRunner().invoke(
        cli,
        [
            "sweep",
            "--protocol",
            "smoke",
            "--models",
            "tiny,tiny_attn",
            "--cache",
            str(synth_cache),
            "--out",
            str(tmp_path / "seq"),
            "--device",
            "cpu",
        ],
    )
    assert seq.exit_code == 0, seq.output
    assert not (tmp_path / "seq" / "logs").exists()  # K=1 on one device runs in this process, as before
    for name in ("tiny__smoke@v1__lr0.1__seed0", "tiny_attn__smoke@v1__lr0.1__seed0"):
        a, b = read_record(tmp_path / "seq" / name), read_record(runs / name)
        assert a["predictions"]["sha256"] == b["predictions"]["sha256"]
        assert a["test"]["weighted_mean"] == b["test"]["weighted_mean"]
        assert a["test"]["per_class"] == b["test"]["per_class"]
        assert "record:" in (runs / "logs" / f"{name}.log").read_text()  # each run's output in its own log


def test_a_failing_run_is_named_with_its_exit_code_and_log_while_the_others_finish(packed_sweep):
    runs, r = packed_sweep
    assert r.returncode == 2
    assert "boom__smoke@v1__lr0.1__seed0 failed with exit code 2" in r.stderr  # a ModelError in the child
    tail = r.stderr.split("boom__smoke@v1__lr0.1__seed0.log:", 1)[1]  # the end of its log, on the warning's line
    assert "error: model 'boom'" in tail and "this plugin model always fails (simulated)" in tail
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 3 runs failed (boom__smoke@v1__lr0.1__seed0)") and "runs/logs" in last
    assert (runs / "tiny__smoke@v1__lr0.1__seed0" / "record.json").exists()
    assert (runs / "tiny_attn__smoke@v1__lr0.1__seed0" / "record.json").exists()
    assert "3 done" not in r.stderr and "2 done, 1 failed" in r.stderr  # one progress display for the runs


@pytest.mark.long
def test_ctrl_c_on_a_packed_sweep_leaves_no_run_alive_and_rerunning_resumes(synth_cache, tmp_path):
    args = [
        sys.executable,
        "-m",
        "cxrbench",
        "sweep",
        "--protocol",
        "smoke",
        "--models",
        "tiny,tiny_attn",
        "--cache",
        str(synth_cache),
        "--out",
        str(tmp_path / "runs"),
        "--device",
        "cpu",
        "--parallel",
        "2",
    ]
    parent = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / "runs" / "logs" / f"{m}__smoke@v1__lr0.1__seed0.log" for m in ("tiny", "tiny_attn")]
    end = time.monotonic() + 300
    while time.monotonic() < end and not all("epoch 2/20" in _read(p) for p in logs):
        time.sleep(0.2)
    children = _children(parent.pid)
    assert len(children) == 2 and all(_alive(p) for p in children)
    parent.send_signal(signal.SIGINT)
    err = parent.communicate(timeout=120)[1]
    assert parent.returncode == 130, err
    assert "interrupted: stopped 2 running run(s)" in err and "running the same command again resumes" in err
    time.sleep(0.5)
    assert [p for p in children if _alive(p)] == []
    assert not list((tmp_path / "runs").rglob("record.json"))
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    for m in ("tiny", "tiny_attn"):
        rec = read_record(tmp_path / "runs" / f"{m}__smoke@v1__lr0.1__seed0")
        assert rec["timing"]["train_images"] > 0
    assert all(p.read_text().count("=== cxrbench packing: ") == 2 for p in logs)  # one log per run, both attempts


def test_reproduce_paper_packs_its_runs_with_logs_in_out(synth_cache, tmp_path, monkeypatch):
    import cxrbench.orchestrate.sweep as sweep
    from cxrbench.studies.paper import MINI, run_all

    seen = {}

    def fake_pack(jobs, **kw):
        from cxrbench.orchestrate.packing import Outcome

        seen.update(jobs=jobs, **kw)
        return [Outcome(j, "finished", 0) for j in jobs]

    monkeypatch.setattr("cxrbench.orchestrate.packing.pack", fake_pack)
    runs = run_all(MINI, str(synth_cache), tmp_path, "cpu", {"tiny"}, None, None, parallel=3)
    assert len(runs) == 4 and seen["parallel"] == 3 and seen["devices"] == [None]
    assert seen["logs"] == tmp_path / "logs"
    for job, (spec, folder) in zip(seen["jobs"], runs.items()):
        assert job.name == folder.name and job.done == folder / "record.json"
        assert job.argv[:4] == (sys.executable, "-m", "cxrbench", "run") and job.argv[-1] == "--resume"
        assert f"--protocol {spec.protocol} --lr {spec.lr:g}" in " ".join(job.argv)
        assert folder.parent == tmp_path / "runs"
    assert sweep.run_many([], 2, tmp_path) == []
