"""`cxrbench sweep`: every run of a protocol's grid (models x learning rates), one after another or as
commands for a cluster's job array."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path


def plan(protocol: str, models: list[str]) -> list[tuple[str, float]]:
    """(model, lr) for every run of the grid, in a fixed order."""
    from cxrbench.protocols import get_protocol

    p = get_protocol(protocol)
    return [(m, lr) for m in models for lr in p.lrs]


def run_command(model: str, protocol: str, lr: float, cache: str, out: str, device: str,
                plugins: tuple[str, ...] = (), extra: list[str] | tuple[str, ...] = ()) -> str:
    """One `cxrbench run` command line, quoted for a shell; it resumes the run if its folder exists."""
    args = ["cxrbench", "run", "--model", model, "--protocol", protocol, "--lr", f"{lr:g}", "--cache", cache,
            "--out", out, "--device", device, "--resume"]
    for pl in plugins:
        args += ["--plugin", pl]
    return " ".join(shlex.quote(a) for a in [*args, *extra])


def commands(opts, models: list[str], extra: list[str]) -> list[str]:
    """One `cxrbench run` command line per run of the grid."""
    return [run_command(model, opts.protocol, lr, opts.cache, opts.out, opts.device, opts.plugins, extra)
            for model, lr in plan(opts.protocol, models)]


def sweep(opts, models: list[str], display=None) -> list[Path | None]:
    """Run the grid in this process; finished runs are skipped and unfinished ones resumed."""
    from cxrbench.run import run_or_reuse

    runs = plan(opts.protocol, models)
    records = []
    for i, (model, lr) in enumerate(runs):
        if display is not None:
            display.info(f"[{i + 1}/{len(runs)}] {model} lr {lr:g}")
        records.append(run_or_reuse(replace(opts, model=model, lr=lr), display))
    return records
