"""The public Python API: a finished run, its model and its results as Python and pandas objects.

    >>> import cxrbench
    >>> run = cxrbench.load_run("runs/densenet121__paper-15c@v2__lr0.01__seed0")
    >>> run.scores.loc["weighted mean", "auroc"]          # the record's test figures, re-derived when loaded
    >>> run.predictions.head()                             # one row per test image
    >>> run.predict(["new.png", "study.dcm"])              # the run's model on files it never saw
    >>> cxrbench.compare(run, cxrbench.load_run("runs/other"))   # the board's paired test

A run folder may come from anyone, so `load_run` trusts nothing in it: the record goes through the record
validator and the board's verification (its protocol must be a known one with unchanged settings, every test
figure is re-derived from the predictions), the predictions through their strict parser with their sha256
checked, the model's weights through the checksummed checkpoint loader, and a plugin model is built only from
a file the caller names whose sha256 the record gives. The command line's `predict` and `export` use this API.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrbench.errors import ConfigError, RecordError

if TYPE_CHECKING:  # pandas and torch load when first used, not with `import cxrbench`
    import pandas as pd
    import torch

    from cxrbench.metrics.auroc import Comparison
    from cxrbench.protocols import Protocol
    from cxrbench.results.operating import OperatingPoints
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.types import Record

__all__ = ["Preprocess", "Run", "compare", "load_leaderboard", "load_run"]

ImageInput = str | os.PathLike[str] | np.ndarray
MAX_SETTINGS_BYTES = 1 << 20
AUTO = "auto"  # Run.predict: the run's default operating point where it has them
EVALUATION_FILE = "evaluation/evaluation.json"
NO_POINTS = "`cxrbench evaluate RUN` chooses them on its validation predictions"


@dataclass(frozen=True, eq=False)
class Preprocess:
    """A run's preprocessing from a decoded image to the model's input: uint8 (S, S) or (B, S, S) at the cache's
    size S -> float32 (B, 3, crop, crop), i.e. the protocol's on-device resize, the centre crop, grey to three
    channels and ImageNet normalisation - the code the run's test batches went through
    (`cxrbench.engine.loader.Transform`), not a re-implementation.

        >>> x = run.transform(run.decode("00000001_000.png"))   # (1, 3, 224, 224) for paper-15c
    """

    image_size: int
    resize: int
    crop: int

    def __call__(self, images: Any, device: str = "cpu") -> torch.Tensor:
        import torch

        from cxrbench.engine.loader import Transform, View

        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        if x.ndim == 2:
            x = x[None]
        if x.dtype != torch.uint8 or x.ndim != 3 or tuple(x.shape[1:]) != (self.image_size, self.image_size):
            raise ConfigError(
                f"the run's preprocessing takes uint8 images of {self.image_size}x{self.image_size} pixels "
                f"(the cache's size), not {x.dtype} of shape {tuple(x.shape)}; decode files with Run.decode"
            )
        view = View(self.image_size, self.resize, self.crop, augment=False)
        return Transform(view, torch.device(device))(x.to(device), None)


@dataclass(frozen=True, eq=False)
class Run:
    """A finished run, verified when loaded (see `load_run`).

    `path` is the run folder, `record` the typed record (`cxrbench.results.types.Record`), `protocol` the
    protocol it followed, `settings` its run.json (empty where the folder has none), `marks` what the
    verification found for each group of figures (re-derived, reported or None), `test` and `validation` the
    checked test and fold-0 validation predictions (None where the record lists none).
    """

    path: Path
    record: Record
    protocol: Protocol
    settings: Mapping[str, Any]
    marks: Mapping[str, str | None]
    test: Predictions = field(repr=False)
    plugins: tuple[str, ...] = ()
    validation: Predictions | None = field(default=None, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in the column order of every probability array."""
        return self.record.classes

    @property
    def scores(self) -> pd.DataFrame:
        """Test AUROCs with their 95% patient-bootstrap intervals: one row per class, then "weighted mean" and
        "plain mean"; columns auroc, ci_low, ci_high (NaN where a class is undefined on the test set).

            >>> run.scores.loc["Cardiomegaly", "auroc"]
        """
        import pandas as pd

        t = self.record.test
        rows = {c: t.per_class[c] for c in self.classes}
        rows.update({"weighted mean": t.weighted_mean, "plain mean": t.plain_mean})
        nan = float("nan")
        return pd.DataFrame(
            {
                "auroc": [nan if m.auroc is None else m.auroc for m in rows.values()],
                "ci_low": [nan if m.ci95[0] is None else m.ci95[0] for m in rows.values()],
                "ci_high": [nan if m.ci95[1] is None else m.ci95[1] for m in rows.values()],
            },
            index=pd.Index(list(rows), name="class"),
        )

    @property
    def predictions(self) -> pd.DataFrame:
        """The test predictions, one row per image: image, patient, then `y:<class>` (label 0/1) and
        `p:<class>` (probability) per class - the columns of the run's predictions.csv.gz.

            >>> run.predictions.set_index("image").loc["00000013_005.png", "p:Effusion"]
        """
        return predictions_frame(self.test)

    @property
    def history(self) -> pd.DataFrame:
        """The training curves from the run's history.csv: one row per epoch (from 1) of every training
        (fold0, ..., final) with train_loss, val_loss, val_weighted_auroc, val_plain_auroc, lr, images_per_s and
        seconds (NaN where not measured). A run made before cxrbench wrote history.csv has none: RecordError.

            >>> run.history.plot(x="epoch", y=["train_loss", "val_loss"])
        """
        from cxrbench.results.history import read_history

        return read_history(self.path / "history.csv")

    @cached_property
    def operating_points(self) -> OperatingPoints | None:
        """The thresholds chosen on validation (Youden, sensitivity>=T, specificity>=T per class) from the run's
        evaluation/evaluation.json, each checked against the run's validation predictions
        (`cxrbench.results.operating`); None where the run has no evaluation. A bad file: RecordError.

            >>> run.operating_points.names, run.operating_points.thresholds["youden"]
        """
        from cxrbench.results.operating import read_operating_points

        return read_operating_points(self.path, self.record, self.validation)

    @property
    def transform(self) -> Preprocess:
        """The run's preprocessing (decoded uint8 image -> model input); see `Preprocess`."""
        p = self.protocol
        return Preprocess(p.image_size, p.resize, p.crop)

    def decode(self, image: str | os.PathLike[str] | bytes) -> np.ndarray:
        """A PNG, JPEG or DICOM file (path or bytes) as the (S, S) uint8 image the cache build would have made
        of it (`cxrbench.imagefiles`); an InputError names a file that cannot be read.

            >>> run.decode("00000001_000.png").shape   # (256, 256) under paper-15c
        """
        from cxrbench.imagefiles import decode_bytes, read_gray

        p = self.protocol
        if isinstance(image, bytes):
            return decode_bytes(image, p.image_size, p.resample)
        return read_gray(Path(image), p.image_size, p.resample)

    def model(self, device: str = "cpu") -> torch.nn.Module:
        """The model that scored the test set, with the weights of its verified checkpoint, in eval mode on
        `device` (cpu, cuda, cuda:N or auto). A plugin model needs its file in `load_run(..., plugins=)`.

            >>> net = run.model()
            >>> probs = torch.sigmoid(net(run.transform(run.decode("new.png"))))
        """
        from cxrbench.explain.gallery import model_code
        from cxrbench.models.plugins import load_plugins
        from cxrbench.run.options import resolve_device
        from cxrbench.run.scorer import load_scored_model

        rec = self.record.raw
        plugins = model_code(self.record, self.plugins, self.path / "record.json")
        load_plugins(plugins)
        return load_scored_model(
            self.path,
            rec,
            self.record.model.name,
            self.protocol.num_classes,
            self.protocol.final_run,
            resolve_device(device),
        )

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        device: str = "cpu",
        batch_size: int = 16,
        model: torch.nn.Module | None = None,
        operating_point: str | None = AUTO,
    ) -> pd.DataFrame:
        """Probabilities of the run's model: one row per image (a file path, or a decoded uint8 grey array of
        any size, resized by the cache's rule), columns image and `p:<class>` per class. The path from file to
        probability is the cache build's decode and resize, the loader's preprocessing and the scoring's
        sigmoid, so a test image's file gives its probability in `run.predictions`.

        Where the run has operating points (`operating_points`), the column `operating_point` names the one
        used and `positive:<class>` (nullable boolean; NA for a class without a threshold) says whether the
        probability is at or above its threshold. `operating_point`: "auto" (the default point, Youden, where
        the run has them; else probabilities only, with a warning), a name such as "sensitivity>=0.9", or None
        (probabilities only).

            >>> run.predict(["scans/a.png", "scans/b.dcm"])
            >>> run.predict("scans/a.png", operating_point="sensitivity>=0.9")
        """
        import pandas as pd

        items = [images] if isinstance(images, (str, os.PathLike, np.ndarray)) else list(images)
        names = [str(x) if not isinstance(x, np.ndarray) else f"array[{i}]" for i, x in enumerate(items)]
        pixels = np.stack([self._pixels(x) for x in items]) if items else np.zeros((0, 1, 1), np.uint8)
        net = model if model is not None else self.model(device)
        probs = self.probabilities(net, pixels, device, batch_size)
        df = pd.DataFrame(probs.astype(np.float64), columns=[f"p:{c}" for c in self.classes])
        df.insert(0, "image", names)
        point = self._operating_point(operating_point)
        if point is not None and self.operating_points is not None:
            calls = self.operating_points.calls(probs, point)
            df["operating_point"] = point
            for j, c in enumerate(self.classes):
                df[f"positive:{c}"] = pd.array([None if np.isnan(v) else bool(v) for v in calls[:, j]], "boolean")
        return df

    def _operating_point(self, name: str | None) -> str | None:
        """The operating point `predict` marks at (see its docstring), None for probabilities only."""
        if name is None:
            return None
        points = self.operating_points
        if points is None:
            if name != AUTO:
                raise ConfigError(f"{self.path} has no operating points (no {EVALUATION_FILE}): {NO_POINTS}")
            import warnings

            warnings.warn(f"{self.path} has no operating points: probabilities only ({NO_POINTS})", stacklevel=3)
            return None
        return points.pick(None if name == AUTO else name)

    def probabilities(
        self, model: torch.nn.Module, pixels: np.ndarray, device: str = "cpu", batch_size: int = 16
    ) -> np.ndarray:
        """(N, C) float32 sigmoid probabilities of `model` on decoded (N, S, S) uint8 images."""
        import torch

        from cxrbench.models import get_spec

        if get_spec(self.record.model.name).nonimage:
            raise ConfigError(
                f"model {self.record.model.name} also takes the non-image features (age, sex, view), which an "
                "image file does not give: predicting from images alone is not available for it"
            )
        try:
            dev = str(next(iter(model.parameters())).device)
        except StopIteration:  # a model without parameters runs where it is asked to
            dev = device
        out = []
        with torch.no_grad():
            for i in range(0, len(pixels), batch_size):
                x = self.transform(pixels[i : i + batch_size], str(dev))
                y = model(x)
                y = y[0] if isinstance(y, (tuple, list)) else y
                out.append(torch.sigmoid(y.float()).cpu().numpy())
        n = len(self.classes)
        probs = np.concatenate(out).astype(np.float32) if out else np.zeros((0, n), np.float32)
        if not np.isfinite(probs).all():
            from cxrbench.run.scorer import scoring_checkpoint

            ck = scoring_checkpoint(self.path, self.protocol.final_run)
            raise RecordError(
                f"{ck}: the run's model gives non-finite probabilities (NaN or infinity) for "
                f"{int((~np.isfinite(probs)).any(axis=1).sum())} of {len(probs)} image(s); its weights cannot be used"
            )
        return probs

    def _pixels(self, x: ImageInput) -> np.ndarray:
        from cxrbench.cache.decode import resize

        if not isinstance(x, np.ndarray):
            return self.decode(x)
        s = self.protocol.image_size
        if x.size == 0:
            from cxrbench.errors import InputError

            raise InputError(None, f"an image array of shape {x.shape} has no pixels")
        if x.dtype != np.uint8 or x.ndim != 2:
            raise ConfigError(f"an image array must be 2-D uint8 grey (decoded), not {x.dtype} of shape {x.shape}")
        return x if x.shape == (s, s) else resize(x, s, self.protocol.resample)


