"""`cxrbench sweep`: a protocol's grid of runs."""

from __future__ import annotations

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
@click.option("--protocol", default="paper-lr-grid", show_default=True, help="Protocol whose lr grid to sweep.")
@click.option("--models", required=True, help="Comma-separated model names.")
@cache_option()
@click.option(
    "--out",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for run folders (and OUT/logs when runs are packed).",
)
@click.option("--device", default="auto", show_default=True)
@plugin_option
@click.option("--no-pretrained", is_flag=True, help="Train without ImageNet weights (recorded).")
@seeds_option
@parallel_option
@click.option("--print", "print_only", is_flag=True, help="Print one `cxrbench run` command per run instead.")
@tensorboard_option
def sweep(
    protocol: str,
    models: str,
    cache: str | None,
    out: str,
    device: str,
    plugins: tuple[str, ...],
    no_pretrained: bool,
    seeds: tuple[int, ...] | None,
    parallel: int | None,
    print_only: bool,
    tensorboard: str | None,
) -> None:
    """Run every (model, lr) of a protocol's grid, resuming any that stopped: one after another, or K at a
    time on each GPU (--parallel K, logs in OUT/logs); or print the commands for a cluster's job array.
    --seeds runs every (model, lr) once per training seed (replicates, one board entry each).

    \b
    Example:
      cxrbench sweep --protocol paper-lr-grid --models densenet121,resnet50 --cache cache/
      cxrbench sweep --protocol paper-lr-grid --models densenet121,densenet121_attA --cache cache/ --parallel 4
      cxrbench sweep --protocol paper-lr-grid --models densenet121_attA --cache cache/ --print > jobs.txt
      cxrbench sweep --protocol smoke --models tiny --cache cache/ --seeds 3
    """
    from cxrbench.console import get_display
    from cxrbench.orchestrate.sweep import grid, run_command
    from cxrbench.orchestrate.sweep import sweep as run_sweep
    from cxrbench.run import RunOptions

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise click.BadParameter("name at least one model", param_hint="--models")
    check_names(names, (protocol,), plugins)  # a typo is named before a missing --cache
    cache = require(cache, "--cache")
    opts = RunOptions(
        model=names[0],
        protocol=protocol,
        cache=cache,
        device=device,
        out=out,
        plugins=plugins,
        pretrained=False if no_pretrained else None,
        tensorboard=tensorboard,
    )
    if tensorboard is not None and not print_only:
        from cxrbench.results.events import require_tensorboard

        require_tensorboard()
    if print_only:
        for o in grid(opts, names, seeds):
            click.echo(run_command(o))
        return
    run_sweep(opts, names, parallel, get_display(), seeds)
