"""Finished smoke runs for the leaderboard tests: tiny, tiny_attn and a plugin model with a hostile name."""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import astuple
from pathlib import Path


def finished_runs(cache: Path, out: Path, hostile: str) -> dict[str, Path]:
    """Run folders by model name; the plugin model `hostile` is registered by OUT/evil.py (a model name
    stays registered for the session, so each test module passes a name of its own)."""
    from cxrbench.run import RunOptions, run

    plugin = out / "evil.py"
    plugin.write_text(
        textwrap.dedent(f"""
        from torch import nn
        from cxrbench.models import register_model

        @register_model(name={hostile!r}, cam_layer="0", input_size=64)
        def evil(num_classes=15, pretrained=False):
            return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))
    """)
    )
    dirs = {}
    for model, plugins in (("tiny", ()), ("tiny_attn", ()), (hostile, (str(plugin),))):
        dirs[model] = run(
            RunOptions(model=model, protocol="smoke", cache=str(cache), out=str(out), device="cpu", plugins=plugins)
        ).parent
    return dirs


def filed_board(runs: dict[str, Path], board: Path) -> Path:
    """A leaderboard folder with every run of `runs` submitted."""
    from cxrbench.results.leaderboard import submit

    for d in runs.values():
        submit(d, board, allow_dirty=True)
    return board


def forge(run_dir: Path, copy: Path, edit) -> Path:
    """A copy of the run at `copy` whose test predictions `edit(names, patients, y, p)` changed, with every test
    figure recomputed from them and the record sealed again: consistent in itself, so only a check against the
    data can catch it."""
    from cxrbench.metrics.auroc import score
    from cxrbench.protocols import get_protocol, protocol_key
    from cxrbench.results.predictions import Predictions
    from cxrbench.results.record import seal, write_predictions

    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("gallery"))
    names, patients, y, p, classes = astuple(Predictions.read(copy / "predictions.csv.gz"))
    names, patients, y, p = edit(list(names), patients.copy(), y.copy(), p.copy())
    sha = write_predictions(copy / "predictions.csv.gz", names, patients, y, p, tuple(classes))
    rec = json.loads((copy / "record.json").read_text())
    proto = get_protocol(protocol_key(rec["protocol"]["id"], rec["protocol"]["version"]))
    rec["test"] = score(y, p, patients, resamples=proto.bootstrap, seed=proto.seed).to_dict(tuple(classes))
    rec["predictions"]["sha256"] = sha
    (copy / "record.json").write_text(json.dumps(seal(rec)))
    return copy
