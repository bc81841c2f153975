"""`cxrbench predict`: a finished run's model on chest X-ray files (PNG, JPEG, DICOM), through the run's own
decode, resize and preprocessing (`cxrbench.api.Run`)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from cxrbench.cli._options import plugin_option

BATCH = 16  # images decoded, then scored, at a time


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Folder for predictions.csv / predictions.json (and cam/ with --cam); default: the table on stdout.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--cam",
    is_flag=True,
    help="Also write a Grad-CAM overlay (the model's declared layer) for the three most probable findings of "
    "each image to OUT/cam/ (needs --out).",
)
@click.option(
    "--operating-point",
    "operating_point",
    metavar="NAME",
    default=None,
    help="Mark each class positive or negative at this operating point of the run (thresholds chosen on its "
    "validation predictions, in RUN/evaluation/evaluation.json): youden (the default), sensitivity>=0.9, "
    "specificity>=0.9, or another target `cxrbench evaluate` chose.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@plugin_option
def predict(
    run: str,
    images: tuple[str, ...],
    out: str | None,
    fmt: str,
    cam: bool,
    operating_point: str | None,
    device: str,
    plugins: tuple[str, ...],
) -> None:
    """Probabilities per class of RUN's model for chest X-ray files: PNG (8/16-bit, grey, RGB, RGBA, any size),
    JPEG and DICOM (pydicom: rescale, VOI LUT or window, MONOCHROME1 inverted). Folders are searched for
    .png/.jpg/.jpeg/.dcm/.dicom files. A file that cannot be read is named and skipped.

    Where the run has operating points (`cxrbench run` writes them beside the record; `cxrbench evaluate`
    rewrites them), each class is also marked positive (1/true) or negative (0/false) at the chosen one,
    blank/null for a class that has no threshold; the output names the operating point.

    \b
    Example:
      cxrbench predict runs/densenet121__paper-15c@v2__lr0.01__seed0 scans/ --out predicted/
      cxrbench predict runs/tiny__smoke@v1__lr0.1__seed0 chest.dcm --format json
      cxrbench predict runs/tiny__smoke@v1__lr0.1__seed0 chest.png --operating-point "sensitivity>=0.9"
    """
    from cxrbench.api import load_run
    from cxrbench.console import get_display
    from cxrbench.errors import ConfigError, CxrbenchError, InputError
    from cxrbench.imagefiles import find_images

    d = get_display()
    if cam and out is None:
        raise ConfigError("--cam writes pictures: give --out DIR")
    r = load_run(run, plugins)
    points = r.operating_points
    if points is None and operating_point is not None:
        raise ConfigError(f"--operating-point: {r.path} has no operating points (no evaluation/evaluation.json)")
    point = None if points is None else points.pick(operating_point)
    paths = find_images(list(images))
    if not paths:
        raise InputError(None, f"no image files (.png, .jpg, .jpeg, .dcm, .dicom) in {', '.join(images)}")
    if points is None or point is None:
        d.warn(
            f"{r.path} has no operating points (no evaluation/evaluation.json): probabilities only; "
            "`cxrbench evaluate RUN` chooses them on its validation predictions"
        )
    else:
        others = [n for n in points.names if n != point]
        missing = [c for c, t in zip(r.classes, points.thresholds[point], strict=True) if t is None]
        d.info(
            f"positive or negative at the {point} operating point (thresholds chosen on the validation "
            f"predictions of {points.chosen_on})"
            + (f"; {len(missing)} class(es) without a threshold left blank" if missing else "")
            + (f"; others: {', '.join(others)} (--operating-point)" if others else "")
        )
    net = r.model(device)
    names: list[str] = []
    probs = []
    pixels_kept = []
    skipped = 0
    with d.progress("predicting", total=len(paths)) as bar:
        for i in range(0, len(paths), BATCH):
            batch, batch_names = [], []
            for p in paths[i : i + BATCH]:
                try:
                    batch.append(r.decode(p))
                    batch_names.append(printable(p))
                except CxrbenchError as e:
                    skipped += 1
                    d.warn(f"skipped {p}: {str(e).removeprefix(f'{p}: ')}")
                except OSError as e:
                    skipped += 1
                    d.warn(f"skipped {p}: {e.strerror or e}")
                bar.advance(1)
            if batch:
                stack = np.stack(batch)
                probs.append(r.probabilities(net, stack, device, BATCH))
                names += batch_names
                if cam:
                    pixels_kept.append(stack)
    if not names:
        raise InputError(None, f"none of the {len(paths)} file(s) could be read (each is named above)")
    prob = np.concatenate(probs)
    calls = None if points is None or point is None else (point, points.calls(prob, point))
    text = render(names, prob, list(r.classes), fmt, calls)
    if out is None:
        click.echo(text, nl=False)
    else:
        from cxrbench.files import atomic_write_text, make_dirs

        folder = make_dirs(out)
        path = atomic_write_text(Path(folder) / f"predictions.{fmt}", text, root=folder)
        if cam:
            write_cams(r, net, np.concatenate(pixels_kept), prob, names, Path(folder))
        d.info(f"wrote {path} ({len(names)} image(s){f', {skipped} skipped' if skipped else ''})")
    if skipped and out is None:
        d.info(f"{len(names)} image(s) predicted, {skipped} skipped")


def render(
    names: list[str], probs: np.ndarray, classes: list[str], fmt: str, calls: tuple[str, np.ndarray] | None = None
) -> str:
    """The predictions as CSV (image, p:<class>... and with `calls` (operating point, (N, C) 1/0/NaN) the columns
    operating_point, positive:<class>... as 1, 0 or blank) or JSON ([{image, probabilities: {class: p}} with
    operating_point and positive: {class: true, false or null}])."""
    if fmt == "json":
        rows = []
        for i, (n, row) in enumerate(zip(names, probs, strict=True)):
            e: dict = {"image": n, "probabilities": {c: round(float(v), 7) for c, v in zip(classes, row, strict=True)}}
            if calls is not None:
                e["operating_point"] = calls[0]
                e["positive"] = {c: None if np.isnan(v) else bool(v) for c, v in zip(classes, calls[1][i], strict=True)}
            rows.append(e)
        return json.dumps(rows, indent=1) + "\n"
    import csv
    import io

    from cxrbench.results.record import probability_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    marks = [] if calls is None else ["operating_point", *(f"positive:{c}" for c in classes)]
    w.writerow(["image", *(f"p:{c}" for c in classes), *marks])
    for i, (n, row) in enumerate(zip(names, probs, strict=True)):
        tail = [] if calls is None else [calls[0], *("" if np.isnan(v) else int(v) for v in calls[1][i])]
        w.writerow([n, *(probability_text(v) for v in row), *tail])
    return buf.getvalue()


def write_cams(r, net, pixels, probs, names: list[str], out: Path) -> list[Path]:
    """Per image, Grad-CAM overlays of its three most probable findings (as the gallery draws them: the
    model's view of the image, the map of the model's declared layer, degenerate maps not drawn), in `out`/cam,
    made and written inside `out` (a link planted at cam/ or at a picture's name is refused, as in the gallery)."""
    import torch

    from cxrbench.explain.gallery import DISPLAY, _model_view, _overlay, _png, panel_classes
    from cxrbench.explain.gradcam import GradCAM
    from cxrbench.files import make_dirs
    from cxrbench.models import get_spec

    folder = make_dirs(Path(out) / "cam", root=out)
    spec = get_spec(r.record.model.name)
    classes = list(r.classes)
    written = []
    with GradCAM(net, spec.cam_layer, spec.nonimage) as gc:
        for k in range(len(pixels)):
            show = panel_classes(probs[k], np.zeros(len(classes), bool), classes, "top3")
            x = r.transform(pixels[k], str(next(net.parameters()).device))
            res = gc(x, torch.tensor([show]))
            maps = res.normalised((DISPLAY, DISPLAY))[0].cpu().numpy()
            view = _model_view(torch.from_numpy(pixels[k]), r.protocol, DISPLAY)
            for j, c in enumerate(show):
                heat = None if bool(res.degenerate[0, j]) else maps[j]
                path = folder / f"{k:04d}-{_safe(Path(names[k]).stem)}-{_safe(classes[c])}.png"
                _png(path, _overlay(view, heat, None), Path(out))
                written.append(path)
    return written


def printable(path: Path) -> str:
    """A file's name as text any output can hold: bytes that are not UTF-8 (kept by Python as surrogates) become
    U+FFFD, so the CSV and JSON files are valid UTF-8."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
