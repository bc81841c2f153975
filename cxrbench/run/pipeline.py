"""A run, top to bottom: bind -> (run folder) -> load -> fit folds -> score -> explain -> record.

Each stage is a module of this package named after it and takes the `RunContext` that `bind` made, plus the
typed results of the stages before it. Under torchrun every rank runs the same stages (the DDP layer,
`cxrbench.engine.distributed`, sits below them and imports none of them); rank 0 writes the folder and the record.
"""

from __future__ import annotations

import os
from pathlib import Path

from cxrbench.run.bind import bind
from cxrbench.run.context import RunContext
from cxrbench.run.options import RunOptions, run_dir
from cxrbench.run.progress import RunInterrupted


def run(opts: RunOptions, display=None) -> Path | None:
    """Run in this process, or as one rank of a torchrun job when its environment says so; returns the record
    path (on rank 0; None on the other ranks)."""
    if opts.tensorboard is not None:  # before anything is trained
        from cxrbench.results.events import require_tensorboard

        require_tensorboard()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return execute(bind(opts, display))
    import torch.distributed as torch_dist

    from cxrbench.engine.distributed import init_from_env

    d = init_from_env(opts.device)
    try:
        return execute(bind(opts, display, dist=d))
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def execute(ctx: RunContext) -> Path | None:
    """The stages after bind; Ctrl-C becomes a `RunInterrupted` that says where the run stopped."""
    from cxrbench.run.determinism import numeric_mode

    try:
        with numeric_mode(ctx.device, ctx.opts.deterministic):
            return _stages(ctx)
    except RunInterrupted:
        raise
    except KeyboardInterrupt as e:
        raise _interrupted(ctx) from e


def _stages(ctx: RunContext) -> Path | None:
    from cxrbench.run import explain, folder, load, record, score
    from cxrbench.run.timing import breakdown

    ctx.state.stage = "folder"
    folder.prepare(ctx)
    ctx.state.stage = "load"
    with ctx.state.clock.stage("load"):
        images = load.load(ctx)
    from cxrbench.models.registry import plugin_errors

    ctx.state.stage = "fit"
    with plugin_errors(ctx.spec, "training"):
        trained = _fit(ctx, images)
    ctx.state.stage = "score"
    with plugin_errors(ctx.spec, "scoring"):
        scored = score.score(ctx, images, trained)
    if not ctx.is_main:
        return None
    ctx.state.stage = "explain"
    with ctx.state.clock.stage("explain"), plugin_errors(ctx.spec, "explaining"):
        localization = explain.explain(ctx, images, trained, scored)
    ctx.state.stage = "record"
    with ctx.state.clock.stage("record"):
        path = record.write(ctx, record.build(ctx, images, trained, scored, localization, ctx.state.clock.wall()))
    session = dict(ctx.state.clock.seconds)
    for name in trained.trained_now:  # this session's trainings, for a line that adds up to this session's wall
        session.update(
            {k: v - trained.before.get(k, 0.0) for k, v in trained.stages.items() if k.startswith(name + ".")}
        )
    train_now = sum(v for k, v in session.items() if k.endswith(".train"))
    ctx.info(breakdown(session, ctx.state.clock.wall(), train_now, before=trained.before))
    _evaluate(ctx, path)
    return path


def _evaluate(ctx: RunContext, record_path: Path) -> None:
    """The evaluation beside the record (RUN/evaluation: JSON, CSV, tables-only HTML; `cxrbench evaluate RUN`
    draws the pictures), computed from the run's folder as `cxrbench evaluate` reads it. A run whose training
    and record are done is not failed by it: a reason is shown instead."""
    from cxrbench.errors import CxrbenchError
    from cxrbench.results.evaluate import evaluate_run, write_outputs

    run_dir = record_path.parent
    try:
        result, arrays = evaluate_run(run_dir, data=str(ctx.opts.cache))
        write_outputs(result, arrays, run_dir / "evaluation", run_dir, pictures=False)
    except (CxrbenchError, OSError) as e:  # a run folder it cannot read back, a full disk
        if ctx.display is not None:
            ctx.display.warn(f"the evaluation beside the record was not written: {e}")
        return
    ece = result["calibration"]["pooled"]["ece"]
    shown = "n/a" if ece is None else f"{ece:.4f}"
    ctx.info(
        f"evaluation: pooled ECE {shown}; operating points, calibration and subgroups in "
        f"{run_dir / 'evaluation'} (`cxrbench evaluate RUN` adds the pictures)"
    )


