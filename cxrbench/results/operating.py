"""A run's operating points for `predict`: the per-class thresholds chosen on validation that `cxrbench run`
(beside the record) and `cxrbench evaluate` write to RUN/evaluation/evaluation.json, read back as untrusted input.

The file comes from a run folder made by anyone, so nothing in it is taken on trust: it is read through the
bounded strict JSON reader, its shape and values are checked, its own `result_sha256` must match its contents,
it must name this run's record and predictions by their sha256, and every threshold must be the one the
operating point's rule picks on the run's fold-0 validation predictions (which the record names by sha256) -
so a file that passes says what the run's validation says. Anything else is a RecordError naming the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrbench.errors import ConfigError, RecordError

if TYPE_CHECKING:
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.types import Record

EVALUATION_FILE = Path("evaluation") / "evaluation.json"
MAX_EVALUATION_BYTES = 64 << 20
MAX_POINTS = 16
DEFAULT_POINT = "youden"  # the threshold that balances sensitivity and specificity (max TPR - FPR)
_NAME = re.compile(r"(youden|sensitivity>=[0-9.e-]{1,20}|specificity>=[0-9.e-]{1,20})")


@dataclass(frozen=True)
class OperatingPoints:
    """Per operating point (name such as "youden" or "sensitivity>=0.9") the threshold of each class (None: no
    validation positives or negatives, so none was chosen); an image is called positive when its probability
    is >= the threshold. `source` is the evaluation file, `chosen_on` says whose validation predictions chose
    them (fold 0's model, in words)."""

    source: Path
    classes: tuple[str, ...]
    thresholds: Mapping[str, tuple[float | None, ...]]
    chosen_on: str

    @property
    def names(self) -> tuple[str, ...]:
        """The operating points' names, the default first."""
        return tuple(sorted(self.thresholds, key=lambda n: (n != DEFAULT_POINT, n)))

    @property
    def default(self) -> str:
        """The Youden point where the file has it (it always does when cxrbench wrote it)."""
        return self.names[0]

    def pick(self, name: str | None) -> str:
        """`name` (None: the default), checked to be one of the run's; a ConfigError lists them otherwise."""
        if name is None:
            return self.default
        if name not in self.thresholds:
            raise ConfigError(f"no operating point {name!r} in {self.source} (it has {', '.join(self.names)})")
        return name

    def calls(self, probabilities: np.ndarray, name: str) -> np.ndarray:
        """(N, C) float array: 1.0 where the probability is at or above the class's threshold, 0.0 below, NaN
        for a class without a threshold. The probability is compared as the run's predictions files write it
        (7 significant digits), the precision the thresholds were chosen at, so that a test image's file is
        called as `cxrbench evaluate` called it and a probability shown equal to the threshold is positive."""
        from cxrbench.results.record import probability_text

        p = np.asarray(probabilities, np.float64)
        shown = np.array([float(probability_text(v)) for v in p.ravel()], np.float64).reshape(p.shape)
        thr = np.array([np.nan if t is None else t for t in self.thresholds[name]], np.float64)
        with np.errstate(invalid="ignore"):
            out = (shown >= thr[None, :]).astype(np.float64)
        out[:, ~np.isfinite(thr)] = np.nan
        return out


def read_operating_points(run_dir: Path, record: Record, validation: Predictions | None) -> OperatingPoints | None:
    """The operating points of the run in `run_dir` (None where it has no RUN/evaluation/evaluation.json), from
    a file checked as the module docstring says; `validation` is the run's fold-0 validation predictions."""
    from cxrbench.files import read_json
    from cxrbench.metrics import evaluation as ev
    from cxrbench.results.evaluate import RESULT_FORMAT, RESULT_VERSION, THRESHOLD_FOLD, _canonical

    path = run_dir / EVALUATION_FILE
    if not (path.exists() or path.is_symlink()):
        return None

    def bad(why: str) -> RecordError:
        return RecordError(f"{path}: {why}")

    d = read_json(path, MAX_EVALUATION_BYTES, "the run's evaluation", lambda m: RecordError(m))
    if not isinstance(d, dict):
        raise bad("not a JSON object")
    if d.get("format") != RESULT_FORMAT or type(d.get("format_version")) is not int:
        raise bad(f"not a {RESULT_FORMAT} file (field format / format_version)")
    if d["format_version"] != RESULT_VERSION:
        raise bad(f"format_version {d['format_version']} is not the one this cxrbench reads ({RESULT_VERSION})")
    digest = d.get("result_sha256")
    body = {k: v for k, v in d.items() if k != "result_sha256"}
    if not isinstance(digest, str) or hashlib.sha256(_canonical(body)).hexdigest() != digest:
        raise bad("its contents do not match its result_sha256 (changed after it was written)")
    if d.get("run_record_sha256") != record.record_sha256 or d.get("predictions_sha256") != record.predictions.sha256:
        raise bad(
            "was made for another record or other predictions (run_record_sha256 / predictions_sha256); "
            "`cxrbench evaluate RUN` writes it anew"
        )
    if d.get("classes") != list(record.classes):
        raise bad("its classes are not the record's")
    src = d.get("thresholds_from")
    if not isinstance(src, dict) or src.get("fold") != THRESHOLD_FOLD or type(src.get("fold")) is not int:
        raise bad(f"field thresholds_from does not name fold {THRESHOLD_FOLD}'s validation predictions")
    if validation is None:
        raise bad(f"the record lists no fold-{THRESHOLD_FOLD} validation predictions to check its thresholds on")
    ops = d.get("operating_points")
    if not isinstance(ops, dict) or set(ops) != set(record.classes):
        raise bad("field operating_points does not hold one entry per class")
    rules: dict[str, tuple[str, float]] = {}
    table: dict[str, list[float | None]] = {}
    for c in record.classes:
        per = ops[c]
        if not isinstance(per, dict) or not per or len(per) > MAX_POINTS:
            raise bad(f"operating_points[{c!r}] is not an object of 1 to {MAX_POINTS} operating points")
        if rules and set(per) != set(rules):
            raise bad(f"operating_points[{c!r}] has other operating points than {record.classes[0]!r}")
        for name, e in per.items():
            rule, target, t = _entry(name, e, c, bad)
            if rules.setdefault(name, (rule, target)) != (rule, target):
                raise bad(f"operating_points[{c!r}][{name!r}] has another target than {record.classes[0]!r}")
            table.setdefault(name, []).append(t)
    for name, (rule, target) in rules.items():
        want = ev.thresholds(validation.labels, validation.probabilities, rule, target)
        got = np.array([np.nan if t is None else t for t in table[name]], np.float64)
        same = (want == got) | (np.isnan(want) & np.isnan(got))
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            raise bad(
                f"its {name} threshold of {record.classes[i]} is not the one chosen on the run's fold-"
                f"{THRESHOLD_FOLD} validation predictions ({_show(got[i])} given, {_show(want[i])} chosen)"
            )
    chosen = src.get("model")
    return OperatingPoints(
        path,
        tuple(record.classes),
        {n: tuple(t) for n, t in table.items()},
        chosen if isinstance(chosen, str) and len(chosen) < 400 else f"fold {THRESHOLD_FOLD}'s model",
    )


def _entry(name: Any, e: Any, cls: str, bad: Callable[[str], RecordError]) -> tuple[str, float, float | None]:
    """One entry's (rule, target, threshold), its name checked against its rule and target (youden: target 0)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise bad(f"operating point {str(name)[:40]!r} of {cls!r} is not youden, sensitivity>=T or specificity>=T")
    if not isinstance(e, dict) or not {"rule", "target", "threshold"} <= set(e):
        raise bad(f"operating_points[{cls!r}][{name!r}] lacks its rule, target or threshold")
    rule, target, t = e["rule"], e["target"], e["threshold"]
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    if rule == "youden" and name == rule and target is None:
        target = 0.0
    elif not (rule in ("sensitivity", "specificity") and number and 0 < target <= 1 and name == f"{rule}>={target:g}"):
        raise bad(f"operating_points[{cls!r}][{name!r}] has rule {str(rule)[:20]!r} and target {str(target)[:20]}")
    if t is None:
        return rule, float(target), None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= np.nextafter(1.0, 2.0):
        raise bad(f"operating_points[{cls!r}][{name!r}].threshold is {repr(t)[:40]}, not a probability or null")
    return rule, float(target), float(t)


def _show(x: float) -> str:
    return "none" if not np.isfinite(x) else repr(float(x))
