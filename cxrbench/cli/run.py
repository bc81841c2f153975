"""`cxrbench run`: train and score a model under a protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cxrbench.cli._options import (
    cache_option,
    check_names,
    parallel_option,
    plugin_option,
    require,
    seeds_option,
    tensorboard_option,
)


@click.command()
@click.option("--model", required=True, help="Registered model name (see `cxrbench models`).")
@click.option("--protocol", default="paper-15c", show_default=True, help="Protocol id (see `cxrbench protocols`).")
@cache_option("Cache built by `cxrbench cache build`.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@plugin_option
@click.option(
    "--out",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for run folders.",
)
@click.option("--lr", type=float, default=None, help="Learning rate (required for a grid protocol).")
@click.option("--run-id", default=None, help="Name of the run folder (default: model__protocol__lr__seed).")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=None,
    help="Training seed: initialisation, batch order, augmentation, every fold's seed (default: the protocol's). "
    "Split, subset and bootstrap seeds stay the protocol's.",
)
@seeds_option
@parallel_option
@click.option(
    "--print", "print_only", is_flag=True, help="With --seeds: print one `cxrbench run` command per seed instead."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in its folder.")
@tensorboard_option
@click.option(
    "--pretrained/--no-pretrained",
    default=None,
    help="Use ImageNet weights (default: what the protocol says); --no-pretrained is recorded.",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="ImageNet weights file to use instead of torchvision's cache.",
)
@click.option(
    "--loader",
    type=click.Choice(["auto", "resident", "stream"]),
    default="auto",
    show_default=True,
    help="Keep images on the device, or stream chunks from the cache.",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch.compile the model (its compile time is recorded apart from training).",
)
@click.option(
    "--cuda-graphs/--no-cuda-graphs",
    default=None,
    help="Replay full-batch training steps as captured CUDA graphs (GPU; default: on, off with --deterministic).",
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Deterministic algorithms, no cuDNN autotuning: bitwise reproducible on a GPU, at a cost "
    "(recorded as environment.deterministic).",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=None,
    help="Processes for DistributedDataParallel (re-executes itself under torchrun).",
)
def run(
    model: str,
    protocol: str,
    cache: str | None,
    device: str,
    plugins: tuple[str, ...],
    out: str,
    lr: float | None,
    run_id: str | None,
    seed: int | None,
    seeds: tuple[int, ...] | None,
    parallel: int | None,
    print_only: bool,
    resume: bool,
    tensorboard: str | None,
    pretrained: bool | None,
    weights: str | None,
    loader: str,
    compile_: bool,
    cuda_graphs: bool | None,
    deterministic: bool,
    nproc: int | None,
) -> None:
    """Train and score MODEL under PROTOCOL on a cache; writes RUN/record.json and RUN/predictions.csv.gz.

    The run goes bind -> load -> fit folds -> score -> explain -> record and prints where its time went. Ctrl-C
    says where it stopped; --resume continues from the last checkpoint (or finishes the record when every
    model is trained).

    \b
    Example:
      cxrbench run --model densenet121_attA --protocol paper-15c --cache cache/
      cxrbench run --plugin examples/my_model.py --model mynet --protocol smoke --cache cache/
      cxrbench run --model tiny --protocol smoke --cache cache/ --seed 1 --tensorboard tb/
      cxrbench run --model densenet121 --protocol paper-15c --cache cache/ --seeds 5 --parallel 2

    --seeds runs one replicate per training seed like `sweep` does (finished ones reused, stopped ones
    resumed, packed K at a time per GPU with --parallel K, or printed one command per line with --print).
    """
    from cxrbench.console import get_display
    from cxrbench.errors import ConfigError
    from cxrbench.names import safe_name
    from cxrbench.run import RunOptions

    check_names([model], (protocol,), plugins)  # a typo is named before a missing --cache
    cache = require(cache, "--cache")
    if run_id is not None:  # the rule `submit` applies, checked before anything is written
        safe_name(run_id, "--run-id", "run", ConfigError)
    if seeds is not None:
        clash = [n for n, v in (("--seed", seed), ("--run-id", run_id), ("--nproc", nproc)) if v is not None]
        if clash:
            raise click.UsageError(f"--seeds runs one folder per seed, named by default: drop {clash[0]}")
    elif parallel is not None or print_only:
        raise click.UsageError(f"{'--parallel' if parallel is not None else '--print'} is for the runs of --seeds")
    opts = RunOptions(
        model=model,
        protocol=protocol,
        cache=cache,
        device=device,
        out=out,
        lr=lr,
        plugins=plugins,
        resume=resume,
        run_id=run_id,
        pretrained=pretrained,
        weights=weights,
        loader=loader,
        compile=compile_,
        cuda_graphs=cuda_graphs,
        deterministic=deterministic,
        seed=seed,
        tensorboard=tensorboard,
    )
    if tensorboard is not None:  # in one line, before anything starts
        from cxrbench.results.events import require_tensorboard

        require_tensorboard()
    if seeds is not None:
        _many(opts, seeds, parallel, print_only)
        return
    if nproc is not None and nproc > 1:
        from cxrbench.engine.distributed import exec_torchrun

        exec_torchrun(nproc)
        return
    from cxrbench.run import run as run_stages
    from cxrbench.run.progress import RunInterrupted

    d = get_display()
    try:
        path = run_stages(opts, d)
    except RunInterrupted as e:
        d.error(e.message)
        sys.exit(130)
    except KeyboardInterrupt:
        d.error("interrupted before training started: nothing to keep; run the command again")
        sys.exit(130)
    if path is not None:
        import json

        rec = json.loads(path.read_text())
        t = rec["test"]
        w, pl = t["weighted_mean"], t["plain_mean"]
        d.info(
            f"{_f(w['auroc'])} weighted test AUROC (95% CI {_f(w['ci95'][0])} to {_f(w['ci95'][1])}), "
            f"{_f(pl['auroc'])} plain; {rec['timing']['train_images_per_s']:,.0f} training images/s"
        )
        d.info(f"record: {path}")


def _many(opts, seeds: tuple[int, ...], parallel: int | None, print_only: bool) -> None:
    """`--seeds`: one run per training seed, scheduled as a sweep's runs are; `--print`: their commands."""
    from cxrbench.console import get_display
    from cxrbench.orchestrate.sweep import replicates, run_command, run_many

    runs = replicates(opts, seeds)
    if print_only:
        for o in runs:
            click.echo(run_command(o))
        return
    d = get_display()
    for path in run_many(runs, parallel, Path(opts.out) / "logs", d):
        d.info(f"record: {path}")


def _f(x) -> str:
    return "undefined" if x is None else f"{x:.4f}"
