"""`cxrbench evaluate`: a finished run's operating points, calibration, subgroups and underdiagnosis."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "md", "html", "json", "csv"]),
    default="text",
    show_default=True,
    help="What to print (evaluation.json, .csv, .html and the PNGs are written to --out whatever it is; html "
    "prints the page's path).",
)
@click.option(
    "--attributes",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="A CSV keyed by 'Image Index' with a subgroup attribute of the test images (with --by).",
)
@click.option("--by", default=None, help="The column of --attributes that names each image's group.")
@click.option(
    "--sensitivity",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.9,
    show_default=True,
    help="Target of the sensitivity rule: the highest validation threshold that reaches it.",
)
@click.option(
    "--specificity",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.9,
    show_default=True,
    help="Target of the specificity rule: the lowest validation threshold that reaches it.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="The run's dataset tables (a cache or a dataset folder) for the metadata and the checks "
    "(default: the cache the run recorded).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Folder for evaluation.json/.csv/.html and the pictures (default RUN/evaluation).",
)
@click.option("--no-pictures", is_flag=True, help="Skip the PNGs (quicker; the HTML then holds the tables only).")
def evaluate(
    run: str,
    fmt: str,
    attributes: str | None,
    by: str | None,
    sensitivity: float,
    specificity: float,
    data: str | None,
    out: str | None,
    no_pictures: bool,
) -> None:
    """Evaluate RUN beyond one AUROC: test sensitivity, specificity, PPV, NPV and F1 at thresholds chosen on
    its validation predictions (Youden's J, a sensitivity and a specificity target), calibration (ECE, adaptive
    ECE, Brier, reliability diagrams), AUROC, TPR and FPR by sex, age band, view position (and a column of
    --attributes), and underdiagnosis rates by group; with patient-bootstrap 95% CIs.

    \b
    Example:
      cxrbench evaluate runs/densenet121__paper-15c@v2__lr0.01__seed0
      cxrbench evaluate runs/tiny__smoke@v1__lr0.1__seed0 --format md --attributes drains.csv --by drain
    """
    from pathlib import Path

    from cxrbench.console import get_display
    from cxrbench.errors import InputError
    from cxrbench.results import evaluation_render as render
    from cxrbench.results.evaluate import evaluate_run, write_outputs

    if (attributes is None) != (by is None):
        raise InputError(None, "--attributes FILE and --by COLUMN go together")
    d = get_display()
    with d.progress("evaluate", total=None, unit="runs"):  # the figures: seconds for 25,596 images
        result, arrays = evaluate_run(run, data, attributes, by, sensitivity, specificity)
    run_dir = Path(run)
    folder = run_dir / "evaluation" if out is None else Path(out)
    with d.progress("pictures", total=None, unit="pictures") if not no_pictures else _nothing():
        paths = write_outputs(result, arrays, folder, run_dir if out is None else None, not no_pictures)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    elif fmt == "csv":
        click.echo(render.to_csv(result), nl=False)
    elif fmt == "md":
        click.echo(render.to_markdown(result), nl=False)
    elif fmt == "html":
        click.echo(str(paths["html"]))
    else:
        render.show(result, d)
    d.info(f"wrote evaluation.json, evaluation.csv, evaluation.html and {len(paths) - 3} picture(s) in {folder}")


def _nothing():
    import contextlib

    return contextlib.nullcontext()
