"""`cxrbench quickstart`: the whole pipeline on a generated phantom set."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--out",
    default="cxrbench-quickstart",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for everything it makes.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def quickstart(out: str, device: str) -> None:
    """Generate a phantom set, build its cache, train two small models under `smoke`, submit them, print the
    leaderboard and write a Grad-CAM gallery. About a minute and a half on 2 CPU cores; re-running reuses what exists.

    \b
    Example:
      cxrbench quickstart --out cxrbench-quickstart
    """
    from cxrbench.studies.quickstart import quickstart as run_quickstart

    run_quickstart(out, device=device)