def predictions_frame(pred: Predictions) -> pd.DataFrame:
    """Parsed predictions as a DataFrame with the file's columns (image, patient, y:<class>..., p:<class>...)."""
    import pandas as pd

    df = pd.DataFrame({"image": pred.images, "patient": pred.patients})
    for j, c in enumerate(pred.classes):
        df[f"y:{c}"] = pred.labels[:, j]
    for j, c in enumerate(pred.classes):
        df[f"p:{c}"] = pred.probabilities[:, j]
    return df


def load_run(path: str | os.PathLike[str], plugins: Iterable[str] = ()) -> Run:
    """A finished run folder (or its record.json), verified as the leaderboard verifies a submission: the
    record's schema, its protocol (known, settings unchanged), the predictions' sha256 and format, every test
    figure re-derived from them. `plugins` are the plugin files a plugin model may be built from (used only
    when the record names one of them by sha256). A RecordError says what is wrong.

        >>> run = cxrbench.load_run("runs/tiny__smoke@v1__lr0.1__seed0")
        >>> run.record.model.name, run.protocol.key
        ('tiny', 'smoke@v1')
    """
    from cxrbench.files import read_json
    from cxrbench.results.record import read_run_files
    from cxrbench.results.types import Record
    from cxrbench.results.verify import check_protocol, verify

    files = read_run_files(Path(path))
    folder = files.source.parent
    v = verify(files.record, files.predictions, files.folds, files.source)
    record = Record.from_dict(files.record, files.source)
    if tuple(v.test.classes) != record.classes:
        raise RecordError(f"{files.source}: its predictions' classes are not the record's")
    settings: dict[str, Any] = {}
    cfg = folder / "run.json"
    if cfg.exists() or cfg.is_symlink():
        got = read_json(cfg, MAX_SETTINGS_BYTES, "the run's settings", lambda m: RecordError(m))
        if not isinstance(got, dict):
            raise RecordError(f"{cfg}: not a JSON object")
        settings = got
    from cxrbench.results.evaluate import THRESHOLD_FOLD

    protocol = check_protocol(files.record, files.source)
    val = v.folds.get(THRESHOLD_FOLD)
    return Run(folder, record, protocol, settings, dict(v.marks), v.test, tuple(plugins), val)


