"""The paper's study, measured whole runs at a time on a paper-size input, and projected.

Lays out the full ChestX-ray14 folder (benchmarks/paper_size.py: all 112,120 metadata rows and the official
lists, every image hard-linked from a few PNGs), builds its cache with `--subset paper` (only the 24,674
images of the paper subset are decoded), then runs a chosen subset of the study's runs
(cxrbench.studies.paper.needed(PAPER)) as `cxrbench run` subprocesses through the packing scheduler, on one
device, in two phases:

1. alone: the first chosen run by itself, the one-at-a-time baseline (at most --alone-seconds);
2. packed: every chosen run, --parallel at a time.

Per run it reports the training images/s over the whole run (the record's timing), the wall time and the
wall/train ratio (when the run finished within the budget), and the per-epoch training images/s (from the
run's log, also for runs that the budget stopped); for the packed phase, the aggregate training images/s and
its ratio to the run alone. It then projects the wall time of the study's runs (13 for the paper) on one GPU
with packing and on 8 GPUs, saying which figures were measured and which projected. Protocols are frozen:
to save time it runs fewer runs, never shorter ones (no protocol allows an epoch override).

    python benchmarks/study.py --work /tmp/study --models densenet121 --parallel 4 --alone-seconds 75 \
        --budget-seconds 420                                            # one GPU, about 7 minutes
    python benchmarks/study.py --work /tmp/study-smoke --cpu-smoke      # tiny models, mini protocols, CPU

--work keeps the layout and the cache between invocations; the runs start afresh each time.
Writes benchmarks/results/study-<machine>.json (study-cpu-smoke-<machine>.json with --cpu-smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._common import write_result  # noqa: E402
from benchmarks.paper_size import lay_out  # noqa: E402

SMOKE_ROWS = 300  # metadata rows of the CPU smoke's folder: enough for every mini protocol's splits
MARGIN_S = 20.0  # of the budget, kept for stopping the runs and writing the results
EIGHT = 8
EPOCH_LINE = re.compile(
    r"^(?P<fold>\S+) epoch (?P<epoch>\d+)/(?P<of>\d+): train(?:ing)? loss \S+, (?P<rate>[\d,.]+) images/s", re.MULTILINE
)


# ------------------------------------------------------------------------------------------------ measuring


def epoch_rates(log: str) -> list[float]:
    """Training images/s of every epoch a `cxrbench run` log reports."""
    return [float(m["rate"].replace(",", "")) for m in EPOCH_LINE.finditer(log)]


def training_images(cache: Path, protocol: str) -> int:
    """Images a run of `protocol` trains on in all (every fold and the final run, every epoch), from the
    cache's own tables: the same splits a run makes."""
    from cxrbench.cache.store import open_cache
    from cxrbench.data.dataset import open_dataset, splits_for
    from cxrbench.protocols import get_protocol

    p = get_protocol(protocol)
    ds = open_dataset(open_cache(cache).tables_dir())
    s = splits_for(ds.metadata, ds.layout, p)
    per_epoch = sum(len(f.train) for f in s.folds) + (len(s.trainval) if p.final_run else 0)
    return p.epochs * per_epoch


def parse_compute_apps(text: str) -> dict[int, int]:
    """MiB of GPU memory by process id, from `nvidia-smi --query-compute-apps=pid,used_memory
    --format=csv,noheader,nounits`."""
    out = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out


class GpuMemory:
    """GPU memory sampled from nvidia-smi once a second while runs go: the peak of each run's process (where
    nvidia-smi sees this container's process ids) and the peak used on the GPU in all, per phase."""

    def __init__(self, gpu: str) -> None:
        self.gpu = gpu
        self.peak_by_pid: dict[int, int] = {}
        self.used_peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def take_used_peak(self) -> int:
        """The GPU's peak used MiB since the last call."""
        peak, self.used_peak_mib = self.used_peak_mib, 0
        return peak

    def _loop(self) -> None:
        from cxrbench.orchestrate.packing import parse_nvidia_smi

        while not self._stop.wait(1.0):
            try:
                apps = _smi("--query-compute-apps=pid,used_memory")
                used = parse_nvidia_smi(_smi("--query-gpu=index,uuid,memory.used")).get(self.gpu)
            except (OSError, subprocess.TimeoutExpired):
                return
            for pid, mib in parse_compute_apps(apps).items():
                self.peak_by_pid[pid] = max(mib, self.peak_by_pid.get(pid, 0))
            if used is not None:
                self.used_peak_mib = max(self.used_peak_mib, used // 2**20)


def _smi(query: str) -> str:
    return subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
    ).stdout


