"""`cxrbench synth`: write a phantom dataset in the exact NIH layout."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), help="Folder to write.")
@click.option("--n", "n", type=click.IntRange(min=1), default=500, show_default=True, help="Number of images.")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    show_default=True,
    help="Seed: the same seed gives the same set.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes (default: all cores).")
@click.option("--no-odd", is_flag=True, help="Leave out the odd formats (RGBA, RGB, 16-bit images).")
def synth(out: str, n: int, seed: int, workers: int | None, no_odd: bool) -> None:
    """Generate a phantom ChestX-ray14: 1024x1024 PNGs in images_001/images/, the metadata CSV, split lists
    and BBox CSV in the real formats, each finding planted as a visible pattern at its box.

    \b
    Example:
      cxrbench synth --out phantom/ --n 500 --seed 0
    """
    from cxrbench.console import get_display
    from cxrbench.data.synth import generate

    d = get_display()
    with d.progress("synth", total=n) as bar:
        images = generate(out, n, seed=seed, workers=workers, odd=not no_odd, progress=bar)
    boxes = sum(len(im.boxes) for im in images)
    d.info(f"wrote {n} images ({boxes} planted findings) to {out}")
