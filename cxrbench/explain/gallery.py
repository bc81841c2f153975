"""`cxrbench gallery RUN`: a self-contained HTML page (plus PNGs) of a run's test images - the X-ray as the
model saw it, the ground truth, the top classes with their probabilities and Grad-CAM heatmaps, the NIH
box where one exists, and for attention models their attention maps. Every string in the page is escaped;
a degenerate heatmap is shown as such, never stretched into a picture."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrbench.errors import RecordError
from cxrbench.results.types import Record

if TYPE_CHECKING:
    import torch

    from cxrbench.run.context import RunContext

DISPLAY = 256  # pixels of each picture in the page


@dataclass
class Loaded:
    """A finished run with its model, cache binding and predictions."""

    runner: RunContext
    model: torch.nn.Module
    record: Record
    test_rows: np.ndarray
    probs: np.ndarray  # (N, C) from the run's predictions file, in test-row order


def model_code(rec: Record, plugins: tuple[str, ...], source: str | Path) -> tuple[str, ...]:
    """The plugin files to load for a run's model: only those the user named, and only when one of them is the
    file the record names (same sha256). A record never makes cxrbench import anything by itself."""
    from cxrbench.hashing import file_sha256
    from cxrbench.models.registry import _all

    src, name = rec.model.source, rec.model.name
    if src["kind"] == "file":
        want = src.get("sha256")
        shown = Path(str(src.get("path", "?"))).name
        if not plugins:
            raise RecordError(
                f"{source}: its model {name!r} comes from the plugin file {shown}; cxrbench does not "
                "import code that a record names: pass that file with --plugin (its sha256 must be "
                f"{want})"
            )
        have = {p: file_sha256(Path(p)) if Path(p).is_file() else None for p in plugins}
        if want not in have.values():
            got = ", ".join(f"{p} has sha256 {h}" for p, h in have.items())
            raise RecordError(
                f"{source}: the run used a plugin file with sha256 {want}, but {got}: refusing to load "
                "another model's code"
            )
        return tuple(plugins)
    if src["kind"] == "timm":  # timm's architecture by name: built by timm, no code of the record's
        from cxrbench.models import get_spec

        if get_spec(name).source.get("architecture") != src.get("architecture"):
            raise RecordError(f"{source}: its model {name!r} is not timm's {src.get('architecture')!r}")
        return tuple(plugins)
    spec = _all().get(name) if src["kind"] in ("built-in", "entry point") else None
    if (
        spec is None
        or spec.source.get("kind") != src["kind"]
        or (
            src["kind"] == "entry point"
            and (spec.source.get("distribution"), spec.source.get("value"))
            != (src.get("distribution"), src.get("value"))
        )
    ):
        raise RecordError(f"{source}: its model {name!r} ({src['kind']}) is not installed here as the record says")
    return tuple(plugins)


def load_run(run_dir: str | Path, cache: str | None = None, plugins: tuple[str, ...] = ()) -> Loaded:
    """Rebuild a finished run's trained model and its test split from the run folder (a plugin model only from
    a `plugins` file whose sha256 the record names)."""
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import parse_json, read_regular
    from cxrbench.run import RunOptions
    from cxrbench.run.bind import bind

    run_dir = Path(run_dir)
    rec = Record.read(run_dir)
    plugins = model_code(rec, tuple(plugins), run_dir / "record.json")
    cfg = parse_json(read_regular(run_dir / "run.json", 1 << 20, "run.json"), run_dir / "run.json")
    if not isinstance(cfg, dict):
        raise RecordError(f"{run_dir / 'run.json'}: not a JSON object")
    cache_path = cache or cfg.get("cache_path")
    if not cache_path or not isinstance(cache_path, str):
        raise RecordError(f"{run_dir}: no cache path recorded; pass --cache")
    from cxrbench.protocols import protocol_key

    opts = RunOptions(
        model=rec.model.name,
        protocol=protocol_key(rec.protocol.id, rec.protocol.version),
        cache=cache_path,
        device="auto",
        out=str(run_dir.parent),
        lr=rec.lr,
        plugins=plugins,
        run_id=run_dir.name,
    )
    runner = bind(opts, build_model=False)  # the run's context: cache binding, labels, features; no pixels
    if rec.model.source_kind == "file" and runner.spec.source.get("sha256") != rec.model.source["sha256"]:
        raise RecordError(f"{run_dir}: model {opts.model!r} was registered by another file than the run's plugin")
    if runner.store.fingerprint != rec.data.cache_fingerprint:
        raise RecordError(
            f"{cache_path}: this is not the cache the run used (fingerprint "
            f"{runner.store.fingerprint} vs {rec.data.cache_fingerprint}); pass --cache"
        )
    from cxrbench.run.scorer import load_scored_model

    model = load_scored_model(
        run_dir, rec.raw, opts.model, runner.protocol.num_classes, runner.protocol.final_run, str(runner.device)
    )
    b = runner.bound
    test_rows = b.local(b.splits.test)
    pred = Predictions.read(run_dir / rec.predictions.path)
    p = pred.probabilities
    want = [str(n) for n in b.metadata.names[b.rows[test_rows]]]
    if pred.images != want:
        raise RecordError(f"{run_dir}: its predictions do not list the test images of this cache in order")
    return Loaded(runner, model, rec, test_rows, p)


def choose(loaded: Loaded, n: int, boxes: dict[int, list]) -> list[int]:
    """Indices into test rows: images with boxes first, then images with findings, then the rest (by name)."""
    b = loaded.runner.bound
    y = loaded.runner.labels[loaded.test_rows]
    finding = y[:, : min(14, y.shape[1])].any(1)
    names = b.metadata.names[b.rows[loaded.test_rows]]
    order = sorted(range(len(names)), key=lambda i: (i not in boxes, not finding[i], str(names[i])))
    return order[:n]


CLASS_CHOICES = ("auto", "top3", "truth")


def panel_classes(
    probs: np.ndarray, truth: np.ndarray, classes: list[str], mode: str = "auto", no_finding: bool = False, n: int = 3
) -> list[int]:
    """Which classes get a Grad-CAM panel. auto: the true findings first (so their boxes show), then the most
    probable others, `n` panels at least; top3: the `n` most probable; truth: the true findings (the most
    probable class when there are none). "No Finding" has no region to show: left out unless `no_finding`."""
    from cxrbench.data.labels import NO_FINDING

    allowed = [c for c in range(len(classes)) if no_finding or classes[c] != NO_FINDING]
    by_prob = sorted(allowed, key=lambda c: (-float(probs[c]), c))
    true = [c for c in by_prob if truth[c]]
    if mode == "top3":
        return by_prob[:n]
    if mode == "truth":
        return true or by_prob[:1]
    if mode != "auto":
        raise RecordError(f"--classes must be one of {', '.join(CLASS_CHOICES)}, not {mode!r}")
    return true + [c for c in by_prob if c not in true][: max(0, n - len(true))]


def _png(path: Path, rgb: np.ndarray, root: Path | None) -> str:
    """One PNG, written by cxrbench.files (never through a link at the temporary or the final name)."""
    from PIL import Image

    from cxrbench.files import atomic_open

    with atomic_open(path, root=root) as fh:
        Image.fromarray(rgb).save(fh, format="PNG", optimize=False)
    return path.name


SCALE = "colour-scale.png"


def _scale_png(folder: Path, root: Path | None) -> str:
    """The heatmaps' colour scale as a picture: transparent grey at 0 to red at the map's maximum."""
    grey = np.full((24, DISPLAY * 2), 128, np.uint8)
    ramp = np.tile(np.linspace(0.0, 1.0, DISPLAY * 2, dtype=np.float32), (24, 1))
    return _png(folder / SCALE, _overlay(grey, ramp, None), root)


def _overlay(gray: np.ndarray, heat: np.ndarray | None, box: tuple | None) -> np.ndarray:
    """RGB: the X-ray, the heatmap blended in (jet, alpha grows with the map), and a box outline."""
    import matplotlib

    g = np.repeat(gray[..., None].astype(np.float32) / 255.0, 3, axis=2)
    if heat is not None:
        cmap = matplotlib.colormaps["jet"]
        colour = cmap(heat)[..., :3]
        alpha = 0.55 * heat[..., None]
        g = (1 - alpha) * g + alpha * colour
    out = (np.clip(g, 0, 1) * 255).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(out.shape[1] - 1, x1), min(out.shape[0] - 1, y1)
        if x1 > x0 and y1 > y0:
            for t in range(2):
                out[y0 + t, x0:x1] = out[y1 - t, x0:x1] = (0, 255, 0)
                out[y0:y1, x0 + t] = out[y0:y1, x1 - t] = (0, 255, 0)
    return out


def build_gallery(
    run_dir: str | Path,
    out: str | Path | None = None,
    n: int = 24,
    classes: str = "auto",
    cache: str | None = None,
    plugins: tuple[str, ...] = (),
    display=None,
    no_finding: bool = False,
) -> Path:
    """Write OUT/index.html and its PNGs (default OUT: RUN/gallery); returns the page path. `classes` and
    `no_finding` choose the Grad-CAM panels (see `panel_classes`). `display` shows a progress bar, opened only
    once the run, its record and the output folder passed their checks (no bar before a refusal)."""
    from contextlib import nullcontext

    import torch
    import torch.nn.functional as F

    from cxrbench.engine.loader import Transform, View
    from cxrbench.explain.gradcam import GradCAM, attention_maps
    from cxrbench.explain.localization import Geometry
    from cxrbench.run.explain import boxes as run_boxes

    if classes not in CLASS_CHOICES:
        raise RecordError(f"--classes must be one of {', '.join(CLASS_CHOICES)}, not {classes!r}")
    L = load_run(run_dir, cache, plugins)
    r, rec = L.runner, L.record
    from cxrbench.files import atomic_write_text, make_dirs

    root: Path | None = None  # --out is the user's own folder; the default lies in a run folder from anyone
    if out is None:  # inside the run folder, which may come from someone else: it must stay inside
        root = Path(run_dir)
        out = root / "gallery"
        if out.is_symlink() or not out.resolve().is_relative_to(root.resolve()):
            raise RecordError(f"{out}: a link out of the run folder; pass --out")
    out = Path(out)
    make_dirs(out, root=root)
    p = r.protocol
    spec = r.spec
    geo = Geometry(p.image_size, p.resize, p.crop)
    boxes: dict[int, list] = {}
    for row, label, box_x, box_y, box_w, box_h in run_boxes(r, L.test_rows):
        boxes.setdefault(row, []).append((label, geo.box_in_crop(box_x, box_y, box_w, box_h)))
    pick = choose(L, n, boxes)
    names = r.bound.metadata.names[r.bound.rows[L.test_rows]]
    y_true = r.labels[L.test_rows]
    cls_names = list(r.bound.classes)
    view = View(p.image_size, p.resize, p.crop, augment=False, channels_last=r.device.startswith("cuda"))
    tf = Transform(view, torch.device(r.device))
    imgs = torch.from_numpy(r.store.read(r.bound.positions[L.test_rows[pick]]))
    feats = torch.as_tensor(r.features[L.test_rows[pick]], dtype=torch.float32)
    scale = DISPLAY / p.crop
    legend = _scale_png(out, root)
    curve = _curve_png(Path(run_dir), out, rec)
    cards = []
    bar = display.progress("gallery", total=len(pick)) if display is not None else nullcontext(None)
    with bar as progress, GradCAM(L.model, spec.cam_layer, spec.nonimage) as cam:
        for k, i in enumerate(pick):
            show = panel_classes(L.probs[i], y_true[i], cls_names, classes, no_finding)
            x = tf(imgs[k : k + 1].to(r.device), None)
            f = feats[k : k + 1].to(r.device) if spec.nonimage else None
            res = cam(x, torch.tensor([show]), f)
            maps = res.normalised((DISPLAY, DISPLAY))[0].cpu().numpy()
            view_img = _model_view(imgs[k], p, DISPLAY)
            stem = f"{k:03d}"
            panels: list[dict[str, str | bool]] = [
                {
                    "title": "X-ray (model view)",
                    "png": _png(out / f"{stem}-xray.png", _overlay(view_img, None, None), root),
                    "note": "",
                }
            ]
            for j, c in enumerate(show):
                box = next((bx for lab, bx in boxes.get(i, []) if lab == cls_names[c]), None)
                dbox = tuple(v * scale for v in box) if box is not None else None
                deg = bool(res.degenerate[0, j])
                png = _png(out / f"{stem}-cam{j}.png", _overlay(view_img, None if deg else maps[j], dbox), root)
                note = (
                    f"degenerate Grad-CAM map (peak {float(res.peak_ratio[0, j]):.1e} x mean activation): not shown"
                    if deg
                    else "Grad-CAM on " + spec.cam_layer
                )
                panels.append(
                    {
                        "title": f"{cls_names[c]} p={L.probs[i, c]:.3f}",
                        "png": png,
                        "note": note,
                        "degenerate": deg,
                        "box": box is not None,
                    }
                )
            if spec.attention:
                for s, a in enumerate(attention_maps(L.model, x, f, spec.nonimage)):
                    a = a[0:1, None].float()
                    a = (
                        F.interpolate(
                            a / a.amax().clamp_min(1e-30), size=(DISPLAY, DISPLAY), mode="bilinear", align_corners=False
                        )[0, 0]
                        .clamp(0, 1)
                        .cpu()
                        .numpy()
                    )
                    panels.append(
                        {
                            "title": f"attention a{s + 1}",
                            "note": "attention map",
                            "png": _png(out / f"{stem}-att{s + 1}.png", _overlay(view_img, a, None), root),
                        }
                    )
            truth = [cls_names[c] for c in np.flatnonzero(y_true[i])] or ["(none)"]
            cards.append(
                {"name": str(names[i]), "truth": truth, "panels": panels, "boxes": [lab for lab, _ in boxes.get(i, [])]}
            )
            if progress is not None:
                progress.advance(1)
    page = out / "index.html"
    text = _html(rec, cards, classes + (" (with No Finding)" if no_finding else ""), legend, curve)
    atomic_write_text(page, text, root=root)
    return page


def _model_view(img, p, size: int) -> np.ndarray:
    """The uint8 crop the model saw (after the protocol's resize and centre crop), at `size` pixels."""
    import torch
    import torch.nn.functional as F

    x = img.float()[None, None]
    if p.resize != p.image_size:
        x = F.interpolate(x, size=(p.resize, p.resize), mode="area")
    o = (p.resize - p.crop) // 2
    x = x[..., o : o + p.crop, o : o + p.crop]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0, 0].clamp(0, 255).round().to(torch.uint8).numpy()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em; margin: 0 0 1em 0; }
