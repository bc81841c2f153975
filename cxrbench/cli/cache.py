"""`cxrbench cache build|verify|info`: the preprocessing cache. Never imports torch."""

from __future__ import annotations

import json

import click


@click.group()
def cache() -> None:
    """Decode the dataset's PNGs once into a zarr store, check it, describe it.

    \b
    Example:
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache/
      cxrbench cache verify cache/
    """


@cache.command()
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="ChestX-ray14 folder (images_0NN/images/*.png or images/*.png, metadata CSV, lists).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), help="Store to write.")
@click.option("--subset", type=click.Choice(["all", "paper"]), default="all", show_default=True,
              help="Every image, or only the paper's class-balanced subset (seed 0).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoder processes (default: all cores).")
@click.option("--size", type=click.IntRange(min=8, max=4096), default=256, show_default=True,
              help="Side of the stored square images.")
@click.option("--decoder", default=None, help="PNG decoder: cxr, imagecodecs, pyspng, opencv or pillow "
              "(default: the fastest present).")
@click.option("--skip-bad", is_flag=True, help="Record undecodable images in the manifest and exclude them "
              "from every split, instead of failing.")
@click.option("--resample", type=click.Choice(["box", "bilinear"]), default="box", show_default=True,
              help="box: the exact area mean (4x4 for 1024 -> 256); bilinear: the reference paper's resize (Pillow's "
              "antialiased bilinear, as torchvision's Resize on PIL images), bit-exact; the v2 paper protocols need it.")
def build(data_dir: str, out: str, subset: str, workers: int | None, size: int, decoder: str | None,
          skip_bad: bool, resample: str) -> None:
    """Decode every image once, resize it (box or the paper's bilinear) and store uint8 pixels in zarr (resumable).

    \b
    Example:
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache/ --workers 16
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache-paper/ --resample bilinear
    """
    from cxrbench.cache.build import build_cache
    from cxrbench.console import get_display

    d = get_display()
    r = build_cache(data_dir, out, subset=subset, workers=workers, size=size, decoder=decoder, skip_bad=skip_bad,
                    display=d, resample=resample)
    if r.up_to_date:
        d.info(f"{out}: complete and up to date ({r.n_images} images); nothing to do")
        return
    extra = f", {len(r.bad)} bad images recorded and excluded" if r.bad else ""
    d.info(f"{out}: {r.n_images} images ({r.decoded} decoded now in {r.seconds:.1f} s, "
           f"{r.images_per_s:.0f} images/s{extra})")


@cache.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
def verify(path: str) -> None:
    """Re-read every chunk against its checksum and name any damaged chunk.

    \b
    Example:
      cxrbench cache verify cache/
    """
    from cxrbench.cache.store import cache_info, verify_cache
    from cxrbench.console import get_display
    from cxrbench.errors import CacheError

    d = get_display()
    n = cache_info(path)["images"]
    with d.progress("verify", total=n) as bar:
        problems = verify_cache(path, progress=bar)
    if problems:
        for p in problems:
            d.warn(p)
        raise CacheError(f"{path}: {len(problems)} problem(s) found (listed above)")
    d.info(f"{path}: all chunks match their checksums")


@cache.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path: str, as_json: bool) -> None:
    """Counts, size on disk, parameters and provenance of a cache.

    \b
    Example:
      cxrbench cache info cache/
    """
    from cxrbench.cache.store import cache_info
    from cxrbench.console import get_display

    i = cache_info(path)
    if as_json:
        click.echo(json.dumps(i, indent=2))
        return
    rows = [
        ["complete", i["complete"]], ["images", f"{i['images']:,}"], ["done", f"{i['images_done']:,}"],
        ["bad (excluded)", i["bad_images"]], ["odd formats converted", i["odd_images"]],
        ["size on disk (images)", f"{i['images_bytes_on_disk'] / 2**20:,.1f} MiB"],
        ["bytes per image", f"{i['bytes_per_image']:,.0f}"],
        *[[f"param {k}", v] for k, v in i["params"].items()],
        *[[f"input {k}", v["sha256"][:16]] for k, v in i["inputs"].items()],
        *[[f"library {k}", v] for k, v in i["libraries"].items()],
        *[[f"build {k}", v] for k, v in i["build"].items()],
        ["fingerprint", i["fingerprint"]],
    ]
    get_display().table(["field", "value"], rows, title=f"cache {path}")
