"""`cxrbench gallery`: Grad-CAM gallery of a finished run."""

from __future__ import annotations

import click

from cxrbench.cli._options import plugin_option


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--n", "n", type=click.IntRange(min=1), default=24, show_default=True, help="Test images to show.")
@click.option(
    "--classes",
    type=click.Choice(["auto", "top3", "truth"]),
    default="auto",
    show_default=True,
    help="Grad-CAM panels: auto = the true findings first (with their boxes), then the most probable "
    "others (3 panels at least); top3 = the three most probable; truth = the true findings.",
)
@click.option(
    "--no-finding-cam",
    "no_finding",
    is_flag=True,
    help='Also give "No Finding" a Grad-CAM panel (left out by default: it has no region).',
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=str), default=None, help="Output folder (default RUN/gallery)."
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="The run's cache, if it moved since the run.",
)
@plugin_option
def gallery(
    run: str, n: int, classes: str, no_finding: bool, out: str | None, cache: str | None, plugins: tuple[str, ...]
) -> None:
    """Write an HTML gallery (plus PNGs) of RUN's test images with Grad-CAM heatmaps, boxes and a colour scale.

    A run whose model comes from a plugin file needs that file named with --plugin: its sha256 must be the one
    in RUN's record (cxrbench never imports code because a record names it).

    \b
    Example:
      cxrbench gallery runs/densenet121__paper-15c@v1__lr0.01__seed0 --n 24
      cxrbench gallery runs/mynet__smoke@v1__lr0.1__seed0 --plugin examples/my_model.py --classes top3
    """
    from cxrbench.console import get_display
    from cxrbench.explain.gallery import build_gallery

    d = get_display()
    page = build_gallery(run, out, n=n, classes=classes, cache=cache, plugins=plugins, display=d, no_finding=no_finding)
    d.info(f"wrote {page}")