def run_figures(o, folder: Path, model: str, protocol: str, peak_mib: int | None) -> dict:
    """What one run measured: from its log always, from its record when it finished."""
    rates = epoch_rates(o.log.read_text(errors="replace")) if o.log is not None and o.log.exists() else []
    fig = {
        "model": model,
        "protocol": protocol,
        "status": o.status,
        "device": o.device,
        "process_seconds": None if o.seconds is None else round(o.seconds, 2),
        "epochs_logged": len(rates),
        "per_epoch_images_per_s": round(statistics.median(rates), 1) if rates else None,
        "gpu_peak_mib": peak_mib,
    }
    rec_path = folder / "record.json"
    if o.status == "finished" and rec_path.exists():
        t = json.loads(rec_path.read_text())["timing"]
        train = t["train_seconds"]
        fig.update(
            train_images=t["train_images"],
            train_seconds=train,
            record_wall_seconds=t["wall_seconds"],
            whole_run_images_per_s=t["train_images_per_s"],
            wall_over_train=round(o.seconds / train, 3) if train else None,
            record_wall_over_train=round(t["wall_seconds"] / train, 3) if train else None,
        )
    return fig


# ------------------------------------------------------------------------------------------------ projecting


def interpolated(points: dict[int, float]) -> Callable[[int], float]:
    """Aggregate training images/s of c runs at once on one GPU: linear between the measured levels; below
    the lowest measured level, its per-run rate (conservative); never asked above the highest."""
    levels = sorted(points)

    def aggregate(c: int) -> float:
        if c <= levels[0]:
            return points[levels[0]] / levels[0] * c
        for a, b in zip(levels, levels[1:]):
            if c <= b:
                return points[a] + (points[b] - points[a]) * (c - a) / (b - a)
        return points[levels[-1]]

    return aggregate


def makespan(work: list[float], gpus: int, per_gpu: int, aggregate: Callable[[int], float]) -> float:
    """Seconds until every run ends: runs of `work` images each (in order), `per_gpu` at a time on each of
    `gpus` GPUs placed as cxrbench.orchestrate.packing places them (least-loaded first), the c runs on a GPU each at
    aggregate(c)/c images/s."""
    from cxrbench.orchestrate.packing import pick_device

    pending, on = deque(work), [[] for _ in range(gpus)]
    t = 0.0
    while pending or any(on):
        while pending and (g := pick_device([len(r) for r in on], per_gpu)) is not None:
            on[g].append(pending.popleft())
        rate = [aggregate(len(r)) / len(r) if r else 0.0 for r in on]
        dt = min(left / rate[g] for g, r in enumerate(on) for left in r)
        t += dt
        on = [
            [left - rate[g] * dt for left in r if left - rate[g] * dt > 1e-6 * max(1.0, left)] for g, r in enumerate(on)
        ]
    return t


def project(
    study_runs: list[tuple[str, str]],
    images: dict[str, int],
    speeds: dict[str, float],
    points: dict[int, float],
    per_gpu: int,
    wall_over_train: float | None,
) -> dict:
    """The study's wall time on one GPU with packing and on 8, from measured rates (see `makespan`)."""
    slowest = min(speeds.values())
    factor = wall_over_train or 1.0
    work = [images[p] / speeds.get(m, slowest) * factor for m, p in study_runs]
    aggregate = interpolated(points)
    key = "wall_seconds" if wall_over_train else "training_seconds"
    out = {}
    for name, gpus in (("one_gpu", 1), ("eight_gpus", EIGHT)):
        s = makespan(work, gpus, per_gpu, aggregate)
        out[name] = {"gpus": gpus, "runs_at_once_per_gpu": per_gpu, key: round(s, 1), "minutes": round(s / 60, 2)}
    return out