def _fit(ctx: RunContext, images):
    """fit folds, with deterministic mode's refusal of an operation turned into a clear error."""
    from cxrbench.errors import ConfigError
    from cxrbench.run.determinism import nondeterministic_op
    from cxrbench.run.fit import fit_folds

    try:
        return fit_folds(ctx, images)
    except RuntimeError as e:
        op = nondeterministic_op(e) if ctx.opts.deterministic else None
        if op is None:
            raise
        raise ConfigError(
            f"--deterministic: model {ctx.opts.model} uses an operation that has no deterministic "
            f"implementation on {ctx.device} ({op}); run it without --deterministic"
        ) from e


def _interrupted(ctx: RunContext) -> RunInterrupted:
    from cxrbench.engine.checkpoint import checkpoint_epoch
    from cxrbench.run.progress import interrupted_message

    ck = ctx.dir / f"{ctx.state.training}.pt" if ctx.state.training else None
    epoch = checkpoint_epoch(ck) if ck is not None and ck.exists() else None
    return RunInterrupted(interrupted_message(ctx, ck if epoch is not None else None, epoch))


def run_or_reuse(opts: RunOptions, display=None) -> Path | None:
    """The run's record: reused when the run finished before, else made (a stopped run is resumed)."""
    from dataclasses import replace

    folder = run_dir(opts)
    if (folder / "record.json").exists():
        check_finished(opts)
        if display is not None:
            display.info(f"      {folder} is finished already")
        return folder / "record.json"
    return run(replace(opts, resume=folder.exists()), display)


def asked_settings(opts: RunOptions) -> dict:
    """The settings a run with `opts` would record in its run.json (cxrbench.run.folder.config), found without
    binding the run: protocol and its hash, lr, pretrained, weights, the cache's fingerprint, the model source,
    the training seed."""
    from cxrbench.cache.store import open_cache
    from cxrbench.models import get_spec
    from cxrbench.models.plugins import load_plugins
    from cxrbench.protocols import get_protocol
    from cxrbench.run.options import train_seed

    p = get_protocol(opts.protocol)
    load_plugins(opts.plugins)
    return {
        "model": opts.model,
        "protocol": p.key,
        "protocol_hash": p.content_hash,
        "lr": p.lr(opts.lr),
        "pretrained": bool(p.pretrained if opts.pretrained is None else opts.pretrained),
        "weights": opts.weights,
        "cache_fingerprint": open_cache(opts.cache).fingerprint,
        "model_source": get_spec(opts.model).source,
        "seed": train_seed(opts, p),
    }


def check_finished(opts: RunOptions) -> None:
    """A finished run in the folder `opts` names is reused only when it was made with what is asked: its
    run.json and its record must agree with `asked_settings` (cache fingerprint, protocol hash, model source,
    weights, lr, pretrained, training seed); else a ConfigError names the folder and what differs."""
    from cxrbench.errors import ConfigError, CxrbenchError
    from cxrbench.files import read_json
    from cxrbench.results.record import read_record

    folder = run_dir(opts)
    want = asked_settings(opts)
    try:
        had = read_json(folder / "run.json", 1 << 20, "run.json")
        rec = read_record(folder, check_predictions=False)
    except CxrbenchError as e:
        raise ConfigError(f"{folder} holds a finished run that cannot be checked ({e}); give another --out") from None
    if not isinstance(had, dict):
        raise ConfigError(f"{folder}/run.json is not a JSON object; give another --out")
    recorded = {
        "protocol_hash": rec["protocol"]["hash"],
        "cache_fingerprint": rec["data"]["cache_fingerprint"],
        "model_source": rec["model"]["source"],
        "lr": rec["lr"],
        "seed": rec["seeds"].get("train"),
    }
    had.setdefault("seed", recorded["seed"])  # a run.json written before --seed: the record says
    diff = [k for k in want if had.get(k) != want[k] or (k in recorded and recorded[k] != want[k])]
    if diff:
        said = "; ".join(f"{k}: finished with {had.get(k)!r}, asked {want[k]!r}" for k in diff[:3])
        raise ConfigError(
            f"{folder} holds a finished run made with other settings ({said}); it is not reused - give another "
            "--out, or remove that folder to run it again"
        )
