"""`cxrbench sweep`: a protocol's grid of runs."""

from __future__ import annotations

import click

from cxrbench.cli._options import plugin_option


@click.command()
@click.option("--protocol", default="paper-lr-grid", show_default=True, help="Protocol whose lr grid to sweep.")
@click.option("--models", required=True, help="Comma-separated model names.")
@click.option("--cache", required=True, type=click.Path(file_okay=False, path_type=str), help="The cache.")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False, path_type=str))
@click.option("--device", default="auto", show_default=True)
@plugin_option
@click.option("--no-pretrained", is_flag=True, help="Train without ImageNet weights (recorded).")
@click.option("--print", "print_only", is_flag=True, help="Print one `cxrbench run` command per run instead.")
def sweep(protocol: str, models: str, cache: str, out: str, device: str, plugins: tuple[str, ...],
          no_pretrained: bool, print_only: bool) -> None:
    """Run every (model, lr) of a protocol's grid one after another, resuming any that stopped; or print
    the commands for a cluster's job array.

    \b
    Example:
      cxrbench sweep --protocol paper-lr-grid --models densenet121,resnet50 --cache cache/
      cxrbench sweep --protocol paper-lr-grid --models densenet121_attA --cache cache/ --print > jobs.txt
    """
    from cxrbench.console import get_display
    from cxrbench.run import RunOptions
    from cxrbench.sweep import commands, sweep as run_sweep

    names = [m.strip() for m in models.split(",") if m.strip()]
    opts = RunOptions(model=names[0], protocol=protocol, cache=cache, device=device, out=out, plugins=plugins,
                      pretrained=False if no_pretrained else None)
    if print_only:
        for line in commands(opts, names, ["--no-pretrained"] if no_pretrained else []):
            click.echo(line)
        return
    run_sweep(opts, names, get_display())