# ------------------------------------------------------------------------------------------------ phases


def phase(
    runs: list,
    root: Path,
    devices: list,
    child_device: str,
    parallel: int,
    stop_at: float | None,
    display,
    memory: GpuMemory | None,
    env: dict[str, str],
) -> dict:
    """Run `runs` (RunOptions) in ROOT/runs with logs in ROOT/logs through the packing scheduler. The
    aggregate per-epoch rate is the mean run's per-epoch rate times the runs at once."""
    from dataclasses import replace

    from cxrbench.orchestrate.packing import pack
    from cxrbench.orchestrate.sweep import jobs, run_dir

    shutil.rmtree(root, ignore_errors=True)
    runs = [replace(o, out=str(root / "runs")) for o in runs]
    if memory is not None:
        memory.take_used_peak()  # this phase's peak only
    outcomes = pack(
        jobs(runs, child_device),
        parallel=parallel,
        devices=devices,
        logs=root / "logs",
        display=display,
        env=env,
        stop_at=stop_at,
    )
    peaks = {} if memory is None else memory.peak_by_pid
    figs = [run_figures(o, run_dir(r), r.model, r.protocol, peaks.get(o.pid)) for o, r in zip(outcomes, runs)]
    ran = [o for o in outcomes if o.started is not None]
    wall = max(o.ended for o in ran) - min(o.started for o in ran) if ran else None
    rates = [f["per_epoch_images_per_s"] for f in figs if f["per_epoch_images_per_s"]]
    at_once = min(parallel * len(devices), len(ran))
    finished = [f for f in figs if f["status"] == "finished"]
    whole = (
        round(sum(f["train_images"] for f in finished) / wall, 1)
        if ran and len(finished) == len(ran) and wall
        else None
    )
    return {
        "runs": {o.job.name: f for o, f in zip(outcomes, figs)},
        "runs_at_once": at_once,
        "phase_seconds": None if wall is None else round(wall, 2),
        "aggregate_per_epoch_images_per_s": round(statistics.mean(rates) * at_once, 1) if rates else None,
        "aggregate_whole_run_images_per_s": whole,
        "gpu_used_peak_mib": None if memory is None else memory.take_used_peak(),
    }


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def prepare(work: Path, rows: int | None, sources: Path | None, display) -> tuple[dict, dict, Path]:
    """The dataset folder (kept between invocations: a marker says it is complete) and the cache of its
    paper subset; returns what each took and the cache."""
    from cxrbench.cache.build import build_cache

    data, marker = work / "nih", work / "nih.complete"
    if marker.exists() and json.loads(marker.read_text()).get("rows") == rows:
        layout = {**json.loads(marker.read_text()), "reused": True}
    else:
        shutil.rmtree(data, ignore_errors=True)
        layout = {**lay_out(data, sorted(sources.glob("*.png")) if sources else None, rows), "rows": rows}
        marker.write_text(json.dumps(layout))
    display.info(f"layout: {layout['images']:,} images from {layout['sources']} PNGs in {layout['seconds']} s")
    cache = work / "cache"
    built = build_cache(data, cache, subset="paper", display=display)
    display.info(f"cache: {built.n_images:,} images ({built.decoded:,} decoded now in {built.seconds:.1f} s)")
    return (
        layout,
        {
            "images": built.n_images,
            "decoded_now": built.decoded,
            "seconds": round(built.seconds, 2),
            "images_per_s": round(built.images_per_s, 1),
            "up_to_date": built.up_to_date,
        },
        cache,
    )


