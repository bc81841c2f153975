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


def commands(opts, models: list[str], extra: list[str]) -> list[str]:
    """One `cxrbench run` command line per run (each resumes if its folder exists)."""
    out = []
    for model, lr in plan(opts.protocol, models):
        args = ["cxrbench", "run", "--model", model, "--protocol", opts.protocol, "--lr", f"{lr:g}",
                "--cache", opts.cache, "--out", opts.out, "--device", opts.device, "--resume"]
        for pl in opts.plugins:
            args += ["--plugin", pl]
        out.append(" ".join(shlex.quote(a) for a in args + extra))
    return out


def sweep(opts, models: list[str], display=None) -> list[Path]:
    """Run the grid in this process; finished runs are skipped and unfinished ones resumed."""
    from cxrbench.experiment import Runner, default_run_id
    from cxrbench.protocols import get_protocol

    p = get_protocol(opts.protocol)
    records = []
    for i, (model, lr) in enumerate(plan(opts.protocol, models)):
        run_dir = Path(opts.out) / default_run_id(model, p, lr)
        if display is not None:
            display.info(f"[{i + 1}/{len(models) * len(p.lrs)}] {model} lr {lr:g}")
        if (run_dir / "record.json").exists():
            if display is not None:
                display.info(f"      finished already: {run_dir}")
            records.append(run_dir / "record.json")
            continue
        records.append(Runner(replace(opts, model=model, lr=lr, resume=run_dir.exists()), display).execute())
    return records