.panels { display: flex; flex-wrap: wrap; gap: 0.6em; }
figure { margin: 0; width: 256px; font-size: 0.8em; }
figure img { width: 256px; height: 256px; display: block; }
figure.scale { width: 512px; margin: 0 0 1em 0; }
figure.scale img { width: 512px; height: 24px; }
figure.curve { width: 800px; margin: 0 0 1em 0; }
figure.curve img { width: 800px; height: auto; }
.degenerate { color: #a00; font-weight: bold; }
.meta { color: #555; font-size: 0.85em; }
"""


CURVE = "training-curve.png"


def _curve_png(run_dir: Path, out: Path, rec: Record) -> str | None:
    """The run's training curves (history.csv, checked) as a picture in the gallery folder; None for a run
    without a history (made before cxrbench wrote one)."""
    from cxrbench.results.history import read_history
    from cxrbench.results.plots import training_curves

    if not (run_dir / "history.csv").is_file():
        return None
    h = read_history(run_dir / "history.csv")
    runs = []
    for name, g in h.groupby("training", sort=False):
        rows = g.to_dict("records")
        hist = [
            {
                "epoch": int(r["epoch"]) - 1,
                "train_loss": r["train_loss"],
                "val_weighted_auroc": None if np.isnan(r["val_weighted_auroc"]) else r["val_weighted_auroc"],
            }
            for r in rows
        ]
        runs.append((str(name), hist))
    training_curves(out / CURVE, runs, f"{rec.run_id}: training curves (history.csv)")
    return CURVE


def _html(rec: Record, cards: list[dict], classes: str, legend: str, curve: str | None = None) -> str:
    e = html.escape
    from cxrbench.protocols import protocol_key

    key = protocol_key(rec.protocol.id, rec.protocol.version)
    head = (
        f"<h1>Gallery: {e(rec.model.name)} under {e(key)}</h1>"
        f"<p class='meta'>run {e(rec.run_id)} · test AUROC (weighted) "
        f"{e(str(rec.test.weighted_mean.auroc))} · classes shown: {e(classes)} · green boxes: NIH "
        "(or planted) boxes of the class shown · a degenerate Grad-CAM map is reported, not stretched</p>"
        f"<figure class='scale'><img src='{e(legend)}' alt='colour scale of the heatmaps'><figcaption>Heatmap "
        "colour scale: 0 (no colour) to each map's own maximum (red); Grad-CAM maps are scaled one by one, so "
        "colours compare regions within a map, not maps with each other.</figcaption></figure>"
    )
    if curve is not None:
        head += (
            f"<figure class='curve'><img src='{e(curve)}' alt='training curves'><figcaption>Training loss and "
            "validation AUROC per epoch of every training of the run (its history.csv).</figcaption></figure>"
        )
    body = []
    for c in cards:
        figs = []
        for pnl in c["panels"]:
            cls = " class='degenerate'" if pnl.get("degenerate") else ""
            figs.append(
                f"<figure><img src='{e(pnl['png'])}' alt='{e(pnl['title'])}'>"
                f"<figcaption><b>{e(pnl['title'])}</b><br><span{cls}>{e(pnl['note'])}</span></figcaption></figure>"
            )
        body.append(
            f"<div class='card'><h3>{e(c['name'])}</h3><p class='meta'>ground truth: "
            f"{e(', '.join(c['truth']))}"
            + (f" · boxes: {e(', '.join(c['boxes']))}" if c["boxes"] else "")
            + f"</p><div class='panels'>{''.join(figs)}</div></div>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cxrbench gallery</title>"
        f"<style>{_STYLE}</style></head><body data-images='pending'>{head}{''.join(body)}"
        "<script>window.addEventListener('load', function () { var ok = Array.prototype.slice.call("
        "document.images).every(function (i) { return i.complete && i.naturalWidth > 0; }); "
        "document.body.setAttribute('data-images', ok ? 'ok' : 'broken'); });</script></body></html>\n"
    )