def _as_run(x: Run | str | os.PathLike[str]) -> Run:
    return x if isinstance(x, Run) else load_run(x)


def compare(
    run_a: Run | str | os.PathLike[str], run_b: Run | str | os.PathLike[str], metric: str = "weighted"
) -> Comparison:
    """The leaderboard's paired test of a - b: both runs' test predictions scored on the same patient bootstrap
    resamples (the protocol's count and seed), on the weighted or plain mean test AUROC. The runs must share the
    protocol version, the data and the test images with their labels and patients (else a RecordError).

        >>> c = cxrbench.compare("runs/a", "runs/b")
        >>> c.diff, c.ci95, c.p_value, c.significant
    """
    from cxrbench.metrics.auroc import compare as paired
    from cxrbench.protocols import protocol_key
    from cxrbench.results.leaderboard import data_key

    if metric not in ("weighted", "plain"):
        raise ConfigError(f"metric must be weighted or plain, not {metric!r}")
    a, b = _as_run(run_a), _as_run(run_b)
    ka, kb = (protocol_key(r.record.protocol.id, r.record.protocol.version) for r in (a, b))
    if ka != kb:
        raise RecordError(f"{a.path} follows {ka} and {b.path} {kb}: runs of different protocols are not paired")
    if data_key(dict(a.record.raw)) != data_key(dict(b.record.raw)):
        raise RecordError(f"{a.path} and {b.path} were made on different data (metadata, splits or exclusions)")
    ta, tb = a.test, b.test
    order = {n: i for i, n in enumerate(ta.images)}
    if set(tb.images) != set(order):
        raise RecordError(f"{a.path} and {b.path} do not predict the same test images")
    idx = np.array([order[n] for n in tb.images])
    y, pb = np.empty_like(ta.labels), np.empty_like(tb.probabilities)
    y[idx], pb[idx] = tb.labels, tb.probabilities
    if not np.array_equal(y, ta.labels) or not np.array_equal(ta.patients[idx], tb.patients):
        raise RecordError(f"{a.path} and {b.path} give the same test images other labels or patients")
    p = a.protocol
    return paired(ta.labels, ta.probabilities, pb, ta.patients, metric, p.bootstrap, p.seed)