def summarize(study, cache: Path, alone: dict | None, packed: dict, k: int) -> tuple[dict, dict | None]:
    """The packing ratios measured, and the projection of the whole study from the measured rates."""
    from cxrbench.studies.paper import needed

    first = None if alone is None else next(iter(alone["runs"].values()))
    alone_rate = first and first["per_epoch_images_per_s"]
    aggregate = packed["aggregate_per_epoch_images_per_s"]
    points = {1: alone_rate} if alone_rate else {}
    if aggregate:
        points[packed["runs_at_once"]] = aggregate
    ratios = {
        "packed_over_alone_per_epoch": round(aggregate / alone_rate, 3) if alone_rate and aggregate else None,
        "packed_over_alone_whole_run": None,
    }
    if first and first.get("train_images") and packed["aggregate_whole_run_images_per_s"]:
        alone_whole = first["train_images"] / first["process_seconds"]
        ratios["packed_over_alone_whole_run"] = round(packed["aggregate_whole_run_images_per_s"] / alone_whole, 3)
    wall_ratio = _median([f.get("wall_over_train") for f in packed["runs"].values()])
    if wall_ratio is None and first:
        wall_ratio = first.get("wall_over_train")
    per_model: dict[str, list[float]] = {}
    for f in packed["runs"].values():
        if f["per_epoch_images_per_s"]:
            per_model.setdefault(f["model"], []).append(f["per_epoch_images_per_s"])
    if not (points and per_model):
        return ratios, None
    study_runs = [(s.model, s.protocol) for s in needed(study)]
    images = {p: training_images(cache, p) for p in sorted({p for _, p in study_runs})}
    reference = statistics.mean(r for rs in per_model.values() for r in rs)
    speeds = {m: round(statistics.mean(rs) / reference, 3) for m, rs in per_model.items()}
    return ratios, {
        "study_runs": len(study_runs),
        "training_images": sum(images[p] for _, p in study_runs),
        "training_images_per_run": images,
        **project(study_runs, images, speeds, points, k, wall_ratio),
        "inputs": {
            "aggregate_images_per_s_by_runs_at_once": points,
            "model_speed_relative": speeds,
            "wall_over_train": wall_ratio,
        },
        "assumptions": [
            "per-epoch training rates measured here (alone: 1 run at once; packed: the mean run's rate x runs at "
            "once); between measured levels the aggregate is interpolated linearly",
            "models not run here train at the slowest measured model's relative speed",
            "wall time = training time x the median wall/train ratio of the finished runs"
            if wall_ratio
            else "no run finished within the budget: training time only, a lower bound of the wall time",
            f"{EIGHT} GPUs: each like this one, runs placed least-loaded first as cxrbench.orchestrate.packing does",
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    """Lay out, build, measure alone and packed, project, write the result; returns it."""
    args = _arguments(argv)
    t_begin = time.monotonic()
    deadline = None if args.budget_seconds is None else t_begin + args.budget_seconds

    from cxrbench.cache.store import open_cache
    from cxrbench.console import get_display
    from cxrbench.orchestrate.packing import default_parallel, device_plan
    from cxrbench.studies.paper import MINI, PAPER, run_options

    d = get_display()
    study = MINI if args.cpu_smoke else PAPER
    device = "cpu" if args.cpu_smoke else args.device
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    layout, cache_fig, cache = prepare(work, SMOKE_ROWS if args.cpu_smoke else None, args.sources, d)

    models = None if args.models is None else {m.strip() for m in args.models.split(",") if m.strip()}
    pretrained = None if args.cpu_smoke else args.pretrained  # mini protocols train from scratch anyway
    chosen = run_options(study, str(cache), work, device, models, pretrained)
    chosen = chosen[: args.runs or (2 if args.cpu_smoke else None)]
    if not chosen:
        raise SystemExit("no run chosen: --models names none of the study's models")
    devices, child_device = device_plan(device)
    devices = devices[:1]  # rates are measured on one device; more GPUs are projected
    store = open_cache(cache)
    k = args.parallel or (
        2 if args.cpu_smoke else default_parallel([g for g in devices if g is not None], store.n_images, store.size)[0]
    )
    memory = GpuMemory(devices[0]) if devices != [None] and shutil.which("nvidia-smi") else None
    # the smoke's runs get one thread each, alone and packed alike: on a busy CPU, runs that each spin every
    # core's OpenMP threads slow down 30-fold (measured: 16 against 466 training images/s)
    env = {"OMP_NUM_THREADS": "1"} if args.cpu_smoke else {}
    # the runs import this checkout's cxrbench wherever the script is started from
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

    def left() -> float | None:
        return None if deadline is None else deadline - time.monotonic() - MARGIN_S

    with memory or _Nothing():
        alone = None
        if args.alone_seconds > 0:
            stop = args.alone_seconds if left() is None else max(0.0, min(args.alone_seconds, 0.35 * left()))
            d.info(f"alone: {chosen[0].model} under {chosen[0].protocol} by itself for at most {stop:.0f} s")
            alone = phase(chosen[:1], work / "alone", devices, child_device, 1, stop, d, memory, env)
        d.info(f"packed: {len(chosen)} run(s), {k} at a time")
        packed = phase(chosen, work / "packed", devices, child_device, k, left(), d, memory, env)

    ratios, projection = summarize(study, cache, alone, packed, k)
    result = {
        "mode": "cpu-smoke" if args.cpu_smoke else "full",
        "study": study.name,
        "device": child_device,
        "gpu": devices[0],
        "parallel": k,
        "budget_seconds": args.budget_seconds,
        "pretrained": bool(pretrained),
        "threads_per_run": env.get("OMP_NUM_THREADS", "all"),
        "seconds": round(time.monotonic() - t_begin, 1),
        "measured": {"layout": layout, "cache": cache_fig, "alone": alone, "packed": packed, "ratios": ratios},
        "projected": projection,
    }
    path = write_result("study-cpu-smoke" if args.cpu_smoke else "study", result, args.results)
    _print(result)
    print(f"wrote {path}")
    return {**result, "path": str(path)}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder for the layout, the cache, runs and logs")
    ap.add_argument("--sources", type=Path, default=None, help="folder of source PNGs (default: real originals)")
    ap.add_argument("--models", default=None, help="comma-separated: only the study's runs of these models")
    ap.add_argument("--runs", type=int, default=None, help="only the first N of the chosen runs")
    ap.add_argument("--parallel", type=int, default=None, help="runs at once (default: cxrbench's default K)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (one device is measured)")
    ap.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="all of it, layout and cache included: no run starts that would not end in time, and "
        "the runs still going at the end are stopped and reported from their logs",
    )
    ap.add_argument(
        "--alone-seconds",
        type=float,
        default=90.0,
        help="at most this long for the first run alone, the baseline (0: no baseline)",
    )
    ap.add_argument(
        "--pretrained",
        action="store_true",
        help="start from ImageNet weights (they must be on the machine); by default runs train "
        "from scratch, as fast, recorded as a deviation in each record",
    )
    ap.add_argument(
        "--cpu-smoke",
        action="store_true",
        help=f"tiny models, mini protocols, {SMOKE_ROWS} metadata rows, on the CPU (CI)",
    )
    ap.add_argument("--results", type=Path, default=None, help="results folder (default: benchmarks/results)")
    return ap.parse_args(argv)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _print(r: dict) -> None:
    m = r["measured"]
    print(f"measured on {r['device']} ({r['study']} study, {r['parallel']} at once):")
    for phase_name in ("alone", "packed"):
        ph = m[phase_name]
        if ph is None:
            continue
        for name, f in ph["runs"].items():
            whole = f.get("whole_run_images_per_s")
            print(
                f"  {phase_name:6s} {name}: {f['status']}, per epoch {f['per_epoch_images_per_s']} images/s, "
                f"whole run {whole if whole is not None else '-'} images/s, wall {f['process_seconds']} s, "
                f"wall/train {f.get('wall_over_train', '-')}"
            )
    p = m["packed"]
    print(
        f"  packed aggregate: {p['aggregate_per_epoch_images_per_s']} images/s per epoch, "
        f"{p['aggregate_whole_run_images_per_s']} images/s over whole runs; ratios {m['ratios']}"
    )
    pr = r["projected"]
    if pr is None:
        print("projected: nothing (no epoch was measured)")
        return
    for key in ("one_gpu", "eight_gpus"):
        x = pr[key]
        what = "wall" if "wall_seconds" in x else "training (lower bound of the wall time)"
        print(
            f"projected: the {pr['study_runs']} runs on {x['gpus']} GPU(s), {x['runs_at_once_per_gpu']} at once "
            f"each: {x['minutes']} min of {what}"
        )


if __name__ == "__main__":
    main()
