"""`cxrbench gallery`: Grad-CAM gallery of a finished run."""

from __future__ import annotations

import click

from cxrbench.cli._options import plugin_option


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--n", "n", type=click.IntRange(min=1), default=24, show_default=True, help="Test images to show.")
@click.option("--classes", type=click.Choice(["top3", "truth"]), default="top3", show_default=True,
              help="Heatmaps of the three most probable classes, or of the true findings.")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Output folder (default RUN/gallery).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=str), default=None,
              help="The run's cache, if it moved since the run.")
@plugin_option
def gallery(run: str, n: int, classes: str, out: str | None, cache: str | None, plugins: tuple[str, ...]) -> None:
    """Write an HTML gallery (plus PNGs) of RUN's test images with Grad-CAM heatmaps and boxes.

    \b
    Example:
      cxrbench gallery runs/densenet121__paper-15c@v1__lr0.01__seed0 --n 24 --classes top3
    """
    from cxrbench.console import get_display
    from cxrbench.explain.gallery import build_gallery

    d = get_display()
    with d.progress("gallery", total=n) as bar:
        page = build_gallery(run, out, n=n, classes=classes, cache=cache, plugins=plugins, progress=bar)
    d.info(f"wrote {page}")