def load_leaderboard(path: str | os.PathLike[str] = "leaderboard") -> pd.DataFrame:
    """Every filed record of a leaderboard folder that passes the board's checks, as ranked by the board: one
    row per entry with protocol, data, rank, id, model, lr, the weighted and plain mean test AUROC with their
    95% CIs, and the paired comparison against its group's best (diff, CI, p). A record that fails its checks is
    left out with a warning (`warnings.warn`) naming it and the reason.

        >>> board = cxrbench.load_leaderboard("leaderboard")
        >>> board[board.protocol == "paper-15c@v2"].head()
    """
    import warnings

    import pandas as pd

    from cxrbench.results.leaderboard import rank, scan

    entries, skipped = scan(Path(path))
    for s in skipped:
        warnings.warn(f"skipped {s.path}: {s.reason.removeprefix(f'{s.path}: ')}", stacklevel=2)
    rows = []
    for g in rank(entries):
        for i, e in enumerate(g.entries):
            t = e.record["test"]
            c = g.comparisons.get(e.id)
            rows.append(
                {
                    "protocol": g.protocol,
                    "data": g.data_key,
                    "rank": i + 1,
                    "id": e.id,
                    "model": e.record["model"]["name"],
                    "lr": e.record["lr"],
                    "weighted_auroc": t["weighted_mean"]["auroc"],
                    "weighted_ci_low": t["weighted_mean"]["ci95"][0],
                    "weighted_ci_high": t["weighted_mean"]["ci95"][1],
                    "plain_auroc": t["plain_mean"]["auroc"],
                    "plain_ci_low": t["plain_mean"]["ci95"][0],
                    "plain_ci_high": t["plain_mean"]["ci95"][1],
                    "n_test": t["n_images"],
                    "diff_vs_best": None if c is None else c["diff"],
                    "diff_ci_low": None if c is None else c["ci95"][0],
                    "diff_ci_high": None if c is None else c["ci95"][1],
                    "p_value": None if c is None else c["p_value"],
                    "record": str(e.path),
                }
            )
    cols = [
        "protocol", "data", "rank", "id", "model", "lr", "weighted_auroc", "weighted_ci_low", "weighted_ci_high",
        "plain_auroc", "plain_ci_low", "plain_ci_high", "n_test", "diff_vs_best", "diff_ci_low", "diff_ci_high",
        "p_value", "record",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)
