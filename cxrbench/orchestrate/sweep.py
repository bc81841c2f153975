"""`cxrbench sweep`: every run of a protocol's grid (models x learning rates), one after another in this
process, K at a time per GPU as `cxrbench run` subprocesses (cxrbench.orchestrate.packing), or as commands for a
cluster's job array. `run_many` is the one way many runs are run (sweep and `reproduce paper`)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

from cxrbench.errors import TrainingError
from cxrbench.run.options import run_dir


def plan(protocol: str, models: list[str]) -> list[tuple[str, float]]:
    """(model, lr) for every run of the grid, in a fixed order."""
    from cxrbench.protocols import get_protocol

    p = get_protocol(protocol)
    return [(m, lr) for m in dict.fromkeys(models) for lr in p.lrs]


def run_args(opts) -> list[str]:
    """The `cxrbench run` arguments of a run (RunOptions); with --resume it finishes a stopped run."""
    args = ["run", "--model", opts.model, "--protocol", opts.protocol]
    if opts.lr is not None:
        args += ["--lr", f"{opts.lr:g}"]
    if opts.seed is not None:
        args += ["--seed", str(opts.seed)]
    args += ["--cache", opts.cache, "--out", opts.out, "--device", opts.device, "--resume"]
    for pl in opts.plugins:
        args += ["--plugin", pl]
    if opts.pretrained is not None:
        args.append("--pretrained" if opts.pretrained else "--no-pretrained")
    if opts.weights is not None:  # what `run --seeds` passes on to each replicate (a sweep sets none of these)
        args += ["--weights", opts.weights]
    if opts.loader != "auto":
        args += ["--loader", opts.loader]
    if opts.compile:
        args.append("--compile")
    if opts.cuda_graphs is not None:
        args.append("--cuda-graphs" if opts.cuda_graphs else "--no-cuda-graphs")
    if opts.deterministic:
        args.append("--deterministic")
    if opts.tensorboard is not None:
        args += ["--tensorboard", opts.tensorboard]
    return args


def run_command(opts) -> str:
    """One `cxrbench run` command line for a run, quoted for a shell."""
    return shlex.join(["cxrbench", *run_args(opts)])


def grid(opts, models: list[str], seeds: tuple[int, ...] | None = None) -> list:
    """The RunOptions of every run of `opts.protocol`'s grid for `models`, once per training seed in `seeds`
    (None: `opts.seed`, else the protocol's), the seeds of one (model, lr) next to each other."""
    return [
        replace(opts, model=model, lr=lr, seed=seed)
        for model, lr in plan(opts.protocol, models)
        for seed in (seeds if seeds is not None else (opts.seed,))
    ]


def replicates(opts, seeds: tuple[int, ...]) -> list:
    """The RunOptions of one run per training seed (`run --seeds`)."""
    return [replace(opts, seed=seed) for seed in seeds]


def jobs(runs: list, child_device: str) -> list:
    """A packing job per run: `python -m cxrbench run ... --resume` on `child_device`, reused when finished."""
    from cxrbench.orchestrate.packing import Job

    return [
        Job(
            run_dir(o).name,
            (sys.executable, "-m", "cxrbench", *run_args(replace(o, device=child_device))),
            run_dir(o) / "record.json",
        )
        for o in runs
    ]


def run_many(runs: list, parallel: int | None, logs: Path, display=None) -> list[Path]:
    """Run (or reuse, or resume) every run (RunOptions sharing a cache and a device); returns their records.

    One slot in all (K=1 on one device) runs them one after another in this process, as always; more run
    K at a time on each visible GPU as subprocesses, each logging to LOGS/<run id>.log. `parallel` None
    takes the default of cxrbench.orchestrate.packing.default_parallel. A failed packed run does not stop the others:
    when all are done, each failure is shown with its exit code and the tail of its log, and TrainingError
    names them."""
    from cxrbench.orchestrate.packing import default_parallel, device_plan, pack
    from cxrbench.run import run_or_reuse

    if not runs:
        return []
    runs = list({run_dir(o): o for o in runs}.values())  # one process per run folder
    _check(runs)  # every name, plugin and lr before anything trains; finished runs only if made as asked
    devices, child_device = device_plan(runs[0].device)
    if parallel is None and devices == [None]:
        parallel = 1  # a CPU run already uses every core
    elif parallel is None:
        from cxrbench.cache.store import open_cache

        store = open_cache(runs[0].cache)
        parallel, why = default_parallel(devices, store.n_images, store.size)  # type: ignore[arg-type]
        if display is not None:
            display.info(f"packing {parallel} run(s) at once per GPU ({why}); --parallel K to choose")
    if parallel * len(devices) == 1:
        out: list[Path] = []
        for i, o in enumerate(runs):
            if display is not None:
                seed = "" if o.seed is None else f", seed {o.seed}"
                display.info(f"[run {i + 1}/{len(runs)}] {o.model} under {o.protocol}, lr {_lr(o):g}{seed}")
            run_or_reuse(o, display)
            out.append(run_dir(o) / "record.json")  # as the packed runs below (run_or_reuse's own answer)
        return out
    outcomes = pack(jobs(runs, child_device), parallel=parallel, devices=devices, logs=logs, display=display)
    failed = [o for o in outcomes if o.status != "finished" and o.status != "reused"]
    for o in failed:
        if display is not None:
            display.warn(f"{o.job.name} failed with exit code {o.returncode}; the end of {o.log}:\n{o.tail()}")
    if failed:
        names = ", ".join(o.job.name for o in failed)
        others = "" if len(failed) == len(runs) else "; the others finished"
        raise TrainingError(
            f"{len(failed)} of {len(runs)} runs failed ({names}){others}. Logs: {logs}; running the "
            "command again resumes them"
        )
    return [run_dir(o) / "record.json" for o in runs]


def _lr(opts) -> float:
    from cxrbench.protocols import get_protocol

    return get_protocol(opts.protocol).lr(opts.lr)


def _check(runs: list) -> None:
    """What every child would check first (plugins, model names, learning rates), checked once here for every
    run before any trains; and a finished run is reused only when it was made with the settings asked."""
    from cxrbench.models import get_spec
    from cxrbench.models.plugins import load_plugins
    from cxrbench.run.pipeline import check_finished

    for o in runs:
        load_plugins(o.plugins)
        get_spec(o.model)
        _lr(o)
    for o in runs:
        if (run_dir(o) / "record.json").exists():
            check_finished(o)


def sweep(
    opts, models: list[str], parallel: int | None = 1, display=None, seeds: tuple[int, ...] | None = None
) -> list[Path]:
    """Run the grid (once per training seed in `seeds`): finished runs are reused and unfinished ones resumed
    (see `run_many`)."""
    return run_many(grid(opts, models, seeds), parallel, Path(opts.out) / "logs", display)
