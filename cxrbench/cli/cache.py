"""`cxrbench cache build|verify|repair|info`: the preprocessing cache. Never imports torch."""

from __future__ import annotations

import json

import click


@click.group()
def cache() -> None:
    """Decode the dataset's PNGs once into a zarr store, check it, repair it, describe it.

    \b
    Example:
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache/
      cxrbench cache verify cache/
      cxrbench cache repair cache/ --data-dir /data/ChestX-ray14
    """


FOLLOW_LINKS = click.option(
    "--follow-links",
    is_flag=True,
    help="Read PNGs that are symbolic links to files outside --data-dir (refused by default).",
)


@cache.command()
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="ChestX-ray14 folder (images_0NN/images/*.png or images/*.png, metadata CSV, lists).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), help="Store to write.")
@click.option(
    "--subset",
    type=click.Choice(["all", "paper"]),
    default="all",
    show_default=True,
    help="Every image, or only the paper's class-balanced subset (seed 0).",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoder processes (default: all cores).")
@click.option(
    "--size",
    type=click.IntRange(min=8, max=4096),
    default=256,
    show_default=True,
    help="Side of the stored square images.",
)
@click.option(
    "--decoder",
    default=None,
    help="PNG decoder: cxr, imagecodecs, pyspng, opencv or pillow (default: the fastest present).",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Record undecodable images in the manifest and exclude them from every split, instead of failing.",
)
@click.option(
    "--resample",
    type=click.Choice(["box", "bilinear"]),
    default="box",
    show_default=True,
    help="box: the exact area mean (4x4 for 1024 -> 256); bilinear: the reference paper's resize (Pillow's "
    "antialiased bilinear, as torchvision's Resize on PIL images), bit-exact; the v2 paper protocols need it.",
)
@FOLLOW_LINKS
def build(
    data_dir: str,
    out: str,
    subset: str,
    workers: int | None,
    size: int,
    decoder: str | None,
    skip_bad: bool,
    resample: str,
    follow_links: bool,
) -> None:
    """Decode every image once, resize it (box or the paper's bilinear) and store uint8 pixels in zarr (resumable).

    \b
    Example:
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache/ --workers 16
      cxrbench cache build --data-dir /data/ChestX-ray14 --out cache-paper/ --resample bilinear
    """
    from cxrbench.cache.build import build_cache
    from cxrbench.console import get_display

    d = get_display()
    r = build_cache(
        data_dir,
        out,
        subset=subset,
        workers=workers,
        size=size,
        decoder=decoder,
        skip_bad=skip_bad,
        follow_links=follow_links,
        display=d,
        resample=resample,
    )
    if r.up_to_date:
        d.info(f"{out}: complete and up to date ({r.n_images} images); nothing to do")
        return
    extra = f", {len(r.bad)} bad images recorded and excluded" if r.bad else ""
    d.info(
        f"{out}: {r.n_images} images ({r.decoded} decoded now at {r.images_per_s:,.0f} images/s, as the bar "
        f"showed, in {r.decode_seconds:.1f} s; {r.seconds:.1f} s in all with checking and set-up{extra})"
    )


@cache.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
def verify(path: str) -> None:
    """Check everything a run reads: every chunk of images and original_shape against its checksum, the names
    and the stored tables against their sha256; name each damaged piece.

    \b
    Example:
      cxrbench cache verify cache/
    """
    from cxrbench.cache.store import cache_info, inspect_cache
    from cxrbench.console import get_display
    from cxrbench.errors import CacheError

    d = get_display()
    n = cache_info(path)["images"]
    with d.progress("verify", total=n) as bar:
        damage = inspect_cache(path, progress=bar)
    for note in damage.notes:
        d.info(note)
    if damage.problems:
        for p in damage.problems:
            d.warn(p)
        fix = (
            f"; `cxrbench cache repair {path} --data-dir DATA_DIR` decodes them again"
            if damage.chunks or damage.names or damage.tables
            else ""
        )
        raise CacheError(f"{path}: {len(damage.problems)} problem(s) found (listed above){fix}")
    d.info(f"{path}: all chunks, names and tables match their checksums")


@cache.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=str),
    help="The ChestX-ray14 folder the cache was built from.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoder processes (default: all cores).")
@FOLLOW_LINKS
def repair(path: str, data_dir: str, workers: int | None, follow_links: bool) -> None:
    """Decode again, from the PNGs, exactly what `cache verify` reports as damaged (chunks, names, tables).

    The build's parameters come from the cache itself. A re-decoded chunk is written only if it matches
    the checksum recorded at build time, so the repaired cache is bitwise what a clean build writes.

    \b
    Example:
      cxrbench cache verify cache/
      cxrbench cache repair cache/ --data-dir /data/ChestX-ray14
    """
    from cxrbench.cache.repair import repair_cache
    from cxrbench.console import get_display

    d = get_display()
    r = repair_cache(path, data_dir, workers=workers, follow_links=follow_links, display=d)
    if r.nothing_to_do:
        d.info(f"{path}: nothing is damaged; nothing to repair")
        return
    parts = []
    if r.chunks:
        parts.append(f"{len(r.chunks)} chunk(s) decoded again ({', '.join(map(str, r.chunks))}; {r.decoded} images)")
    if r.names:
        parts.append("names rewritten")
    if r.tables:
        parts.append(f"{len(r.tables)} table problem(s) fixed")
    d.info(f"{path}: repaired - {'; '.join(parts)}; it now matches its checksums ({r.seconds:.1f} s)")


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
        ["complete", i["complete"]],
        ["images", f"{i['images']:,}"],
        ["done", f"{i['images_done']:,}"],
        ["bad (excluded)", i["bad_images"]],
        ["odd formats converted", i["odd_images"]],
        ["size on disk (images)", f"{i['images_bytes_on_disk'] / 2**20:,.1f} MiB"],
        ["bytes per image", f"{i['bytes_per_image']:,.0f}"],
        *[[f"param {k}", v] for k, v in i["params"].items()],
        *[[f"input {k}", v["sha256"][:16]] for k, v in i["inputs"].items()],
        *[[f"library {k}", v] for k, v in i["libraries"].items()],
        *[[f"build {k}", v] for k, v in i["build"].items()],
        ["fingerprint", i["fingerprint"]],
    ]
    get_display().table(["field", "value"], rows, title=f"cache {path}")
