"""Packing runs onto GPUs: K processes at a time on each visible GPU, each with its own log.

A job is one command (for cxrbench, `python -m cxrbench run ... --resume`). `pack` starts pending jobs as
subprocesses, at most K at a time per device, on the least-loaded device (ties go to the first, so a fresh
start is round-robin); each child sees only its GPU (CUDA_VISIBLE_DEVICES) and writes stdout and stderr to
LOGS/<job>.log. A job whose `done` file exists is reused, not started. A failing job never stops the others;
Ctrl-C (or SIGTERM) stops every child - SIGINT to its process group, then SIGTERM, then SIGKILL - before
`pack` raises KeyboardInterrupt, so no child outlives it; a stopped `cxrbench run` resumes from its last
checkpoint.

The default K comes from measurements (see `default_parallel`): free memory per GPU against a per-run
estimate, capped at the packing level measured to pay; 1 on a CPU, where one run already uses every core.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from cxrbench.errors import ConfigError

# Issue 15, one NVIDIA H200: four identical densenet121 runs at once took 235 s for all four, 2.08x the
# throughput of one at a time. More than four at once has not been measured to pay, so the default stops there
# (benchmarks/study.py measures other levels with --parallel).
PACK_CAP = 4
# GPU memory of one paper-protocol run besides its resident images (batch 32, bf16 autocast): the saved
# activations of the largest paper model's training step, measured on the CPU under bf16 autocast with
# torch.autograd.graph.saved_tensors_hooks (densenet121 1.98 GiB, densenet121_attA 2.06 GiB, resnet50
# 1.35 GiB), doubled for the caching allocator, cuDNN workspaces and the batch-256 scoring passes, plus
# 1 GiB of CUDA context. benchmarks/study.py records the peak per run on a GPU to check it.
RUN_WORKING_BYTES = 2 * 2 * 2**30 + 2**30
GIB = 2**30


@dataclass(frozen=True)
class Job:
    """One command to run: `name` names its log and the run in messages (a run id)."""

    name: str
    argv: tuple[str, ...]
    done: Path | None = None  # a file whose existence means the job finished before: reused, never started


@dataclass
class Outcome:
    """What became of a job."""

    job: Job
    status: str = "not started"  # then "running"; at the end "reused", "finished", "failed", "stopped" or this
    returncode: int | None = None
    device: str | None = None  # the GPU it ran on (CUDA_VISIBLE_DEVICES), None on the CPU
    pid: int | None = None  # its process
    log: Path | None = None
    started: float | None = None  # seconds after `pack` began
    ended: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.started is None or self.ended is None else self.ended - self.started

    def tail(self, lines: int = 20) -> str:
        """The last lines the job's latest attempt wrote to its log."""
        if self.log is None or not self.log.exists():
            return ""
        with open(self.log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            text = fh.read().decode("utf-8", "replace")
        text = text.rsplit(_HEADER, 1)[-1].split("\n", 1)[-1]  # the latest attempt only
        return "\n".join(text.rstrip().splitlines()[-lines:])


_HEADER = "=== cxrbench packing: "


# ------------------------------------------------------------------------------------------------ devices


def parse_visible(value: str) -> list[str]:
    """The device entries of a CUDA_VISIBLE_DEVICES value (indices or UUIDs); CUDA ignores everything from
    the first invalid entry on (e.g. -1), and so does this."""
    out = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        out.append(entry)
    return out


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries for its children."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = parse_visible(value) if value is not None else [str(i) for i in range(n)]
    return entries[:n]


def device_plan(device: str, gpus: Sequence[str] | None = None) -> tuple[list[str | None], str]:
    """(the devices to spread runs over, the --device each child gets) for a `--device` value, among `gpus`
    (default: the visible ones); a child sees only its own GPU, so it runs on `cuda`."""
    if device == "cpu":
        return [None], "cpu"
    if gpus is None:
        gpus = visible_gpus()
    if device == "auto":
        return (list(gpus), "cuda") if gpus else ([None], "cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not gpus:
            raise ConfigError("--device cuda was asked for, but no CUDA device is available here")
        if device == "cuda":
            return list(gpus), "cuda"
        index = device.partition(":")[2]
        if not index.isdigit() or int(index) >= len(gpus):
            raise ConfigError(
                f"--device {device}: this machine shows {len(gpus)} GPU(s) (cuda:0 to cuda:{len(gpus) - 1})"
            )
        return [gpus[int(index)]], "cuda"
    raise ConfigError(f"unknown --device {device!r} (auto, cpu, cuda or cuda:N)")


def pick_device(load: Sequence[int], per_device: int) -> int | None:
    """Index of the least-loaded device with a free slot (ties: the first), or None when all are full."""
    best = min(range(len(load)), key=lambda i: load[i])
    return best if load[best] < per_device else None


# ------------------------------------------------------------------------------------------------ default K


def run_bytes(n_images: int, size: int) -> int:
    """GPU memory of one run: its resident uint8 images (at most the whole cache) and RUN_WORKING_BYTES."""
    return n_images * size * size + RUN_WORKING_BYTES


def parallel_for(free_bytes: Sequence[int], per_run: int, cap: int = PACK_CAP, headroom: float = 0.9) -> int:
    """Runs at once per GPU: as many as fit in `headroom` of the fullest GPU's free memory, at most `cap`,
    at least 1; 1 on a CPU (no GPUs)."""
    if not free_bytes:
        return 1
    return max(1, min(cap, int(headroom * min(free_bytes)) // per_run))


def parse_nvidia_smi(text: str) -> dict[str, int]:
    """Bytes by GPU index and by UUID, from `nvidia-smi --query-gpu=index,uuid,memory.free
    --format=csv,noheader,nounits` (MiB; or memory.used)."""
    free = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        free[parts[0]] = free[parts[1]] = int(parts[2]) * 2**20
    return free


def gpu_free_bytes(gpus: Sequence[str]) -> list[int]:
    """Free memory of each GPU, from nvidia-smi (no CUDA context in this process), else from torch."""
    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        free = parse_nvidia_smi(r.stdout) if r.returncode == 0 else {}
        if all(g in free for g in gpus):
            return [free[g] for g in gpus]
    except (OSError, subprocess.TimeoutExpired):
        pass
    import torch

    return [torch.cuda.mem_get_info(i)[0] for i in range(len(gpus))]


def default_parallel(gpus: Sequence[str], n_images: int, size: int) -> tuple[int, str]:
    """(K, why): the default runs at once per GPU for runs on a cache of `n_images` images of `size` px."""
    if not gpus:
        return 1, "a CPU run already uses every core"
    free = gpu_free_bytes(gpus)
    per_run = run_bytes(n_images, size)
    k = parallel_for(free, per_run)
    return k, (
        f"{min(free) / GIB:.1f} GiB free on the fullest GPU, about {per_run / GIB:.1f} GiB per run; at most "
        f"{PACK_CAP}, the most measured to pay"
    )


# ------------------------------------------------------------------------------------------------ scheduler


@dataclass
class _Child:
    job: Job
    slot: int
    proc: subprocess.Popen
    outcome: Outcome


def pack(
    jobs: Sequence[Job],
    *,
    parallel: int,
    devices: Sequence[str | None],
    logs: Path,
    display=None,
    env: dict[str, str] | None = None,
    stop_at: float | None = None,
    on_start: Callable[[Job, int, str | None], None] | None = None,
    grace: float = 20.0,
    poll: float = 0.2,
) -> list[Outcome]:
    """Run `jobs`, at most `parallel` at a time on each of `devices` (GPU entries, or [None] for the CPU);
    returns an outcome per job, in order. With a time limit, `stop_at` seconds: once a job has finished, no
    job starts that would not end in time at the pace of the slowest finished one (the rest stay `not
    started`), and at `stop_at` the running jobs are stopped (`stopped`) and `pack` returns. On Ctrl-C or
    SIGTERM it stops them the same way and raises KeyboardInterrupt. `on_start(job, pid, device)` is told
    of every launch."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"two jobs would write the same run folder: {', '.join(dup)}")
    if parallel < 1 or not devices:
        raise ConfigError("packing needs at least one device and one run per device")
    logs = Path(logs)
    logs.mkdir(parents=True, exist_ok=True)
    outcomes = [Outcome(j, log=logs / f"{j.name}.log") for j in jobs]
    pending: deque[Outcome] = deque()
    for o in outcomes:
        if o.job.done is not None and o.job.done.exists():
            o.status = "reused"
            _say(display, f"{o.job.name} is finished already")
        else:
            pending.append(o)
    load = [0] * len(devices)
    running: list[_Child] = []
    t0 = time.monotonic()
    base_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    bar_ctx = display.progress("runs", total=len(jobs), unit="runs") if display is not None else nullcontext()
    with bar_ctx as bar, _Signals() as signals:
        if bar is not None:
            bar.advance(len(jobs) - len(pending))
        try:
            while pending or running:
                if signals.count:
                    raise KeyboardInterrupt
                now = time.monotonic() - t0
                if stop_at is not None and now >= stop_at:
                    if running:
                        _say(display, f"time is up: stopping {len(running)} running run(s)")
                    _stop(running, grace, t0, signals)
                    running.clear()
                    break
                while pending and (slot := pick_device(load, parallel)) is not None:
                    if not _in_time(outcomes, now, stop_at):
                        _say(display, f"not starting {len(pending)} run(s): the time left would not finish them")
                        pending.clear()
                        break
                    child = _start(pending.popleft(), slot, devices[slot], base_env, t0)
                    load[slot] += 1
                    running.append(child)
                    where = "the CPU" if devices[slot] is None else f"GPU {devices[slot]}"
                    _say(display, f"started {child.job.name} on {where} (log {child.outcome.log})")
                    if on_start is not None:
                        on_start(child.job, child.proc.pid, devices[slot])
                for child in [c for c in running if c.proc.poll() is not None]:
                    running.remove(child)
                    load[child.slot] -= 1
                    o = child.outcome
                    o.ended, o.returncode = time.monotonic() - t0, child.proc.returncode
                    o.status = "finished" if o.returncode == 0 else "failed"
                    if o.status == "finished":
                        _say(display, f"finished {o.job.name} in {_clock(o.seconds)}")
                    else:
                        _say(
                            display,
                            f"{o.job.name} failed (exit code {o.returncode}) after {_clock(o.seconds)}; "
                            "the others go on",
                        )
                    if bar is not None:
                        bar.advance(1)
                if bar is not None:
                    bar.update(status=_status(outcomes, running))
                if pending or running:
                    time.sleep(poll)
        except BaseException as e:
            if running:
                stopped = [c.job.name for c in running]
                _stop(running, grace, t0, signals)
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
                _say(
                    display,
                    f"{why}: stopped {len(stopped)} running run(s) ({', '.join(stopped)}); finished "
                    "runs are kept, and running the same command again resumes the rest",
                )
            raise
    return outcomes


def _in_time(outcomes: list[Outcome], now: float, stop_at: float | None) -> bool:
    """Whether a job started now would end by `stop_at`, judged by the slowest finished job (if any)."""
    took = [o.seconds for o in outcomes if o.status == "finished" and o.seconds is not None]
    return stop_at is None or not took or now + max(took) <= stop_at


def _start(o: Outcome, slot: int, device: str | None, base_env: dict[str, str], t0: float) -> _Child:
    env = dict(base_env)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    o.log.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    with open(o.log, "ab") as fh:  # type: ignore[arg-type]
        where = "cpu" if device is None else f"CUDA_VISIBLE_DEVICES={device}"
        command = shlex.join(o.job.argv).replace("\n", "\\n")  # the header stays one line
        fh.write(f"\n{_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')} {where}: {command}\n".encode())
        fh.flush()
        # a session of its own: a terminal's Ctrl-C reaches the scheduler alone, which stops each child's group
        proc = subprocess.Popen(
            list(o.job.argv),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    o.status, o.device, o.pid, o.started = "running", device, proc.pid, time.monotonic() - t0
    return _Child(o.job, slot, proc, o)


def _stop(children: list[_Child], grace: float, t0: float, signals: _Signals) -> None:
    """SIGINT to every child's process group, SIGTERM after `grace` s, SIGKILL 5 s later; waits for all.
    Another Ctrl-C while waiting skips to SIGKILL."""
    patience = signals.count + 1
    try:
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0)):
            alive = [c for c in children if c.proc.poll() is None]
            for c in alive:
                _signal_group(c.proc, sig)
            end = time.monotonic() + wait
            while any(c.proc.poll() is None for c in alive) and time.monotonic() < end and signals.count < patience:
                time.sleep(0.05)
    finally:
        for c in children:
            if c.proc.poll() is None:
                _signal_group(c.proc, signal.SIGKILL)
            c.proc.wait()
            o = c.outcome
            if o.status == "running":
                o.status, o.returncode, o.ended = "stopped", c.proc.returncode, time.monotonic() - t0


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Signals:
    """Counts SIGINT and SIGTERM while packing (main thread only) instead of raising at once, so that the
    scheduler acts on them where no child can be lost between its start and its bookkeeping."""

    def __init__(self) -> None:
        self.count = 0
        self.old: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._count)
        return self

    def _count(self, signum, frame) -> None:
        self.count += 1

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _status(outcomes: list[Outcome], running: list[_Child]) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("finished", "reused", "failed")}
    parts = [f"{len(running)} running", f"{counts['finished']} done"]
    parts += [f"{counts[s]} {s}" for s in ("reused", "failed") if counts[s]]
    return ", ".join(parts)


def _clock(seconds: float | None) -> str:
    s = int(round(seconds or 0))
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s} s"


def _say(display, message: str) -> None:
    if display is not None:
        display.info(message)
